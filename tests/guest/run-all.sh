#!/bin/bash
# Runs inside the guest (qemu/run -- /rthin/tests/guest/run-all.sh [RESULTS_DIR]): every
# tests/guest/[0-9]*.sh in order, then the data-path suites tests/guest/datapath/[0-9]*.sh (on
# our targets: POOL_TARGET/THIN_TARGET default to rthin-pool/rthin), then the rthinctl suites
# tests/guest/rthinctl/[0-9]*.sh (each on both target families), then the module's KUnit
# suites. Prints the PASS/FAIL/SKIP lines
# of each test script; a script that reports no result, or fails without a FAIL line, gets a FAIL
# line here. KUnit's KTAP documents go to RESULTS_DIR/kunit/<suite>.ktap for the host to parse
# with the kernel's kunit.py and to check against tests/expected-suites.txt; a document that
# cannot be written there is a failure. Exits non-zero if anything failed.
results=${1:-/tmp/rthin-results}
here=$(dirname "$0")
status=0
out=/tmp/run-all.out

if ! mkdir -p "$results/kunit" || ! : >"$results/kunit/.written"; then
  echo "FAIL guest-results: cannot write to $results/kunit"
  status=1
fi
rm -f "$results/kunit/.written"

for t in "$here"/[0-9]*.sh "$here"/datapath/[0-9]*.sh "$here"/rthinctl/[0-9]*.sh; do
  [ -e "$t" ] || continue
  name=${t#"$here"/}
  echo "=== $name"
  sh "$t" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  if ! grep -qE '^(PASS|FAIL|SKIP) ' "$out"; then
    echo "FAIL guest:$name: reported no results (exit status $rc)"
    status=1
  elif [ "$rc" != 0 ]; then
    grep -q '^FAIL ' "$out" || echo "FAIL guest:$name: exit status $rc without a FAIL line"
    status=1
  fi
  # Leave the next test a clean slate even when this one failed half-way.
  dmsetup remove_all >/dev/null 2>&1
  losetup -D >/dev/null 2>&1
  rmmod dm_rthin >/dev/null 2>&1
done

# KUnit: the module's suites run when it is loaded (KUNIT=y); debugfs keeps each suite's KTAP.
echo "=== kunit"
rmmod dm_rthin >/dev/null 2>&1
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
# qemu/run boots with KUnit filtered out of module loads (the other tests load the module many
# times); let this load run every suite.
glob=/sys/module/kunit/parameters/filter_glob
[ ! -w $glob ] || printf '*' >$glob  # (no newline: the parameter keeps it)
if modprobe dm-rthin; then
  for d in /sys/kernel/debug/kunit/*/; do
    [ -f "$d/results" ] || continue
    suite=$(basename "$d")
    if ! cp "$d/results" "$results/kunit/$suite.ktap"; then
      echo "FAIL kunit:$suite: cannot write its results to $results/kunit"
      status=1
    fi
  done
  rmmod dm_rthin || { echo "FAIL kunit: rmmod dm_rthin failed after the KUnit run"; status=1; }
else
  echo "FAIL kunit: modprobe dm-rthin failed"
  status=1
fi
exit $status
