#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: running out of data space. The low water mark event fires once, at the
# exact allocation; error_if_no_space fails writes with ENOSPC and shows out_of_data_space;
# provisioned blocks stay writable; growing the data device (bigger backing file, losetup -c,
# reload with the larger length, resume) brings the pool back. With queue_if_no_space writes
# block until the pool grows and then finish with nothing lost (also across a --noflush suspend
# of the thin, which must not wait for them); the no_space_timeout module
# parameter turns queued writes into ENOSPC. Every wait is bounded.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/25-space.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=32                      # 2 MiB of data
LEN=$((128 * TL_BS))       # 8 MiB thins
PARAM=/sys/module/$(tl_module_for "$POOL_TARGET" | tr - _)/parameters/no_space_timeout

# grow POOL DATAFILE DATADEV NBLOCKS [LWM [FEATURES...]]: grow the backing file and the pool.
grow() {
  local p=$1 f=$2 d=$3 nb=$4
  shift 4
  truncate -s $((nb * TL_BLK)) "$f" && losetup -c "$d" && tl_pool_reload "$p" "$META" "$d" "$nb" "$@"
}
mode_is() { [ "$(tl_pfield "$1" 5)" = "$2" ]; }
field7_is() { [ "$(tl_pfield "$1" 7)" = "$2" ]; }

# --- error_if_no_space + low water mark event -------------------------------------------------------
dataf=$(tl_file data $((NB * TL_BLK)))
META=$(tl_loop "$(tl_file meta 8M)") && DATA=$(tl_loop "$dataf") || { fail setup "loop devices"; finish; }
if ! tl_pool pool "$META" "$DATA" $NB 8 error_if_no_space; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi
expect_eq "error-policy-status" "$(tl_pfield pool 5) $(tl_pfield pool 7)" "rw error_if_no_space"
step "create-thin" tl_msg pool create_thin 0
if ! tl_thin t pool 0 $LEN; then fail "thin-activate" "$(dmesg | tail -n 1)"; finish; fi
T=/dev/mapper/t

ev0=$(tl_events pool)
tl_wblk $T 0 fill 24
# free before each allocation: 32, 31, ..., 9 -- all above the mark of 8
expect_eq "no-event-above-low-water" "$(tl_events pool)" "$ev0" "events after 24 blocks"
tl_wblk $T 24 b24
# the 25th allocation sees 8 free blocks
expect_eq "event-at-low-water" "$(tl_events pool)" $((ev0 + 1)) "events after 25 blocks"
tl_wblk $T 25 fill2 7
expect_eq "low-water-event-once" "$(tl_events pool)" $((ev0 + 1)) "events after 32 blocks"
expect_eq "pool-exactly-full" "$(tl_pfield pool 3) $(tl_pfield pool 5)" "32/32 rw"

if tl_wblk $T 40 over 2>"$TL_WORK/err"; then fail "write-when-full-ENOSPC" "write succeeded"
else
  grep -qF "$ENOSPC_TEXT" "$TL_WORK/err" && pass "write-when-full-ENOSPC" ||
    fail "write-when-full-ENOSPC" "$(tail -n 1 "$TL_WORK/err")"
fi
expect_eq "out-of-data-space-status" "$(tl_pfield pool 3) $(tl_pfield pool 5) $(tl_pfield pool 7)" \
  "32/32 out_of_data_space error_if_no_space"
expect_eq "mode-change-event" "$(tl_events pool)" $((ev0 + 2))
expect_eq "failed-write-not-mapped" "$(tl_tstatus t)" "$((32 * TL_BS)) $((32 * TL_BS - 1))"
step "overwrite-provisioned-when-full" tl_wblk $T 3 again
expect_eq "overwrite-readback" "$(tl_rblk_sum $T 3)" "$(tl_pattern_sum again 1)"
expect_eq "reads-when-full" "$(tl_rblk_sum $T 24)" "$(tl_pattern_sum b24 1)"
step "messages-when-full" tl_msg pool create_thin 1

ev1=$(tl_events pool)
step "grow-data-device" grow pool "$dataf" "$DATA" 64 8 error_if_no_space
expect_eq "grown-status" "$(tl_pfield pool 3) $(tl_pfield pool 5)" "32/64 rw"
# resume of the reload and the mode change back to rw each raise an event
ev2=$(tl_events pool)
[ "$ev2" -gt "$ev1" ] && pass "grow-raises-event" || fail "grow-raises-event" "events $ev1 -> $ev2"
echo "info: pool events across grow (reload+resume+mode change): $ev1 -> $ev2"
step "write-after-grow" tl_wblk $T 40 after
expect_eq "used-after-grow" "$(tl_pfield pool 3)" "33/64"
tl_wblk $T 41 fill4 23
# 56 used: the allocations saw 32..9 free, above the mark
expect_eq "no-event-above-low-water-after-grow" "$(tl_events pool)" "$ev2"
tl_wblk $T 64 b64
# the resume re-armed the mark: the 57th allocation (8 free) raises it again
expect_eq "low-water-rearmed-by-resume" "$(tl_events pool)" $((ev2 + 1))
step "remove-thin" tl_remove t
step "remove-pool" tl_remove pool
losetup -d "$DATA"
step "thin_check-after-full" thin_check "$META"
losetup -d "$META"

# --- queue_if_no_space: writes wait, growing the pool completes them ---------------------------------
dataf=$(tl_file qdata $((NB * TL_BLK)))
META=$(tl_loop "$(tl_file qmeta 8M)") && DATA=$(tl_loop "$dataf") || { fail setup "loop devices"; finish; }
if ! tl_pool qp "$META" "$DATA" $NB; then fail "qpool-create" "$(dmesg | tail -n 1)"; finish; fi
tl_msg qp create_thin 0 && tl_thin q qp 0 $LEN || { fail "qthin" "$(dmesg | tail -n 1)"; finish; }
head -c $((48 * TL_BLK)) /dev/urandom >"$TL_WORK/q.src"
bg qdd timeout 120 /usr/bin/dd if="$TL_WORK/q.src" of=/dev/mapper/q bs=$TL_BLK oflag=direct status=none 2>"$TL_WORK/qerr"
if wait_for 30 mode_is qp out_of_data_space; then pass "queue-reaches-out-of-data-space"; else
  fail "queue-reaches-out-of-data-space" "status: $(tl_pstatus qp)"
fi
expect_eq "queue-policy-status" "$(tl_pfield qp 3) $(tl_pfield qp 7)" "32/32 queue_if_no_space"
sleep 2
bg_done qdd && fail "queued-write-blocks" "dd finished: $(cat "$TL_WORK/qerr")" || pass "queued-write-blocks"
# A --noflush suspend of the thin hands the waiting write back to dm core (dm-thin's requeue
# mode), so it finishes at once instead of waiting for space; the resume replays the write.
bg qsus timeout 30 dmsetup suspend --noflush q
if wait_for 10 bg_done qsus && bg_rc qsus; then pass "noflush-suspend-with-queued-write"; else
  fail "noflush-suspend-with-queued-write" "suspend not done in 10 s: $(dmesg | tail -n 1)"
fi
expect_eq "noflush-suspended" "$(dmsetup info q | sed -n 's/^State: *//p')" "SUSPENDED"
bg_done qdd && fail "requeued-write-still-waits" "dd finished: $(cat "$TL_WORK/qerr")" ||
  pass "requeued-write-still-waits"
step "grow-queued-pool" grow qp "$dataf" "$DATA" 64
wait_for 30 bg_done qsus || true
step "resume-after-noflush-suspend" dmsetup resume q
if wait_for 60 bg_done qdd; then
  if bg_rc qdd; then pass "queued-writes-complete"; else
    fail "queued-writes-complete" "dd failed: $(tail -n 1 "$TL_WORK/qerr")"
  fi
else
  fail "queued-writes-complete" "dd still blocked 60 s after the pool grew"
fi
expect_eq "queued-data-intact" "$(tl_rblk_sum /dev/mapper/q 0 48)" "$(tl_file_sum "$TL_WORK/q.src")"
expect_eq "queued-status-after-grow" "$(tl_pfield qp 3) $(tl_pfield qp 5) $(tl_pfield qp 7)" "48/64 rw queue_if_no_space"
expect_eq "queued-thin-status" "$(tl_tstatus q)" "$((48 * TL_BS)) $((48 * TL_BS - 1))"

# --- no_space_timeout: queued writes fail with ENOSPC once it expires ------------------------------
if [ -w "$PARAM" ]; then
  pass "no_space_timeout-param"
  old=$(cat "$PARAM")
  echo 3 >"$PARAM"
  tl_wblk /dev/mapper/q 48 fill3 16   # 64/64: full
  bg tdd timeout 120 /usr/bin/dd if=/dev/zero of=/dev/mapper/q bs=$TL_BLK seek=70 count=1 oflag=direct status=none 2>"$TL_WORK/terr"
  if wait_for 30 field7_is qp error_if_no_space; then pass "timeout-switches-to-error"; else
    fail "timeout-switches-to-error" "status: $(tl_pstatus qp)"
  fi
  expect_eq "timeout-mode" "$(tl_pfield qp 5)" "out_of_data_space"
  if wait_for 20 bg_done tdd; then
    if bg_rc tdd; then fail "timeout-fails-queued-write" "write succeeded"; else
      grep -qF "$ENOSPC_TEXT" "$TL_WORK/terr" && pass "timeout-fails-queued-write" ||
        fail "timeout-fails-queued-write" "$(tail -n 1 "$TL_WORK/terr")"
    fi
  else
    fail "timeout-fails-queued-write" "write still blocked"
  fi
  echo "$old" >"$PARAM"
  step "grow-after-timeout" grow qp "$dataf" "$DATA" 96
  # The requested policy (queue) comes back when the pool leaves out_of_data_space.
  expect_eq "policy-restored-after-grow" "$(tl_pfield qp 5) $(tl_pfield qp 7)" "rw queue_if_no_space"
else
  fail "no_space_timeout-param" "$PARAM missing or not writable"
fi
step "remove-qthin" tl_remove q
step "remove-qpool" tl_remove qp
step "thin_check-after-queue" thin_check "$META"
finish
