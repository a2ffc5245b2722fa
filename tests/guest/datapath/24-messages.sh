#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: pool messages and their errors (errno texts as dmsetup prints them),
# transaction ids, metadata snapshots (status field 4, thin_dump --metadata-snap on the live
# device), the read_only feature, and thin_check / thin_dump on the metadata after a clean
# teardown.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/24-messages.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=512
LEN=$((64 * TL_BS))
META=$(tl_loop "$(tl_file meta 8M)") && DATA=$(tl_loop "$(tl_file data 32M)") ||
  { fail setup "loop devices"; finish; }
if ! tl_pool pool "$META" "$DATA" $NB; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi

# --- create_thin / create_snap / delete -----------------------------------------------------------
step "create_thin" tl_msg pool create_thin 0
msg_fails "create_thin-duplicate-EEXIST" pool "$EEXIST_TEXT" create_thin 0
step "create_thin-max-id" tl_msg pool create_thin 16777215
msg_fails "create_thin-id-too-big-EINVAL" pool "$EINVAL_TEXT" create_thin 16777216
msg_fails "create_thin-id-junk-EINVAL" pool "$EINVAL_TEXT" create_thin 1x
msg_fails "create_thin-no-id-EINVAL" pool "$EINVAL_TEXT" create_thin
msg_fails "create_thin-extra-arg-EINVAL" pool "$EINVAL_TEXT" create_thin 5 6
step "message-word-case-insensitive" tl_msg pool CREATE_THIN 2
step "create_snap" tl_msg pool create_snap 1 0
msg_fails "create_snap-duplicate-EEXIST" pool "$EEXIST_TEXT" create_snap 1 0
msg_fails "create_snap-missing-origin-ENODATA" pool "$ENODATA_TEXT" create_snap 3 7
msg_fails "create_snap-one-arg-EINVAL" pool "$EINVAL_TEXT" create_snap 3
msg_fails "delete-missing-ENODATA" pool "$ENODATA_TEXT" delete 9
msg_fails "delete-no-arg-EINVAL" pool "$EINVAL_TEXT" delete
msg_fails "unknown-message-EINVAL" pool "$EINVAL_TEXT" frobnicate 1
if tl_thin t pool 0 $LEN; then
  msg_fails "delete-active-EBUSY" pool "$EBUSY_TEXT" delete 0
  if out=$(dmsetup message t 0 create_thin 4 2>&1); then fail "message-to-thin-EINVAL" "accepted"
  else
    printf '%s' "$out" | grep -qF "$EINVAL_TEXT" && pass "message-to-thin-EINVAL" ||
      fail "message-to-thin-EINVAL" "$out"
  fi
  tl_wblk /dev/mapper/t 3 data 2
else
  fail "delete-active-EBUSY" "thin activate failed: $(dmesg | tail -n 1)"
fi
step "delete-inactive" tl_msg pool delete 16777215
msg_fails "delete-twice-ENODATA" pool "$ENODATA_TEXT" delete 16777215

# --- transaction id -------------------------------------------------------------------------------
expect_eq "transaction-id-0" "$(tl_pfield pool 1)" 0
step "set_transaction_id-0-1" tl_msg pool set_transaction_id 0 1
expect_eq "transaction-id-1" "$(tl_pfield pool 1)" 1
msg_fails "set_transaction_id-mismatch-EINVAL" pool "$EINVAL_TEXT" set_transaction_id 0 2
msg_fails "set_transaction_id-junk-EINVAL" pool "$EINVAL_TEXT" set_transaction_id 1 x
msg_fails "set_transaction_id-one-arg-EINVAL" pool "$EINVAL_TEXT" set_transaction_id 1
expect_eq "transaction-id-unchanged" "$(tl_pfield pool 1)" 1
step "set_transaction_id-1-big" tl_msg pool set_transaction_id 1 18446744073709551615
expect_eq "transaction-id-u64" "$(tl_pfield pool 1)" 18446744073709551615
step "set_transaction_id-big-2" tl_msg pool set_transaction_id 18446744073709551615 2

# --- metadata snapshot ----------------------------------------------------------------------------
expect_eq "no-held-root" "$(tl_pfield pool 4)" "-"
step "reserve_metadata_snap" tl_msg pool reserve_metadata_snap
held=$(tl_pfield pool 4)
if printf '%s' "$held" | grep -qE '^[0-9]+$' && [ "$held" -gt 0 ]; then pass "held-root-shown"; else
  fail "held-root-shown" "status field 4 is '$held'"
fi
msg_fails "reserve-twice-EBUSY" pool "$EBUSY_TEXT" reserve_metadata_snap
# Changes after the snapshot do not show in it.
step "create_thin-after-reserve" tl_msg pool create_thin 50
dump=$(thin_dump --metadata-snap "$META" 2>&1)
devs=$(printf '%s\n' "$dump" | grep -o '<device dev_id="[0-9]*"' | grep -o '[0-9]*' | sort -n | tr '\n' ' ')
expect_eq "metadata-snap-dump-devices" "$devs" "0 1 2 "
printf '%s\n' "$dump" | grep -q '<superblock .*transaction="2"' && pass "metadata-snap-dump-transaction" ||
  fail "metadata-snap-dump-transaction" "$(printf '%s\n' "$dump" | head -n 1)"
step "release_metadata_snap" tl_msg pool release_metadata_snap
expect_eq "held-root-released" "$(tl_pfield pool 4)" "-"
msg_fails "release-twice-EINVAL" pool "$EINVAL_TEXT" release_metadata_snap
msg_fails "reserve-extra-arg-EINVAL" pool "$EINVAL_TEXT" reserve_metadata_snap 1
step "delete-50" tl_msg pool delete 50

# --- teardown, thin_check, thin_dump --------------------------------------------------------------
step "remove-thin" tl_remove t
step "remove-pool" tl_remove pool
step "thin_check-clean" thin_check "$META"
dump=$(thin_dump "$META" 2>&1)
sb=$(printf '%s\n' "$dump" | grep -o '<superblock [^>]*>' | grep -o ' \(transaction\|data_block_size\|nr_data_blocks\)="[0-9]*"' | tr -d '\n')
expect_eq "thin_dump-superblock" "$sb" " transaction=\"2\" data_block_size=\"128\" nr_data_blocks=\"$NB\""
devs=$(printf '%s\n' "$dump" | grep -o '<device dev_id="[0-9]*" mapped_blocks="[0-9]*"' | tr -d '<"' | tr '\n' ' ')
expect_eq "thin_dump-devices" "$devs" "device dev_id=0 mapped_blocks=2 device dev_id=1 mapped_blocks=0 device dev_id=2 mapped_blocks=0 "

# --- read_only pool -------------------------------------------------------------------------------
if tl_pool pool "$META" "$DATA" $NB 0 read_only; then
  pass "read-only-pool-opens"
  st=$(tl_pstatus pool)
  expect_eq "read-only-status" "$(echo "$st" | cut -d' ' -f1,3-5,7-8)" "2 2/$NB - ro queue_if_no_space -"
  expect_eq "read-only-table-feature" "$(dmsetup table pool | cut -d' ' -f8-)" "1 read_only "
  msg_fails "read-only-message-EOPNOTSUPP" pool "$EOPNOTSUPP_TEXT" create_thin 9
  if tl_thin t pool 0 $LEN; then
    pass "read-only-thin-activates"
    expect_eq "read-only-reads" "$(tl_rblk_sum /dev/mapper/t 3 2)" "$(tl_pattern_sum data 2)"
    if tl_wblk /dev/mapper/t 20 x 2>"$TL_WORK/err"; then fail "read-only-write-unprovisioned-EIO" "write succeeded"
    else
      grep -qF "$EIO_TEXT" "$TL_WORK/err" && pass "read-only-write-unprovisioned-EIO" ||
        fail "read-only-write-unprovisioned-EIO" "$(cat "$TL_WORK/err")"
    fi
    step "read-only-write-provisioned" tl_wblk /dev/mapper/t 3 new
    tl_remove t
  else
    fail "read-only-thin-activates" "$(dmesg | tail -n 1)"
  fi
  # Back to read-write by a reload without the feature.
  if tl_pool_reload pool "$META" "$DATA" $NB 0; then
    expect_eq "reload-rw-mode" "$(tl_pfield pool 5)" "rw"
    step "reload-rw-message" tl_msg pool create_thin 9
  else
    fail "reload-rw-mode" "reload failed"
  fi
  tl_remove pool
  step "thin_check-after-read-only" thin_check "$META"
else
  fail "read-only-pool-opens" "$(dmesg | tail -n 1)"
fi

# --- unformatted metadata + read_only is refused (EPERM) ------------------------------------------
M2=$(tl_loop "$(tl_file meta2 8M)")
if out=$(dmsetup create ro2 --table "0 $((NB * TL_BS)) $POOL_TARGET $M2 $DATA $TL_BS 0 1 read_only" 2>&1); then
  TL_DEVS="ro2 $TL_DEVS"
  fail "read-only-unformatted-refused" "table accepted"
else
  printf '%s' "$out" | grep -qF "Operation not permitted" && pass "read-only-unformatted-refused" ||
    fail "read-only-unformatted-refused" "$(printf '%s' "$out" | tail -n 1)"
fi
finish
