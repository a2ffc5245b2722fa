# Shared helpers for the project's shell tests (host and guest). Source it.
# shellcheck shell=bash  # host tests are bash; in the guest /bin/sh is bash too
#
# Result protocol, counted by `make check`: every check prints exactly one line
#   PASS <name>            or            FAIL <name>: <why>
# on stdout, and the script exits non-zero if any check failed.

rthin_failed=0

pass() { printf 'PASS %s\n' "$1"; }
fail() {
  printf 'FAIL %s: %s\n' "$1" "${2:-failed}"
  rthin_failed=1
}

# check NAME CMD... : PASS if CMD succeeds, else FAIL with its output's last line.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 1)"; fi
}

# check_fails NAME CMD... : PASS if CMD fails.
check_fails() {
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$name" "'$*' succeeded but should have failed"; else pass "$name"; fi
}

# Exit status for the end of a test script.
finish() { exit "$rthin_failed"; }
