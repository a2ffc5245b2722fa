#!/usr/bin/env bash
# `make check`: every lint and test of the project, host and guest.
#
#   scripts/check.sh [--guest-only]
#
# Each check contributes one or more results to $results (one "PASS name" / "FAIL name: why" per
# line); the last line printed is "N passed, N failed" and the exit status is non-zero if anything
# failed. A step that cannot even run (build error, crash) is itself counted as a failure, so no
# failure can hide behind a missing count.
set -uo pipefail
. "$(dirname "$0")/env.sh"
cd "$RTHIN_TOP"

guest_only=0
[ "${1:-}" = --guest-only ] && guest_only=1
variant=${RTHIN_KERNEL_VARIANT:-release}

work=$(mktemp -d "${TMPDIR:-/tmp}/rthin-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$work/results
: >"$results"
logdir=$RTHIN_TOP/.check-logs
rm -rf "$logdir" && mkdir -p "$logdir"

record() { printf '%s\n' "$@" >>"$results"; }

# Elapsed time of each step, printed when the next one starts and at the end.
step_name='' step_start=$SECONDS
begin() {
  [ -z "$step_name" ] || rthin_log "  $step_name took $((SECONDS - step_start)) s"
  step_name=$1 step_start=$SECONDS
  [ -z "$1" ] || rthin_log "$1"
}

# step NAME CMD...: run CMD with its output in a log; one result.
step() {
  local name=$1 log=$logdir/$1.log
  shift
  begin "$name"
  if "$@" >"$log" 2>&1; then
    record "PASS $name"
  else
    record "FAIL $name: see $log"
    tail -n 30 "$log" >&2
  fi
}

# collect NAME CMD...: run CMD, which prints PASS/FAIL lines; count them. A non-zero exit with no
# FAIL line is itself a failure.
collect() {
  local name=$1 log=$logdir/$1.log rc
  shift
  begin "$name"
  "$@" 2>&1 | tee "$log" | grep -E '^(PASS|FAIL) ' >"$work/lines"
  rc=${PIPESTATUS[0]}
  cat "$work/lines" >>"$results"
  grep '^FAIL ' "$work/lines" >&2
  if [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$work/lines"; then
    record "FAIL $name: exited $rc without reporting a failed check; see $log"
    tail -n 30 "$log" >&2
  fi
  if ! [ -s "$work/lines" ] && [ "$rc" = 0 ]; then
    record "FAIL $name: reported no results; see $log"
  fi
}

# cargo_tests NAME CMD...: run a cargo test command; count its test cases.
cargo_tests() {
  local name=$1 log=$logdir/$1.log rc
  shift
  begin "$name"
  "$@" >"$log" 2>&1
  rc=$?
  # libtest prints "test <path> ... ok|FAILED" per case.
  sed -n -e 's/^test \(.*\) \.\.\. ok$/PASS cargo:\1/p' -e 's/^test \(.*\) \.\.\. FAILED$/FAIL cargo:\1: failed/p' \
    "$log" >>"$results"
  if [ "$rc" != 0 ] && ! grep -q ' \.\.\. FAILED$' "$log"; then
    record "FAIL $name: exited $rc (build error?); see $log"
    tail -n 30 "$log" >&2
  fi
}

summary() {
  local passed failed
  begin ''
  rthin_log "total $SECONDS s"
  passed=$(grep -c '^PASS ' "$results")
  failed=$(grep -c '^FAIL ' "$results")
  cp "$results" "$logdir/results"
  if [ "$failed" != 0 ]; then
    echo "Failed checks:"
    grep '^FAIL ' "$results"
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}

step setup scripts/setup.sh || true
# KDIR=/path/to/built/kernel uses a kernel the user built (configured with qemu/kernel.config for
# the guest tests); otherwise the cached guest kernel of the variant, built if missing.
if [ -n "${KDIR:-}" ]; then
  kout=$(cd "$KDIR" && pwd) || { record "FAIL kernel: KDIR=$KDIR is not a directory"; summary; exit 1; }
elif ! kout=$(scripts/build-kernel.sh "$variant" 2>"$logdir/kernel.log"); then
  record "FAIL kernel-$variant: build failed; see $logdir/kernel.log"
  tail -n 30 "$logdir/kernel.log" >&2
  summary
  exit 1
fi
export KDIR=$kout
rthin_log "kernel: $kout"

if [ $guest_only = 0 ]; then
  # Lints. The clippy build of the module is a full build; it is followed by a plain one.
  step module-clippy bash -c 'set -o pipefail; scripts/build-module.sh clean && scripts/build-module.sh CLIPPY=1 modules 2>&1 |
    tee /dev/stderr | { ! grep -iE "^(warning|error)"; }'
  step module-rustfmt scripts/rustfmt-module.sh --check
  step userspace-fmt bash -c 'cd userspace && cargo fmt --all --check'
  step userspace-clippy bash -c 'cd userspace && cargo clippy --workspace --all-targets --locked -- -D warnings'
fi

step module-build bash -c 'scripts/build-module.sh clean && scripts/build-module.sh modules'
step userspace-build bash -c 'cd userspace && cargo build --release --locked --workspace --bins'

if [ $guest_only = 0 ]; then
  cargo_tests userspace-tests bash -c 'cd userspace && cargo test --workspace --locked --release'
  step fuzz-metadata scripts/fuzz.sh "${RTHIN_FUZZ_SECONDS:-60}"
  for t in tests/host/*.sh; do
    [ -e "$t" ] && collect "host-$(basename "$t" .sh)" bash "$t"
  done
fi

# Guest tests: one boot runs every tests/guest/[0-9]*.sh and leaves the module's KUnit KTAP in
# a shared directory; the kernel's kunit.py parses it here on the host.
mkdir -p "$work/guest"
collect guest-tests qemu/run --kernel-tree "$kout" --timeout 1200 --share "$work/guest:/results" \
  -- /rthin/tests/guest/run-all.sh /results
collect kunit python3 scripts/kunit-results.py "$(scripts/fetch-kernel-source.sh)" "$work"/guest/kunit/*.ktap

summary
