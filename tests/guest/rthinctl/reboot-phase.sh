#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# One boot of tests/host/rthinctl-reboot.sh (not run by run-all.sh: it needs the disk "store"
# and a second boot). Phase 1 makes a pool of each target family on files in an ext4 on the
# disk; phase 2, after the reboot, brings them back with `rthinctl pool activate`.
#   reboot-phase.sh 1|2
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

phase=$1
store=/mnt/store
mkdir -p "$store" "$RC_WORK"
[ "$phase" = 1 ] && mkfs.ext4 -q /dev/rthin/store
mount /dev/rthin/store "$store" || { fail "reboot-phase$phase-mount" "cannot mount the disk"; finish; }

sums() { md5sum </dev/mapper/"v-$1"; md5sum </dev/mapper/"s-$1"; }

for t in $TARGETS; do
  if [ "$phase" = 1 ]; then
    rthinctl pool create "p-$t" --data-size 512M --dir "$store/$t" --target "$t" >/dev/null &&
      rthinctl thin create "v-$t" --size 64M --pool "p-$t" >/dev/null &&
      dd if=/dev/urandom of=/dev/mapper/"v-$t" bs=64K count=32 oflag=direct status=none &&
      rthinctl thin snapshot "s-$t" --from "v-$t" >/dev/null &&
      dd if=/dev/urandom of=/dev/mapper/"v-$t" bs=64K count=4 oflag=direct status=none &&
      rthinctl thin create "off-$t" --size 16M --pool "p-$t" >/dev/null &&
      rthinctl thin deactivate "off-$t" >/dev/null &&
      sums "$t" >"$store/sums-$t" && pass "reboot-before-$t" || fail "reboot-before-$t" "set-up failed"
    # The C pool is shut down cleanly, ours is left active, as a crash would leave it.
    [ "$t" = thin ] && rthinctl pool deactivate "p-$t" >/dev/null
  else
    # The registry did not survive (it lives in the guest's RAM): the pool is unknown until
    # its directory is named; missing files are named as such.
    expect_status "reboot-unknown-pool-$t" 7 rthinctl pool activate "p-$t"
    mv "$store/$t/p-$t-data.img" "$store/$t/moved.img"
    expect_status "reboot-files-missing-$t" 9 rthinctl pool activate "p-$t" --dir "$store/$t"
    mv "$store/$t/moved.img" "$store/$t/p-$t-data.img"
    [ "$(dev_count)" = 0 ] && [ "$(loop_count)" = 0 ] &&
      pass "reboot-failed-activation-left-nothing-$t" ||
      fail "reboot-failed-activation-left-nothing-$t" "$(dmsetup ls | tr '\n' ' ') $(losetup -a | tr '\n' ' ')"
    expect_status "reboot-activate-$t" 0 rthinctl pool activate "p-$t" --dir "$store/$t"
    [ "$(sums "$t")" = "$(cat "$store/sums-$t")" ] && [ ! -e /dev/mapper/"off-$t" ] &&
      [ "$(vol_field "off-$t" active)" = false ] && [ "$(vol_field "s-$t" origin)" = "v-$t" ] &&
      [ "$(rthinctl pool status "p-$t" --json | json transaction_id)" = 3 ] &&
      pass "reboot-same-volumes-$t" || fail "reboot-same-volumes-$t" "$(rthinctl thin list | tr '\n' '|')"
    expect_status "reboot-usable-$t" 0 rthinctl thin create "new-$t" --size 16M --pool "p-$t"
    rthinctl pool deactivate "p-$t" >/dev/null
    thin_check -q "$store/$t/p-$t-metadata.img" && pass "reboot-thin-check-$t" ||
      fail "reboot-thin-check-$t" "thin_check failed"
  fi
done
[ "$phase" = 2 ] && umount "$store"
finish
