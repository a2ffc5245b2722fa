#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest half of host-persistence.sh (not a test on its own, hence no number): one boot of a
# pool on the virtio disks /dev/rthin/meta and /dev/rthin/data that outlive the guest.
#   persistence-phase.sh 1 OUT : format and fill the pool, record its state in OUT/state1, then
#                                crash the guest with the pool still active (sysrq b: no sync,
#                                no teardown); writes OUT/phase1.done just before the crash
#   persistence-phase.sh 2 OUT : reopen after the crash: the recorded state exactly, plus a
#                                write left unflushed 2 s before the crash (the 1 s periodic
#                                commit must have made it durable); change things, record
#                                OUT/state2, clean teardown, thin_check
#   persistence-phase.sh 3 OUT : reopen after the clean teardown: OUT/state2 exactly
# Targets from POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin).
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

phase=$1 out=$2
META=/dev/rthin/meta DATA=/dev/rthin/data
NB=1024                 # 64 MiB of data
LEN=$((32 * 2048))      # 32 MiB thins
M=$TL_WORK/mnt
tl_load "$POOL_TARGET" "$THIN_TARGET"
echo "info: phase $phase with $POOL_TARGET/$THIN_TARGET"
[ -b $META ] && [ -b $DATA ] || { fail "p$phase-disks" "no /dev/rthin/meta or data"; finish; }


case $phase in
1)
  dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync status=none
  if tl_open_all "" && tl_msg pool create_thin 0 && tl_thin t0 pool 0 $LEN && tl_mkfs /dev/mapper/t0 &&
    tl_mount /dev/mapper/t0 "$M" noinit_itable && head -c 2000000 /dev/urandom >"$M/f1" &&
    echo persisted >"$M/hello" && umount "$M" &&
    tl_msg pool create_thin 1 && tl_thin t1 pool 1 $LEN &&
    tl_pattern p1 $((20 * TL_BLK)) | dd of=/dev/mapper/t1 bs=$TL_BLK seek=3 iflag=fullblock conv=fsync status=none &&
    tl_snap pool 2 1 t1 && tl_thin t2 pool 2 $LEN &&
    tl_pattern p1b $((4 * TL_BLK)) | dd of=/dev/mapper/t1 bs=$TL_BLK seek=10 iflag=fullblock conv=fsync status=none &&
    tl_msg pool create_thin 3 && tl_thin t3 pool 3 $LEN && tl_msg pool set_transaction_id 0 5; then
    pass "p1-fill"
  else
    fail "p1-fill" "$(dmesg | tail -n 1)"
    finish
  fi
  tl_snapshot "0 1 2 3" >"$out/state1"
  # An acknowledged write with no flush after it: dm-thin commits every second on its own
  # (COMMIT_PERIOD), so after 2 s its mapping must be on disk too.
  tl_wblk /dev/mapper/t3 0 unflushed
  sleep 2
  touch "$out/phase1.done"
  echo "info: crashing the guest with the pool active"
  echo b >/proc/sysrq-trigger
  sleep 10
  fail "p1-crash" "sysrq b did not reboot"
  ;;
2)
  if tl_open_all "0 1 2 3"; then pass "p2-reopen-after-crash"; else fail "p2-reopen-after-crash" "$(dmesg | tail -n 1)"; finish; fi
  # thin 3 and the pool's data and metadata counts include the unflushed block; the rest is
  # exactly as recorded.
  tl_snapshot "0 1 2" >"$TL_WORK/now"
  grep -v '^t3:' "$out/state1" >"$TL_WORK/want"
  if [ "$(grep -v '^pool:' "$TL_WORK/now")" = "$(grep -v '^pool:' "$TL_WORK/want")" ] &&
    [ "$(grep '^pool:' "$TL_WORK/now" | cut -d' ' -f1-2,5-)" = "$(grep '^pool:' "$TL_WORK/want" | cut -d' ' -f1-2,5-)" ]; then
    pass "p2-state-after-crash"
  else
    fail "p2-state-after-crash" "$(diff "$TL_WORK/want" "$TL_WORK/now" | grep '^[-+][^-+]' | tr '\n' ' ')"
  fi
  used0=$(grep '^pool:' "$out/state1" | cut -d' ' -f4 | cut -d/ -f1)
  expect_eq "p2-periodic-commit" "$(tl_used pool) $(tl_tstatus t3) $(tl_rblk_sum /dev/mapper/t3 0)" \
    "$((used0 + 1)) 128 127 $(tl_pattern_sum unflushed 1)" "used blocks, thin 3 status, block 0 md5"
  step "p2-e2fsck" e2fsck -fn /dev/mapper/t0
  if tl_mount /dev/mapper/t0 "$M" noinit_itable; then
    expect_eq "p2-file" "$(cat "$M/hello")" persisted
    echo "boot 2" >"$M/boot2"
    umount "$M"
  else
    fail "p2-file" "mount failed"
  fi
  if tl_wblk /dev/mapper/t2 30 p2 3 && tl_snap pool 4 0 t0 && tl_remove t1 && tl_msg pool delete 1 &&
    tl_thin t4 pool 4 $LEN && tl_msg pool set_transaction_id 5 6; then
    pass "p2-change"
  else
    fail "p2-change" "$(dmesg | tail -n 1)"
  fi
  tl_snapshot "0 2 3 4" >"$out/state2"
  step "p2-teardown" tl_close_all "0 2 3 4"
  step "p2-thin_check" thin_check $META
  ;;
3)
  if tl_open_all "0 2 3 4"; then pass "p3-reopen"; else fail "p3-reopen" "$(dmesg | tail -n 1)"; finish; fi
  tl_same_state "p3-state" "$out/state2" "0 2 3 4"
  step "p3-e2fsck-snap" e2fsck -fn /dev/mapper/t4
  step "p3-teardown" tl_close_all "0 2 3 4"
  step "p3-thin_check" thin_check $META
  ;;
*)
  fail "usage" "persistence-phase.sh 1|2|3 OUTDIR"
  ;;
esac
finish
