#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: on-disk portability between two implementations in one guest. Side A
# formats and fills a pool (ext4 thin with files, a snapshot of it, a raw thin with a discard, a
# transaction id), tears it down; side B opens the same devices and must show identical
# contents (md5 of every thin) and identical status lines (pool and thins); B then changes
# things (a file in the snapshot, a snapshot of the raw thin, overwrites, a delete), tears down,
# and A must see exactly B's state. Then the same with B formatting. thin_check after each
# teardown; fresh pools of both sides must report the same status.
# Sides come from env: A_POOL/A_THIN (default thin-pool/thin, the kernel's C targets) and
# B_POOL/B_THIN (default $POOL_TARGET/$THIN_TARGET, i.e. rthin-pool/rthin). Self-check today:
#   qemu/run -- env B_POOL=thin-pool B_THIN=thin sh /rthin/tests/guest/datapath/23-portability.sh
# Against ours: qemu/run -- sh /rthin/tests/guest/datapath/23-portability.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

A_POOL=${A_POOL:-thin-pool} A_THIN=${A_THIN:-thin}
B_POOL=${B_POOL:-$POOL_TARGET} B_THIN=${B_THIN:-$THIN_TARGET}
tl_load "$A_POOL" "$A_THIN" "$B_POOL" "$B_THIN"
echo "info: side A = $A_POOL/$A_THIN, side B = $B_POOL/$B_THIN"

NB=1024                  # 64 MiB data
LEN=$((16 * 2048))       # 16 MiB thins (256 blocks)
M=$TL_WORK/mnt

# side A|B: the targets tl_pool / tl_thin use from now on.
side() {
  case $1 in
  A) POOL_TARGET=$A_POOL THIN_TARGET=$A_THIN ;;
  B) POOL_TARGET=$B_POOL THIN_TARGET=$B_THIN ;;
  esac
}


# scenario TAG MAKER OPENER
scenario() {
  local tag=$1 x=$2 y=$3
  rm -f "$TL_WORK/meta.img" "$TL_WORK/data.img"
  META=$(tl_loop "$(tl_file meta 16M)") && DATA=$(tl_loop "$(tl_file data 64M)") || {
    fail "$tag-setup" "loop devices"
    return
  }

  # --- X formats and fills -----------------------------------------------------------------------
  side "$x"
  if ! tl_pool pool "$META" "$DATA" $NB 10; then fail "$tag-make" "$(dmesg | tail -n 1)"; return; fi
  tl_pstatus pool >"$TL_WORK/fresh.$x"
  if tl_msg pool create_thin 0 && tl_thin t0 pool 0 $LEN && tl_mkfs /dev/mapper/t0 &&
    tl_mount /dev/mapper/t0 "$M" noinit_itable && head -c 1500000 /dev/urandom >"$M/f1" &&
    cp "$M/f1" "$TL_WORK/f1.$tag" && echo "made by $x" >"$M/who" && umount "$M" &&
    tl_snap pool 1 0 t0 && tl_thin t1 pool 1 $LEN &&
    tl_mount /dev/mapper/t0 "$M" noinit_itable && head -c 700000 /dev/urandom >"$M/f2" && umount "$M" &&
    tl_msg pool create_thin 2 && tl_thin t2 pool 2 $LEN &&
    tl_wblk /dev/mapper/t2 0 "$tag-r" 10 && tl_wblk /dev/mapper/t2 200 "$tag-s" 6 &&
    blkdiscard -o $((3 * TL_BLK)) -l $((2 * TL_BLK)) /dev/mapper/t2 &&
    tl_msg pool set_transaction_id 0 7; then
    pass "$tag-make"
  else
    fail "$tag-make" "$(dmesg | tail -n 1)"
    return
  fi
  tl_snapshot "0 1 2" >"$TL_WORK/state1"
  step "$tag-make-teardown" tl_close_all "0 1 2"
  step "$tag-thin_check-1" thin_check "$META"

  # --- Y opens: same contents, same numbers; then changes things ----------------------------------
  side "$y"
  if tl_open_all "0 1 2"; then pass "$tag-open"; else fail "$tag-open" "$(dmesg | tail -n 1)"; return; fi
  tl_same_state "$tag-same-state" "$TL_WORK/state1" "0 1 2"
  step "$tag-e2fsck-origin" e2fsck -fn /dev/mapper/t0
  step "$tag-e2fsck-snap" e2fsck -fn /dev/mapper/t1
  if tl_mount /dev/mapper/t1 "$M" noinit_itable; then
    [ "$(tl_file_sum "$M/f1")" = "$(tl_file_sum "$TL_WORK/f1.$tag")" ] && [ ! -e "$M/f2" ] &&
      pass "$tag-snap-files" || fail "$tag-snap-files" "snapshot files differ"
    echo "changed by $y" >"$M/who"
    head -c 300000 /dev/urandom >"$M/f3"
    umount "$M"
  else
    fail "$tag-snap-files" "mount failed"
  fi
  if tl_snap pool 3 2 t2 && tl_wblk /dev/mapper/t2 1 "$tag-t" 2 && tl_wblk /dev/mapper/t2 250 "$tag-u" 1 &&
    tl_remove t0 && tl_msg pool delete 0 && tl_thin t3 pool 3 $LEN &&
    tl_msg pool set_transaction_id 7 8; then
    pass "$tag-change"
  else
    fail "$tag-change" "$(dmesg | tail -n 1)"
  fi
  tl_snapshot "1 2 3" >"$TL_WORK/state2"
  step "$tag-change-teardown" tl_close_all "1 2 3"
  step "$tag-thin_check-2" thin_check "$META"

  # --- X reopens: exactly Y's state ----------------------------------------------------------------
  side "$x"
  if tl_open_all "1 2 3"; then pass "$tag-reopen"; else fail "$tag-reopen" "$(dmesg | tail -n 1)"; return; fi
  tl_same_state "$tag-same-state-back" "$TL_WORK/state2" "1 2 3"
  msg_fails "$tag-deleted-stays-deleted" pool "$ENODATA_TEXT" delete 0
  step "$tag-e2fsck-back" e2fsck -fn /dev/mapper/t1
  step "$tag-final-teardown" tl_close_all "1 2 3"
  step "$tag-thin_check-3" thin_check "$META"
  losetup -d "$META"
  losetup -d "$DATA"
}

scenario a2b A B
scenario b2a B A
# Both formatted the same devices with the same table: same fresh status line.
expect_eq "fresh-status-same" "$(cat "$TL_WORK/fresh.B" 2>/dev/null)" "$(cat "$TL_WORK/fresh.A" 2>/dev/null)"
finish
