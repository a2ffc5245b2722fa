#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: exact status numbers after O_DIRECT writes at known offsets (pool used
# data blocks, thin mapped sectors and highest mapped sector), unprovisioned reads return zeroes
# (the data device is pre-filled with junk so a pass-through read would show), partial-block
# writes zero the rest of a new block, a new thin after a delete never shows the old data,
# blkdiscard and fstrim give blocks back (partial-block discards do not), discard passdown
# punches the backing file.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/22-status.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=256                       # 16 MiB data device
LEN=$((128 * TL_BS))         # 8 MiB thin (128 blocks)
dataf=$(tl_file data 0)
tl_pattern junk $((NB * TL_BLK)) >"$dataf"
META=$(tl_loop "$(tl_file meta 8M)") && DATA=$(tl_loop "$dataf") || { fail setup "loop devices"; finish; }
if ! tl_pool pool "$META" "$DATA" $NB; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi
step "create-thin" tl_msg pool create_thin 0
if ! tl_thin t pool 0 $LEN; then fail "thin-activate" "$(dmesg | tail -n 1)"; finish; fi
T=/dev/mapper/t

# blk_is NAME BLOCK EXPECTED_FILE: data block BLOCK of $T equals the 64 KiB file.
blk_is() { expect_eq "$1" "$(tl_rblk_sum $T "$2")" "$(tl_file_sum "$3")" "block $2 md5"; }
tl_pattern P0 $TL_BLK >"$TL_WORK/blk.P0"

# --- reads of unprovisioned blocks ----------------------------------------------------------------
expect_eq "unprovisioned-reads-zero" "$(tl_dev_sum $T)" "$(tl_zero_sum $((LEN * 512)))"
expect_eq "reads-do-not-provision" "$(tl_used pool) $(tl_tstatus t)" "0 0 -"

# --- whole-block writes ----------------------------------------------------------------------------
w3() { tl_wblk "$T" 0 P0 && tl_wblk "$T" 5 P5 && tl_wblk "$T" 100 P100; }
step "write-blocks-0-5-100" w3
expect_eq "used-3" "$(tl_used pool)" 3
expect_eq "thin-status-3" "$(tl_tstatus t)" "$((3 * TL_BS)) $((101 * TL_BS - 1))"
blk_is "block-0-readback" 0 "$TL_WORK/blk.P0"
tl_wblk $T 5 P5b
expect_eq "overwrite-no-alloc" "$(tl_used pool)" 3

# --- partial-block writes to new blocks: the rest of the block reads zero ---------------------------
# 4 KiB at byte 8 KiB of block 7.
tl_pattern Q $TL_BLK >"$TL_WORK/q"
head -c $TL_BLK /dev/zero >"$TL_WORK/blk.7"
dd if="$TL_WORK/q" of="$TL_WORK/blk.7" bs=4096 seek=2 count=1 conv=notrunc status=none
dd if="$TL_WORK/q" of=$T bs=4096 seek=$((7 * 16 + 2)) count=1 oflag=direct status=none
expect_eq "partial-write-allocates-1" "$(tl_used pool)" 4
blk_is "partial-write-4k-rest-zero" 7 "$TL_WORK/blk.7"
# One 512-byte sector at sector 3 of block 9.
head -c $TL_BLK /dev/zero >"$TL_WORK/blk.9"
dd if="$TL_WORK/q" of="$TL_WORK/blk.9" bs=512 seek=3 count=1 conv=notrunc status=none
dd if="$TL_WORK/q" of=$T bs=512 seek=$((9 * TL_BS + 3)) count=1 oflag=direct status=none
blk_is "partial-write-512-rest-zero" 9 "$TL_WORK/blk.9"
# 8 KiB straddling the boundary of blocks 10 and 11.
head -c $((2 * TL_BLK)) /dev/zero >"$TL_WORK/blk.10"
dd if="$TL_WORK/q" of="$TL_WORK/blk.10" bs=4096 seek=15 count=2 conv=notrunc status=none
dd if="$TL_WORK/q" of=$T bs=4096 seek=$((10 * 16 + 15)) count=2 oflag=direct status=none
expect_eq "straddling-write" "$(tl_rblk_sum $T 10 2)" "$(tl_file_sum "$TL_WORK/blk.10")"
expect_eq "used-7" "$(tl_used pool)" 7
expect_eq "thin-status-7" "$(tl_tstatus t)" "$((7 * TL_BS)) $((101 * TL_BS - 1))"

# --- discards ---------------------------------------------------------------------------------------
alloc0=$(tl_alloc "$dataf")
step "blkdiscard-block-5" blkdiscard -o $((5 * TL_BLK)) -l $TL_BLK $T
expect_eq "discard-frees-block" "$(tl_used pool)" 6
expect_eq "discarded-block-reads-zero" "$(tl_rblk_sum $T 5)" "$(tl_zero_sum $TL_BLK)"
step "blkdiscard-half-block-0" blkdiscard -o 0 -l $((TL_BLK / 2)) $T
expect_eq "partial-discard-keeps-block" "$(tl_used pool)" 6
blk_is "partial-discard-keeps-data" 0 "$TL_WORK/blk.P0"
step "blkdiscard-block-100" blkdiscard -o $((100 * TL_BLK)) -l $TL_BLK $T
expect_eq "highest-drops-after-discard" "$(tl_tstatus t)" "$((5 * TL_BS)) $((12 * TL_BS - 1))"
step "blkdiscard-all" blkdiscard $T
expect_eq "discard-all-used-0" "$(tl_used pool) $(tl_tstatus t)" "0 0 -"
expect_eq "discard-all-reads-zero" "$(tl_dev_sum $T)" "$(tl_zero_sum $((LEN * 512)))"
# Passdown: the 7 unmapped blocks were discarded on the loop device, which punches its file
# (filled with junk at the start, so fully allocated). Zeroing may already have punched parts
# of them (kcopyd zeroes with WRITE_ZEROES where the device takes it, which a loop device turns
# into a hole): what counts is that at least 7 blocks of the file are holes now.
alloc1=$(tl_alloc "$dataf")
if [ "$alloc1" -le $((NB * TL_BLK - 7 * TL_BLK)) ]; then pass "discard-passdown-punches-file"; else
  fail "discard-passdown-punches-file" "data file allocation $alloc0 -> $alloc1 bytes"
fi
step "remove-thin" tl_remove t

# --- fstrim on ext4 -------------------------------------------------------------------------------
step "create-fs-thin" tl_msg pool create_thin 1
if tl_thin f pool 1 $((32 * 2048)) && mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=1,lazy_journal_init=1,nodiscard /dev/mapper/f &&
  tl_mount /dev/mapper/f "$TL_WORK/mnt" noinit_itable; then
  pass "fs-thin-setup"
  sync
  before=$(tl_used pool)
  head -c $((4 * 1048576)) /dev/urandom >"$TL_WORK/mnt/big"
  sync
  with=$(tl_used pool)
  rm "$TL_WORK/mnt/big"
  sync
  if [ $((with - before)) -ge 60 ]; then pass "fs-file-provisions"; else
    fail "fs-file-provisions" "used $before -> $with for 4 MiB"
  fi
  step "fstrim" fstrim "$TL_WORK/mnt"
  after=$(tl_used pool)
  if [ "$after" -le $((with - 56)) ]; then pass "fstrim-frees-blocks"; else
    fail "fstrim-frees-blocks" "used $before -> $with -> $after after fstrim"
  fi
  umount "$TL_WORK/mnt"
  step "e2fsck-after-fstrim" e2fsck -fn /dev/mapper/f
  tl_remove f
else
  fail "fs-thin-setup" "activate/mkfs/mount failed"
fi
step "remove-pool" tl_remove pool
step "thin_check" thin_check "$META"

# --- a new thin after a delete never shows the old data (zeroing on) ---------------------------------
zdataf=$(tl_file zdata 0)
tl_pattern junk2 $((32 * TL_BLK)) >"$zdataf"
ZM=$(tl_loop "$(tl_file zmeta 8M)") && ZD=$(tl_loop "$zdataf") || { fail setup "loop devices"; finish; }
if ! tl_pool zp "$ZM" "$ZD" 32; then fail "zpool-create" "$(dmesg | tail -n 1)"; finish; fi
ZLEN=$((32 * TL_BS))
tl_msg zp create_thin 0 && tl_thin z0 zp 0 $ZLEN && tl_wblk /dev/mapper/z0 0 secret 32 &&
  pass "fill-whole-pool" || fail "fill-whole-pool" "$(dmesg | tail -n 1)"
expect_eq "pool-full" "$(tl_pfield zp 3) $(tl_pfield zp 5)" "32/32 rw"
step "delete-filled-thin" sh -c "dmsetup remove z0 && dmsetup message zp 0 delete 0"
tl_forget z0
expect_eq "delete-returns-all-blocks" "$(tl_pfield zp 3)" "0/32"
step "create-new-thin" tl_msg zp create_thin 1
if tl_thin z1 zp 1 $ZLEN; then
  expect_eq "new-thin-reads-zero" "$(tl_dev_sum /dev/mapper/z1)" "$(tl_zero_sum $((ZLEN * 512)))"
  head -c $((ZLEN * 512)) /dev/zero >"$TL_WORK/z.model"
  b=0
  while [ $b -lt 32 ]; do
    off=$((b * 16 + b % 16))   # a 4 KiB piece at a different place in each block
    dd if="$TL_WORK/q" of=/dev/mapper/z1 bs=4096 seek=$off count=1 oflag=direct status=none
    dd if="$TL_WORK/q" of="$TL_WORK/z.model" bs=4096 seek=$off count=1 conv=notrunc status=none
    b=$((b + 1))
  done
  expect_eq "reused-blocks-zeroed" "$(tl_dev_sum /dev/mapper/z1)" "$(tl_file_sum "$TL_WORK/z.model")"
  expect_eq "reused-blocks-used" "$(tl_pfield zp 3)" "32/32"
  expect_eq "reused-thin-status" "$(tl_tstatus z1)" "$((32 * TL_BS)) $((32 * TL_BS - 1))"
else
  fail "new-thin-reads-zero" "activate failed"
fi
finish
