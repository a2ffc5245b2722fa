#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Host test: a pool's state survives guest boots on the same virtio disks. Three boots of
# tests/guest/datapath/persistence-phase.sh on disks meta (16 MiB) and data (64 MiB) kept in one
# state directory:
#   boot 1: format, fill (ext4 thin, raw thin + snapshot, transaction id), record, then crash
#           the guest with the pool active (sysrq b): qemu/run must end with 243 (no status)
#   boot 2: reopen after the crash, exact state, change things, clean teardown, thin_check
#   boot 3: reopen after the clean teardown, exact state, thin_check
# Run on the host from the repository: tests/guest/datapath/host-persistence.sh
# Targets: POOL_TARGET/THIN_TARGET (default rthin-pool/rthin) for every boot;
# BOOT2_POOL_TARGET/BOOT2_THIN_TARGET (default: the same) for boots 2 and 3, e.g. C writes and
# ours reads: POOL_TARGET=thin-pool THIN_TARGET=thin BOOT2_POOL_TARGET=rthin-pool BOOT2_THIN_TARGET=rthin
# Self-check against the C targets: POOL_TARGET=thin-pool THIN_TARGET=thin tests/guest/datapath/host-persistence.sh
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
# shellcheck source=../../lib.sh
. "$top/tests/lib.sh"

p1=${POOL_TARGET:-rthin-pool} t1=${THIN_TARGET:-rthin}
p2=${BOOT2_POOL_TARGET:-$p1} t2=${BOOT2_THIN_TARGET:-$t1}
state=$(mktemp -d "${TMPDIR:-/tmp}/rthin-persist.XXXXXX")
trap 'rm -rf "$state"' EXIT
mkdir "$state/out"

# boot PHASE POOL THIN: one guest boot; its console goes to our stdout (with the guest's
# PASS/FAIL lines); returns qemu/run's status.
boot() {
  "$top/qemu/run" --timeout 300 --state-dir "$state" --disk meta=16M --disk data=64M \
    --share "$state/out:/out" --env "POOL_TARGET=$2" --env "THIN_TARGET=$3" \
    -- sh /rthin/tests/guest/datapath/persistence-phase.sh "$1" /out
}

boot 1 "$p1" "$t1"
rc=$?
if [ $rc = 243 ] && [ -f "$state/out/phase1.done" ] && [ -s "$state/out/state1" ]; then
  pass "persistence-boot1-filled-and-crashed"
else
  fail "persistence-boot1-filled-and-crashed" "qemu/run status $rc (243 expected), phase1.done $([ -f "$state/out/phase1.done" ] && echo present || echo missing)"
  finish
fi
boot 2 "$p2" "$t2"
rc=$?
[ $rc = 0 ] && pass "persistence-boot2-after-crash" || fail "persistence-boot2-after-crash" "qemu/run status $rc"
[ -s "$state/out/state2" ] || { fail "persistence-boot3-after-teardown" "boot 2 recorded no state"; finish; }
boot 3 "$p2" "$t2"
rc=$?
[ $rc = 0 ] && pass "persistence-boot3-after-teardown" || fail "persistence-boot3-after-teardown" "qemu/run status $rc"
finish
