#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: removing a table lets go of its devices at once, as dm core's own opens
# do (synchronously, not when the ioctl returns), so a stack comes down in one go: LVM, Docker
# and `dmsetup remove_all` remove the lower devices right after the upper ones. The pool's data and
# metadata devices and a thin's external origin are dm-linear devices here, whose open count
# dm checks: each must be removable at once, with no retry. Both targets, with I/O done first
# (so the worker, kcopyd and the metadata cache all held the devices).
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin).
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=64
LEN=$((16 * TL_BS))
m=$(tl_loop "$(tl_file meta 8M)") && d=$(tl_loop "$(tl_file data $((NB * TL_BLK)))") &&
  o=$(tl_loop "$(tl_file origin $((4 * TL_BLK)))") || { fail setup "loop devices"; finish; }
linear() { tl_dm_create "$1" "0 $(blockdev --getsz "$2") linear $2 0"; }
if ! { linear lmeta "$m" && linear ldata "$d" && linear lorigin "$o"; }; then
  fail setup "linear devices: $(dmesg | tail -n 1)"
  finish
fi

# remove_now NAME: one `dmsetup remove`, no retry.
remove_now() {
  dmsetup remove "$1" && rm -f "/dev/mapper/$1" && tl_forget "$1"
}

# setup ROUND: pool and a thin with an external origin; a partial write (an origin copy through
# kcopyd), a whole-block write, reads of both, so every holder of the devices took part.
setup() {
  if ! tl_pool pool /dev/mapper/lmeta /dev/mapper/ldata $NB; then fail "pool-create-$1" "$(dmesg | tail -n 1)"; finish; fi
  tl_msg pool create_thin "$1" >/dev/null 2>&1
  if ! tl_dm_create t "0 $LEN $THIN_TARGET /dev/mapper/pool $1 /dev/mapper/lorigin"; then
    fail "thin-activate-$1" "$(dmesg | tail -n 1)"
    finish
  fi
  dd if=/dev/urandom of=/dev/mapper/t bs=4096 count=1 seek=3 oflag=direct status=none &&
    tl_wblk /dev/mapper/t 2 w 1 && tl_rblk_sum /dev/mapper/t 0 4 >/dev/null ||
    fail "io-$1" "$(dmesg | tail -n 1)"
}

# One device at a time, each right after the one above it.
setup 1
step "remove-thin" remove_now t
step "origin-free-after-thin-removal" remove_now lorigin
step "remove-pool" remove_now pool
step "data-free-after-pool-removal" remove_now ldata
step "metadata-free-after-pool-removal" remove_now lmeta

# The whole stack in one ioctl: dm removes the thin, then the pool, then (retrying the devices
# still open) the origin, data and metadata devices, all before returning to user space.
linear lmeta "$m" && linear ldata "$d" && linear lorigin "$o" || { fail setup "linear devices again"; finish; }
setup 2
dmsetup remove_all >"$TL_WORK/ra.out" 2>&1
expect_eq "remove_all-removes-the-stack" "$(dmsetup ls 2>&1)" "No devices found"
for n in t pool lorigin ldata lmeta; do rm -f "/dev/mapper/$n"; done
tl_forget t pool lorigin ldata lmeta
finish
