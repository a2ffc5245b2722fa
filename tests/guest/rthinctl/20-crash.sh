#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# kill -9 in the middle of `thin create`, `thin snapshot` and `thin delete`, at every step of
# the transaction-id bracket (RTHINCTL_TEST_KILL_AT makes rthinctl SIGKILL itself there), on
# both target families; the next command must finish or undo the change: state file and pool
# agree (transaction id, device ids), nothing pending, no origin left suspended, and the pool
# keeps working.
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

dir=$RC_WORK/files

# kernel_ids: the pool's device ids, from a metadata snapshot read by thin_ls.
kernel_ids() {
  dmsetup message p0 0 reserve_metadata_snap
  thin_ls -m --no-headers -o DEV "$dir/p0-metadata.img" 2>/dev/null | tr -d ' ' | sort -n | tr '\n' ' '
  dmsetup message p0 0 release_metadata_snap
}

# state_ids: the device ids the state file knows.
state_ids() {
  tr -d '\n' <"$dir/p0.rthinctl.json" | grep -o '"id": [0-9]*' | cut -d' ' -f2 | sort -n | tr '\n' ' '
}

# crash T OP STEP WANT: kill OP at STEP; after the next command the new volume must be
# present (WANT=present) or absent.
crash() {
  local t=$1 op=$2 step=$3 want=$4 name="crash-$2-at-$3-$1" rc kt st has
  rc_reset
  rthinctl pool create p0 --data-size 256M --dir "$dir" --target "$t" >/dev/null &&
    rthinctl thin create v0 --size 64M >/dev/null &&
    rthinctl thin create d0 --size 64M >/dev/null || { fail "$name" "set-up failed"; return; }
  dd if=/dev/urandom of=/dev/mapper/v0 bs=64K count=8 oflag=direct status=none
  case $op in
  create) RTHINCTL_TEST_KILL_AT=$step rthinctl thin create n0 --size 64M >/dev/null 2>&1 ;;
  snapshot) RTHINCTL_TEST_KILL_AT=$step rthinctl thin snapshot n0 --from v0 >/dev/null 2>&1 ;;
  delete) RTHINCTL_TEST_KILL_AT=$step rthinctl thin delete d0 >/dev/null 2>&1 ;;
  esac
  rc=$?
  [ $rc = 137 ] || { fail "$name" "rthinctl exited $rc, not killed (137) at $step"; return; }
  # The next command, whatever it is, recovers.
  rthinctl thin list >"$RC_WORK/list" 2>"$RC_WORK/recovered" || {
    fail "$name" "next command failed: $(tail -n 1 "$RC_WORK/recovered")"
    return
  }
  kt=$(rthinctl pool status p0 --json | json transaction_id)
  st=$(tr -d '\n' <"$dir/p0.rthinctl.json" | sed -n 's/.*"transaction_id": \([0-9]*\).*/\1/p')
  local vol=n0
  [ "$op" = delete ] && vol=d0
  has=absent
  [ -n "$(vol_field $vol id)" ] && has=present
  if grep -q '"pending": null' "$dir/p0.rthinctl.json" && [ "$kt" = "$st" ] &&
    [ "$(kernel_ids)" = "$(state_ids)" ] && [ "$has" = "$want" ] &&
    dmsetup info v0 | grep -q '^State: *ACTIVE' &&
    { [ "$want" = absent ] || [ -b /dev/mapper/$vol ]; } &&
    rthinctl thin create after --size 16M >/dev/null 2>&1 && [ -b /dev/mapper/after ]; then
    pass "$name"
  else
    fail "$name" "volume $has (want $want); transaction kernel $kt state $st; ids kernel [$(kernel_ids)] state [$(state_ids)]; $(dmsetup info v0 | grep State); $(tr '\n' ' ' <"$RC_WORK/recovered")"
  fi
}

for t in $TARGETS; do
  crash "$t" create begin absent
  crash "$t" create message absent
  crash "$t" create advance present
  crash "$t" snapshot suspended absent
  crash "$t" snapshot begin absent
  crash "$t" snapshot message absent
  crash "$t" snapshot advance present
  crash "$t" delete begin absent
  crash "$t" delete message absent
  crash "$t" delete advance absent
done
rc_reset
finish
