#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: fio with verify on three thins at once while snapshots of them are
# created (origin suspended around create_snap), activated, read and deleted; then a snapshot
# of each finished thin passes fio's verify_only of the same workload, used data blocks add up
# once every snapshot is gone, and thin_check passes after teardown.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/26-concurrency.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"
command -v fio >/dev/null || { fail "fio" "fio not in the guest"; finish; }

NB=2048                   # 128 MiB data
LEN=$((8 * 2048))         # 8 MiB thins
SIZE=8M                   # fio region per thin
META=$(tl_loop "$(tl_file meta 16M)") && DATA=$(tl_loop "$(tl_file data 128M)") ||
  { fail setup "loop devices"; finish; }
if ! tl_pool pool "$META" "$DATA" $NB; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi
ok=1
for i in 0 1 2; do tl_msg pool create_thin $i && tl_thin "t$i" pool $i $LEN || ok=0; done
[ $ok = 1 ] && pass "thins-create" || { fail "thins-create" "$(dmesg | tail -n 1)"; finish; }

# fio_job ID DEV [EXTRA...]: the workload of thin ID against DEV (same offsets and data for the
# same ID: fixed seed).
fio_job() {
  local id=$1 dev=$2
  shift 2
  echo "--name=j$id --filename=$dev --rw=randwrite --bsrange=4k-16k --size=$SIZE \
--eta=never --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=$((id + 11)) $*"
}

# shellcheck disable=SC2046 # word splitting of the job options is intended
bg fio timeout 240 fio --output="$TL_WORK/fio.out" $(fio_job 0 /dev/mapper/t0) $(fio_job 1 /dev/mapper/t1) \
  $(fio_job 2 /dev/mapper/t2)

# Snapshot churn while fio runs: snapshot thin r%3 (suspend/create_snap/resume), read an older
# snapshot, delete the one before it.
r=0 errs=""
while ! bg_done fio && [ $r -lt 60 ]; do
  i=$((r % 3)) s=$((100 + r))
  tl_snap pool $s $i "t$i" || errs="$errs snap$s"
  if [ $r -ge 1 ]; then
    if tl_thin sr pool $((s - 1)) $LEN; then
      dd if=/dev/mapper/sr of=/dev/null bs=1M count=2 iflag=direct status=none || errs="$errs read$((s - 1))"
      tl_remove sr || errs="$errs remove$((s - 1))"
    else
      errs="$errs activate$((s - 1))"
    fi
  fi
  [ $r -ge 2 ] && { tl_msg pool delete $((s - 2)) || errs="$errs delete$((s - 2))"; }
  r=$((r + 1))
done
echo "info: $r snapshot rounds during fio"
wait_for 240 bg_done fio
if bg_rc fio; then pass "fio-verify-under-snapshots"; else
  fail "fio-verify-under-snapshots" "fio failed: $(grep -iE 'verify|error|bad' "$TL_WORK/fio.out" | head -n 3 | tr '\n' ' ')"
  cat "$TL_WORK/fio.out"
fi
expect_eq "snapshot-churn-errors" "$errs" "" "failed operations"
[ $r -ge 3 ] && pass "snapshots-during-io" || fail "snapshots-during-io" "only $r rounds while fio ran"
# Remaining churn snapshots: the last two.
for s in $((100 + r - 2)) $((100 + r - 1)); do
  [ $s -ge 100 ] && tl_msg pool delete $s
done

# A snapshot of each finished thin holds exactly what fio wrote to it.
ok=1 bad=""
for i in 0 1 2; do
  if tl_snap pool $((200 + i)) $i "t$i" && tl_thin "v$i" pool $((200 + i)) $LEN; then
    # shellcheck disable=SC2046
    timeout 120 fio --output="$TL_WORK/fio-v$i.out" $(fio_job $i "/dev/mapper/v$i" --verify_only) ||
      bad="$bad v$i"
    [ "$(tl_dev_sum "/dev/mapper/v$i")" = "$(tl_dev_sum "/dev/mapper/t$i")" ] || bad="$bad v$i(md5)"
    tl_remove "v$i"
  else
    ok=0
  fi
done
[ $ok = 1 ] && expect_eq "snapshots-verify" "$bad" "" "snapshots failing verify" ||
  fail "snapshots-verify" "snapshot create/activate failed"
for i in 0 1 2; do tl_msg pool delete $((200 + i)); done

# No snapshot left: every used block belongs to exactly one thin.
sum=0
for i in 0 1 2; do
  # shellcheck disable=SC2046
  set -- $(tl_tstatus "t$i")
  sum=$((sum + $1 / TL_BS))
done
expect_eq "used-equals-sum-of-mapped" "$(tl_used pool)" "$sum"
ok=1
for i in 0 1 2; do tl_remove "t$i" || ok=0; done
tl_remove pool || ok=0
[ $ok = 1 ] && pass "teardown" || fail "teardown" "remove failed"
step "thin_check" thin_check "$META"
finish
