#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: a thin with an external origin (the table's third argument). Reads of
# unprovisioned blocks come from the origin, zero past its end (the origin here ends in the
# middle of a data block); the first write to a block copies the origin's block (or the part of
# it that exists, the rest zero) into a new block; the origin itself is never written.
# Checked against a model: a plain file holding what the thin must read back.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin).
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=64
LEN=$((16 * TL_BS))                       # 16 blocks (1 MiB) of thin
ORIGIN_BYTES=$((5 * TL_BLK + 32768))      # 5.5 blocks of origin
META=$(tl_loop "$(tl_file meta 8M)") && DATA=$(tl_loop "$(tl_file data $((NB * TL_BLK)))") ||
  { fail setup "loop devices"; finish; }
originf=$TL_WORK/origin.img
tl_pattern origin "$ORIGIN_BYTES" >"$originf"
ORIGIN=$(tl_loop "$originf") || { fail setup "origin loop device"; finish; }
origin_sum=$(tl_sum "$originf")
if ! tl_pool pool "$META" "$DATA" $NB; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi
step "create-thin" tl_msg pool create_thin 0
if ! tl_dm_create t "0 $LEN $THIN_TARGET /dev/mapper/pool 0 $ORIGIN"; then
  fail "thin-activate" "$(dmesg | tail -n 1)"
  finish
fi
T=/dev/mapper/t
pool_nr=$(dmsetup info -c --noheadings -o major,minor pool | tr -d ' ')
origin_nr=$(cat /sys/class/block/"${ORIGIN#/dev/}"/dev)
expect_eq "thin-table" "$(dmsetup table t)" "0 $LEN $THIN_TARGET $pool_nr 0 $origin_nr"

# The model: the origin, then zeroes up to the thin's size.
model=$TL_WORK/model.img
cp "$originf" "$model"
truncate -s $((LEN * 512)) "$model"
expect_eq "reads-come-from-origin" "$(tl_dev_sum $T)" "$(tl_sum "$model")"
expect_eq "reads-provision-nothing" "$(tl_used pool)" 0

# 4 KiB into block 1 (inside the origin): the rest of the block is the origin's.
tl_pattern w1 4096 >"$TL_WORK/w1"
dd if="$TL_WORK/w1" of=$T bs=4096 seek=$((16 + 3)) oflag=direct status=none
tl_model_write "$model" $((TL_BLK + 3 * 4096)) "$TL_WORK/w1"
# 4 KiB into block 5 (the origin ends half-way through it): the tail past the origin is zero.
tl_pattern w5 4096 >"$TL_WORK/w5"
dd if="$TL_WORK/w5" of=$T bs=4096 seek=$((5 * 16)) oflag=direct status=none
tl_model_write "$model" $((5 * TL_BLK)) "$TL_WORK/w5"
# 4 KiB into block 9 (past the origin): zeroes around it.
tl_pattern w9 4096 >"$TL_WORK/w9"
dd if="$TL_WORK/w9" of=$T bs=4096 seek=$((9 * 16 + 15)) oflag=direct status=none
tl_model_write "$model" $((9 * TL_BLK + 15 * 4096)) "$TL_WORK/w9"
# A whole block over the origin (block 2): no copy needed, the write is the block.
tl_wblk $T 2 w2
tl_pattern w2 $TL_BLK >"$TL_WORK/w2"
tl_model_write "$model" $((2 * TL_BLK)) "$TL_WORK/w2"

expect_eq "written-blocks-provisioned" "$(tl_used pool)" 4
expect_eq "thin-status" "$(tl_tstatus t)" "$((4 * TL_BS)) $((10 * TL_BS - 1))"
expect_eq "contents-match-model" "$(tl_dev_sum $T)" "$(tl_sum "$model")"
expect_eq "origin-untouched" "$(tl_sum "$originf")" "$origin_sum"

step "remove-thin" tl_remove t
step "remove-pool" tl_remove pool
step "thin_check" thin_check -q "$META"
finish
