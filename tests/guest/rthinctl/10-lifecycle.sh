#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# rthinctl's pool and volume commands on both target families: sparse files, loop devices,
# tables, snapshots, listing, extension, errors and exit codes, dry runs, removal.
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

lifecycle() {
  local t=$1 dir=$RC_WORK/files used before after sum1 sum2
  rc_reset
  expect_status "pool-create-$t" 0 rthinctl pool create p0 --data-size 1G --dir "$dir" --target "$t"
  # Sparse files as the seed makes them: apparent size as asked, (almost) nothing allocated.
  [ "$(stat -c %s "$dir/p0-data.img")" = 1073741824 ] &&
    [ "$(stat -c %s "$dir/p0-metadata.img")" = 2097152 ] &&
    [ "$(du -k "$dir/p0-data.img" | cut -f1)" -lt 1024 ] &&
    pass "pool-files-sparse-$t" || fail "pool-files-sparse-$t" "$(ls -ls "$dir")"
  [ "$(dmsetup table p0 | cut -d' ' -f3)" = "$t-pool" ] && [ -b /dev/mapper/p0 ] &&
    pass "pool-table-$t" || fail "pool-table-$t" "$(dmsetup table p0)"
  [ "$(rthinctl pool status p0 --json | json mode)" = rw ] &&
    [ "$(rthinctl pool status p0 --json | json data_total_blocks)" = 16384 ] &&
    rthinctl pool status p0 | grep -q 'transaction: 0' &&
    pass "pool-status-$t" || fail "pool-status-$t" "$(rthinctl pool status p0 --json | tr '\n' ' ')"
  rthinctl pool list | grep -q "^p0 .*$t-pool *yes" && pass "pool-list-$t" ||
    fail "pool-list-$t" "$(rthinctl pool list)"

  expect_status "thin-create-$t" 0 rthinctl thin create v0 --size 128M
  [ -b /dev/mapper/v0 ] && [ "$(blockdev --getsize64 /dev/mapper/v0)" = 134217728 ] &&
    [ "$(dmsetup table v0 | cut -d' ' -f3)" = "$t" ] &&
    pass "thin-device-$t" || fail "thin-device-$t" "$(dmsetup table v0)"
  dd if=/dev/urandom of="$RC_WORK/a" bs=64K count=16 status=none
  dd if="$RC_WORK/a" of=/dev/mapper/v0 bs=64K oflag=direct status=none
  expect_status "thin-snapshot-$t" 0 rthinctl thin snapshot s0 --from v0
  # The origin was resumed; writing it now must not change the snapshot.
  dmsetup info v0 | grep -q '^State: *ACTIVE' && pass "snapshot-origin-resumed-$t" ||
    fail "snapshot-origin-resumed-$t" "$(dmsetup info v0 | grep State)"
  dd if=/dev/zero of=/dev/mapper/v0 bs=64K count=16 oflag=direct status=none
  sum1=$(md5sum <"$RC_WORK/a")
  sum2=$(dd if=/dev/mapper/s0 bs=64K count=16 iflag=direct status=none | md5sum)
  [ "$sum1" = "$sum2" ] && pass "snapshot-copy-on-write-$t" || fail "snapshot-copy-on-write-$t" "snapshot changed"
  [ "$(vol_field s0 origin)" = v0 ] && [ "$(vol_field s0 mapped_blocks)" = 16 ] &&
    [ "$(vol_field v0 mapped_blocks)" = 16 ] && [ "$(vol_field v0 exclusive_blocks)" = 16 ] &&
    [ "$(vol_field s0 shared_blocks)" = 0 ] && [ "$(vol_field s0 highest_mapped_block)" = 15 ] &&
    pass "thin-list-$t" || fail "thin-list-$t" "$(rthinctl thin list | tr '\n' '|')"

  # Errors a person can act on, with their exit codes.
  expect_status "error-name-exists-$t" 6 rthinctl thin create v0 --size 1G
  expect_status "error-pool-exists-$t" 6 rthinctl pool create p0 --data-size 1G --dir "$dir" --target "$t"
  expect_status "error-pool-named-like-volume-$t" 6 rthinctl pool create v0 --data-size 1G --dir "$dir" --target "$t"
  expect_status "error-no-such-volume-$t" 7 rthinctl thin delete nope
  expect_status "error-bad-size-$t" 2 rthinctl thin create v9 --size 12Q
  exec 3</dev/mapper/v0
  expect_status "error-busy-$t" 5 rthinctl thin deactivate v0
  exec 3<&-

  expect_status "thin-deactivate-$t" 0 rthinctl thin deactivate s0
  [ ! -e /dev/mapper/s0 ] && ! dmsetup info s0 >/dev/null 2>&1 && [ "$(vol_field s0 active)" = false ] &&
    pass "thin-deactivated-$t" || fail "thin-deactivated-$t" "s0 still there"
  expect_status "thin-activate-$t" 0 rthinctl thin activate s0
  sum2=$(dd if=/dev/mapper/s0 bs=64K count=16 iflag=direct status=none | md5sum)
  [ "$sum1" = "$sum2" ] && pass "thin-reactivated-data-$t" || fail "thin-reactivated-data-$t" "data differs"

  # --dry-run changes nothing and prints the dmsetup commands.
  before=$(dmsetup ls; rthinctl thin list)
  rthinctl --dry-run thin delete s0 >"$RC_WORK/dry" 2>&1
  after=$(dmsetup ls; rthinctl thin list)
  [ "$before" = "$after" ] && grep -q "^dmsetup remove s0$" "$RC_WORK/dry" &&
    grep -q "^dmsetup message p0 0 'delete 1'$" "$RC_WORK/dry" &&
    grep -q "^dmsetup message p0 0 'set_transaction_id 2 3'$" "$RC_WORK/dry" &&
    pass "dry-run-$t" || fail "dry-run-$t" "$(tr '\n' '|' <"$RC_WORK/dry")"
  rthinctl --explain thin create v1 --size 64M >"$RC_WORK/explain" 2>&1
  grep -q "^# dmsetup message p0 0 'create_thin 2'$" "$RC_WORK/explain" &&
    grep -q "^# dmsetup create v1 --table '0 131072 $t [0-9]*:[0-9]* 2'$" "$RC_WORK/explain" &&
    [ -b /dev/mapper/v1 ] && pass "explain-$t" || fail "explain-$t" "$(tr '\n' '|' <"$RC_WORK/explain")"

  expect_status "thin-delete-$t" 0 rthinctl thin delete v1
  ! dmsetup info v1 >/dev/null 2>&1 && [ -z "$(vol_field v1 id)" ] &&
    [ "$(rthinctl pool status p0 --json | json transaction_id)" = 4 ] &&
    pass "thin-deleted-$t" || fail "thin-deleted-$t" "v1 still known"

  # Growing: files, loop capacity, table; the volumes keep running.
  expect_status "pool-extend-$t" 0 rthinctl pool extend p0 --data-size +1G --metadata-size 4M
  [ "$(rthinctl pool status p0 --json | json data_total_blocks)" = 32768 ] &&
    [ "$(rthinctl pool status p0 --json | json metadata_total_blocks)" = 1024 ] &&
    [ "$(stat -c %s "$dir/p0-data.img")" = 2147483648 ] &&
    dmsetup info v0 | grep -q '^State: *ACTIVE' &&
    pass "pool-extended-$t" || fail "pool-extended-$t" "$(rthinctl pool status p0 --json | tr '\n' ' ')"
  expect_status "error-shrink-$t" 2 rthinctl pool extend p0 --data-size 1G

  # Deactivate and activate: the same volumes, the same data.
  expect_status "pool-deactivate-$t" 0 rthinctl pool deactivate p0
  [ "$(dev_count)" = 0 ] && [ "$(loop_count)" = 0 ] && pass "pool-deactivated-$t" ||
    fail "pool-deactivated-$t" "$(dmsetup ls | tr '\n' ' ') / $(losetup -a | tr '\n' ' ')"
  expect_status "pool-activate-$t" 0 rthinctl pool activate p0
  sum2=$(dd if=/dev/mapper/s0 bs=64K count=16 iflag=direct status=none | md5sum)
  [ "$sum1" = "$sum2" ] && [ -b /dev/mapper/v0 ] && pass "pool-reactivated-$t" ||
    fail "pool-reactivated-$t" "$(dmsetup ls | tr '\n' ' ')"

  # Two rthinctl at once: the lock keeps their transaction brackets apart.
  rthinctl thin create cc1 --size 16M --pool p0 >/dev/null 2>&1 &
  rthinctl thin create cc2 --size 16M --pool p0 >/dev/null 2>&1
  local rc2=$? rc1
  wait $!
  rc1=$?
  [ $rc1 = 0 ] && [ $rc2 = 0 ] && [ "$(vol_field cc1 id)" != "$(vol_field cc2 id)" ] &&
    [ -b /dev/mapper/cc1 ] && [ -b /dev/mapper/cc2 ] &&
    [ "$(rthinctl pool status p0 --json | json transaction_id)" = 6 ] &&
    pass "concurrent-creates-$t" || fail "concurrent-creates-$t" "exit $rc1/$rc2; $(rthinctl thin list | tr '\n' '|')"

  # Out of data space: a full pool is named as such.
  expect_status "pool-create-small-$t" 0 rthinctl pool create small --data-size 1M --dir "$dir" \
    --target "$t" --error-if-no-space
  rthinctl thin create fill --size 4M --pool small >/dev/null
  dd if=/dev/zero of=/dev/mapper/fill bs=64K count=64 oflag=direct status=none 2>/dev/null
  used=$(rthinctl pool status small --json | json data_used_blocks)
  [ "$used" = 16 ] && expect_status "error-pool-full-$t" 8 rthinctl thin create more --size 1M --pool small ||
    fail "error-pool-full-$t" "pool small used $used of 16 blocks"

  expect_status "pool-remove-$t" 0 rthinctl pool remove p0
  expect_status "pool-remove-small-$t" 0 rthinctl pool remove small
  [ "$(dev_count)" = 0 ] && [ "$(loop_count)" = 0 ] && [ ! -e "$dir/p0-data.img" ] &&
    [ -z "$(rthinctl pool list | tail -n +2)" ] && pass "pool-removed-$t" ||
    fail "pool-removed-$t" "$(dmsetup ls | tr '\n' ' ') / $(losetup -a | tr '\n' ' ') / $(ls "$dir")"

  # --keep-files: the pool comes back from its directory.
  rthinctl pool create p1 --data-size 256M --dir "$dir" --target "$t" >/dev/null &&
    rthinctl thin create k0 --size 16M >/dev/null &&
    echo kept | dd of=/dev/mapper/k0 conv=fsync status=none &&
    expect_status "pool-remove-keep-files-$t" 0 rthinctl pool remove p1 --keep-files
  expect_status "pool-activate-dir-$t" 0 rthinctl pool activate p1 --dir "$dir"
  [ "$(head -c 4 /dev/mapper/k0)" = kept ] && pass "pool-kept-data-$t" || fail "pool-kept-data-$t" "data lost"
  rthinctl pool remove p1 >/dev/null
}

# A pool on block devices the user attached (here loop devices over files of our own): rthinctl
# zeroes the first metadata block, loads the tables and leaves the devices attached on removal.
blockdev_pool() {
  local t=$1 md dd sum
  rc_reset
  truncate -s 64M "$RC_WORK/bd-data" && truncate -s 4M "$RC_WORK/bd-meta" &&
    dd=$(losetup -f --show "$RC_WORK/bd-data") && md=$(losetup -f --show "$RC_WORK/bd-meta") ||
    { fail "blockdev-setup-$t" "losetup"; return; }
  # Leftover metadata on the device must not be mistaken for a pool.
  head -c 4096 /dev/urandom | dd of="$md" conv=fsync status=none
  expect_status "blockdev-pool-create-$t" 0 rthinctl pool create pb --data-size 64M \
    --data-dev "$dd" --metadata-dev "$md" --target "$t"
  [ "$(dmsetup table pb | cut -d' ' -f3-5)" = "$t-pool $(cat "/sys/block/${md#/dev/}/dev") $(cat "/sys/block/${dd#/dev/}/dev")" ] &&
    pass "blockdev-pool-table-$t" || fail "blockdev-pool-table-$t" "$(dmsetup table pb)"
  expect_status "blockdev-thin-create-$t" 0 rthinctl thin create bv --size 16M --pool pb
  dd if=/dev/urandom of="$RC_WORK/b" bs=64K count=4 status=none
  dd if="$RC_WORK/b" of=/dev/mapper/bv bs=64K seek=2 oflag=direct status=none
  sum=$(dd if=/dev/mapper/bv bs=64K skip=2 count=4 iflag=direct status=none | md5sum)
  [ "$sum" = "$(md5sum <"$RC_WORK/b")" ] && [ "$(vol_field bv mapped_blocks)" = 4 ] &&
    pass "blockdev-thin-io-$t" || fail "blockdev-thin-io-$t" "$(rthinctl thin list | tr '\n' '|')"
  expect_status "blockdev-snapshot-$t" 0 rthinctl thin snapshot bs --from bv
  expect_status "blockdev-pool-remove-$t" 0 rthinctl pool remove pb
  [ "$(dev_count)" = 0 ] && losetup "$dd" >/dev/null 2>&1 && losetup "$md" >/dev/null 2>&1 &&
    pass "blockdev-devices-left-attached-$t" ||
    fail "blockdev-devices-left-attached-$t" "$(dmsetup ls | tr '\n' ' ') / $(losetup -a | tr '\n' ' ')"
  thin_check -q "$md" && pass "blockdev-thin_check-$t" || fail "blockdev-thin_check-$t" "thin_check $md"
  losetup -d "$dd" "$md"
}

for t in $TARGETS; do
  lifecycle "$t"
  blockdev_pool "$t"
done
rc_reset
finish
