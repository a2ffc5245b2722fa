#!/bin/sh
# Runs inside the guest (qemu/run -- /rthin/tests/guest/run-all.sh [RESULTS_DIR]): every
# tests/guest/[0-9]*.sh in order, then the module's KUnit suites. Prints the PASS/FAIL lines of
# each test script; KUnit's KTAP documents go to RESULTS_DIR/kunit/ for the host to parse with the
# kernel's kunit.py. Exits non-zero if any script failed.
results=${1:-/tmp/rthin-results}
here=$(dirname "$0")
mkdir -p "$results/kunit"
status=0

for t in "$here"/[0-9]*.sh; do
  [ -e "$t" ] || continue
  echo "=== $(basename "$t")"
  sh "$t" || status=1
  # Leave the next test a clean slate even when this one failed half-way.
  dmsetup remove_all >/dev/null 2>&1
  rmmod dm_rthin >/dev/null 2>&1
done

# KUnit: the module's suites run when it is loaded (KUNIT=y); debugfs keeps each suite's KTAP.
echo "=== kunit"
rmmod dm_rthin >/dev/null 2>&1
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
if modprobe dm-rthin; then
  found=0
  for d in /sys/kernel/debug/kunit/*/; do
    [ -f "$d/results" ] || continue
    cp "$d/results" "$results/kunit/$(basename "$d").ktap"
    found=1
  done
  [ $found = 1 ] || { echo "FAIL kunit: no KUnit suite results in debugfs"; status=1; }
  rmmod dm_rthin || { echo "FAIL kunit: rmmod dm_rthin failed after the KUnit run"; status=1; }
else
  echo "FAIL kunit: modprobe dm-rthin failed"
  status=1
fi
exit $status
