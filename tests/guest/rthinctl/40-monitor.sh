#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# `rthinctl pool monitor` on both target families: it sets the pool's low water mark at the
# threshold, sleeps on device-mapper events (its polling interval is set far beyond the test,
# so only the kernel's low-water-mark event can wake it), and extends the data file and pool
# before the pool fills; writes beyond the original size then succeed.
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

monitor() {
  local t=$1 dir=$RC_WORK/files pid total
  rc_reset
  rthinctl pool create mp --data-size 64M --dir "$dir" --target "$t" >/dev/null &&
    rthinctl thin create mv --size 128M >/dev/null || { fail "monitor-setup-$t" "set-up failed"; return; }
  rthinctl pool monitor mp --autoextend-threshold 80 --autoextend-percent 50 --interval 3600 \
    --max-extends 1 >"$RC_WORK/monitor" 2>&1 &
  pid=$!
  # Armed once the low water mark is in the table: 20% of 1024 blocks.
  for _ in $(seq 1 100); do
    dmsetup table mp | grep -q ' 204 [0-9]' && break
    sleep 0.1
  done
  dmsetup table mp | grep -q ' 204 [0-9]' && pass "monitor-low-water-mark-$t" ||
    fail "monitor-low-water-mark-$t" "$(dmsetup table mp)"
  # 56 MiB of 64: 87.5% used, past the threshold.
  dd if=/dev/zero of=/dev/mapper/mv bs=1M count=56 oflag=direct status=none
  for _ in $(seq 1 300); do
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 $pid 2>/dev/null; then
    kill $pid
    fail "monitor-extends-on-event-$t" "no extension 30 s after the threshold: $(tr '\n' '|' <"$RC_WORK/monitor")"
    return
  fi
  wait $pid
  total=$(rthinctl pool status mp --json | json data_total_blocks)
  [ "$total" = 1536 ] && [ "$(stat -c %s "$dir/mp-data.img")" = 100663296 ] &&
    grep -q "extending data to 96M" "$RC_WORK/monitor" &&
    pass "monitor-extends-on-event-$t" ||
    fail "monitor-extends-on-event-$t" "$total blocks; $(tr '\n' '|' <"$RC_WORK/monitor")"
  # 80 MiB now fits: more than the pool first had.
  timeout 60 dd if=/dev/zero of=/dev/mapper/mv bs=1M count=24 seek=56 oflag=direct status=none &&
    [ "$(rthinctl pool status mp --json | json mode)" = rw ] &&
    pass "monitor-pool-did-not-fill-$t" || fail "monitor-pool-did-not-fill-$t" "write failed"
  rthinctl pool remove mp >/dev/null
}

for t in $TARGETS; do
  monitor "$t"
done
rc_reset
finish
