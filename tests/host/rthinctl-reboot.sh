#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# Host test: rthinctl pools on files survive a reboot. Two guest boots on one virtio disk
# (tests/guest/rthinctl/reboot-phase.sh): boot 1 makes a pool of each target family on files in
# an ext4 on the disk, boot 2 brings them back with `rthinctl pool activate NAME --dir DIR`.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
. "$top/tests/lib.sh"

state=$(mktemp -d "${TMPDIR:-/tmp}/rthinctl-reboot.XXXXXX")
trap 'rm -rf "$state"' EXIT

for phase in 1 2; do
  "$top/qemu/run" --timeout 300 --state-dir "$state" --disk store=1200M \
    -- bash /rthin/tests/guest/rthinctl/reboot-phase.sh "$phase"
  rc=$?
  [ $rc = 0 ] && pass "rthinctl-reboot-boot$phase" || fail "rthinctl-reboot-boot$phase" "qemu/run status $rc"
done
finish
