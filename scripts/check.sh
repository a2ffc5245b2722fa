#!/usr/bin/env bash
# `make check`: every lint and test of the project, host and guest.
#
#   scripts/check.sh [--guest-only]
#
# Each check contributes one or more results to $results (one "PASS name", "FAIL name: why" or
# "SKIP name: why" per line); the last two lines printed are "N skipped" and "N passed, N failed"
# (the README's contract: the last line is exactly that), and the exit
# status is non-zero if anything failed. Skips (an #[ignore]d cargo test, a KUnit case that
# skipped itself) do not fail the run but are listed by name. A step that cannot even run (build
# error, crash) or that reports no result at all is itself counted as a failure, and so is a
# KUnit suite or cargo test binary of tests/expected-suites.txt that does not report, so no
# failure can hide behind a missing count. A results file that cannot be written ends the run.
set -uo pipefail
. "$(dirname "$0")/env.sh"
cd "$RTHIN_TOP" || exit 1

guest_only=0
[ "${1:-}" = --guest-only ] && guest_only=1
variant=${RTHIN_KERNEL_VARIANT:-release}

work=$(mktemp -d "${TMPDIR:-/tmp}/rthin-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$work/results
: >"$results"
logdir=$RTHIN_TOP/.check-logs
rm -rf "$logdir" && mkdir -p "$logdir"

# A result that cannot be stored would vanish from the count: stop instead.
results_lost() {
  echo "FAIL check: cannot write the results file $results (disk full?); the run is void" >&2
  echo "0 skipped"
  echo "0 passed, 1 failed"
  exit 1
}
record() { printf '%s\n' "$@" >>"$results" || results_lost; }
# record_file FILE: append FILE's result lines.
record_file() { cat "$1" >>"$results" || results_lost; }

# Elapsed time of each step, printed when the next one starts and listed at the end.
step_name='' step_start=$SECONDS durations=()
begin() {
  if [ -n "$step_name" ]; then
    rthin_log "  $step_name took $((SECONDS - step_start)) s"
    durations+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step_name")")
  fi
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

# collect NAME CMD...: run CMD, which prints PASS/FAIL/SKIP lines; count them. A non-zero exit
# with no FAIL line, and a run with no result line at all, are failures.
collect() {
  local name=$1 log=$logdir/$1.log rc
  shift
  begin "$name"
  "$@" 2>&1 | tee "$log" | grep -aE '^(PASS|FAIL|SKIP) ' >"$work/lines"
  rc=${PIPESTATUS[0]}
  record_file "$work/lines"
  grep '^FAIL ' "$work/lines" >&2
  if [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$work/lines"; then
    record "FAIL $name: exited $rc without reporting a failed check; see $log"
    tail -n 30 "$log" >&2
  elif ! [ -s "$work/lines" ]; then
    record "FAIL $name: reported no results; see $log"
  fi
}

# cargo_tests NAME CMD...: run a cargo test command; count its test cases, per test binary,
# against tests/expected-suites.txt (scripts/cargo-results.py).
cargo_tests() {
  local name=$1 log=$logdir/$1.log rc
  shift
  begin "$name"
  "$@" >"$log" 2>&1
  rc=$?
  python3 scripts/cargo-results.py "$log" tests/expected-suites.txt >"$work/lines"
  record_file "$work/lines"
  grep '^FAIL ' "$work/lines" >&2
  if [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$work/lines"; then
    record "FAIL $name: exited $rc (build error?); see $log"
    tail -n 30 "$log" >&2
  elif ! grep -q '^PASS ' "$work/lines"; then
    record "FAIL $name: no test passed; see $log"
  fi
}

summary() {
  local passed failed skipped
  begin ''
  printf '%s\n' "${durations[@]}" "$(printf '%5d s  total' "$SECONDS")" >&2
  passed=$(grep -c '^PASS ' "$results")
  failed=$(grep -c '^FAIL ' "$results")
  skipped=$(grep -c '^SKIP ' "$results")
  cp "$results" "$logdir/results" || results_lost
  if [ "$skipped" != 0 ]; then
    echo "Skipped checks:"
    grep '^SKIP ' "$results"
  fi
  if [ "$failed" != 0 ]; then
    echo "Failed checks:"
    grep '^FAIL ' "$results"
  fi
  # The README's contract: the last line is exactly "N passed, N failed".
  echo "$skipped skipped"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}

step setup scripts/setup.sh || true
step toolchain scripts/toolchain.sh
# KDIR=/path/to/built/kernel uses a kernel the user built (configured with qemu/kernel.config for
# the guest tests); otherwise the cached guest kernel of the variant, built if missing.
begin kernel
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
  step shellcheck scripts/shellcheck.sh
  # One build of the module, by clippy-driver (a full rustc: its dm-rthin.ko is the one the guest
  # tests load); any warning or error fails it, modpost's included.
  step module-build bash -c 'set -o pipefail; scripts/build-module.sh clean && scripts/build-module.sh CLIPPY=1 modules 2>&1 |
    tee /dev/stderr | { ! grep -iE "^(warning|error)"; }'
  # Kernel stacks are 16 KiB: the largest frames are printed in the log, any above 1 KiB fails.
  step module-frame-sizes scripts/frame-sizes.sh dm-rthin.ko 1024
  step module-rustfmt scripts/rustfmt-module.sh --check
  step userspace-fmt bash -c 'cd userspace && cargo fmt --all --check && cd fuzz && cargo fmt --all --check'
  step userspace-clippy bash -c 'cd userspace && cargo clippy --workspace --all-targets --locked -- -D warnings'
  step fuzz-clippy bash -c 'cd userspace/fuzz && cargo clippy --all-targets --locked -- -D warnings'
else
  step module-build bash -c 'scripts/build-module.sh clean && scripts/build-module.sh modules'
fi

step userspace-build bash -c 'cd userspace && cargo build --release --locked --workspace --bins'

if [ $guest_only = 0 ]; then
  # The test profile (userspace/Cargo.toml: optimised, debug assertions and overflow checks on);
  # --release would bypass it. --no-fail-fast: every binary reports, whatever fails first.
  cargo_tests userspace-tests bash -c 'cd userspace && cargo test --workspace --locked --no-fail-fast'
  step fuzz-metadata scripts/fuzz.sh "${RTHIN_FUZZ_SECONDS:-60}"
  # `make bench`'s report generator on synthetic results (the benchmark itself is not run).
  collect bench-report python3 tests/host/bench-report-test.py
  for t in tests/host/*.sh; do
    [ -e "$t" ] && collect "host-$(basename "$t" .sh)" bash "$t"
  done
fi

# Guest tests: one boot runs every tests/guest/[0-9]*.sh and leaves the module's KUnit KTAP in
# a shared directory; the kernel's kunit.py parses it here on the host.
mkdir -p "$work/guest"
# The release kernel needs about 17 minutes here with the rthinctl group at host load 7 (1052 s
# in its first run), the debug kernel (lockdep and the checks in qemu/kernel-debug.config) about
# three times as long under TCG.
guest_timeout=1800
[ "$variant" = release ] || guest_timeout=5400
collect guest-tests qemu/run --kernel-tree "$kout" --timeout "$guest_timeout" --share "$work/guest:/results" \
  -- /rthin/tests/guest/run-all.sh /results
collect kunit python3 scripts/kunit-results.py "$(scripts/fetch-kernel-source.sh)" "$work/guest/kunit" \
  tests/expected-suites.txt

summary
