#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: snapshot isolation checked against model images (whole-device md5 after
# writes to each side), exact used-block accounting of copy-on-write, a snapshot chain 50 deep
# (each a snapshot of the previous, a distinct block written in each, all verified), deleting an
# origin leaves its snapshots intact, data blocks return when the last owner is deleted.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/21-snapshots.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=1024                    # 64 MiB of data
LEN=$((128 * TL_BS))       # 8 MiB thins (128 blocks)
META=$(tl_loop "$(tl_file meta 16M)") && DATA=$(tl_loop "$(tl_file data 64M)") ||
  { fail setup "loop devices"; finish; }
if ! tl_pool pool "$META" "$DATA" $NB; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi

# mwrite DEV MODEL BLOCK SEED N: write N blocks of pattern SEED to DEV and to its model image.
mwrite() {
  tl_pattern "$4" $(($5 * TL_BLK)) >"$TL_WORK/w.src"
  timeout 60 /usr/bin/dd if="$TL_WORK/w.src" of="$1" bs="$TL_BLK" seek="$3" oflag=direct status=none &&
    dd if="$TL_WORK/w.src" of="$2" bs="$TL_BLK" seek="$3" conv=notrunc status=none
}
# same_as_model NAME DEV MODEL
same_as_model() { expect_eq "$1" "$(tl_dev_sum "$2")" "$(tl_file_sum "$3")" "device md5 vs model"; }

# --- isolation ----------------------------------------------------------------------------------
O=$TL_WORK/origin.model S=$TL_WORK/snap.model
truncate -s $((LEN * 512)) "$O"
step "create-origin" tl_msg pool create_thin 0
if ! tl_thin o pool 0 $LEN; then fail "origin-activate" "$(dmesg | tail -n 1)"; finish; fi
step "origin-write" mwrite /dev/mapper/o "$O" 0 A 64
same_as_model "origin-contents" /dev/mapper/o "$O"
expect_eq "origin-used" "$(tl_used pool)" 64

step "snap-of-active-origin" tl_snap pool 1 0 o
cp "$O" "$S"
if ! tl_thin s pool 1 $LEN; then fail "snap-activate" "$(dmesg | tail -n 1)"; finish; fi
same_as_model "snap-initial-contents" /dev/mapper/s "$S"
expect_eq "snap-shares-all-blocks" "$(tl_used pool)" 64
expect_eq "snap-initial-status" "$(tl_tstatus s)" "8192 8191"

step "origin-overwrite-shared" mwrite /dev/mapper/o "$O" 0 B 16        # blocks 0..15
step "snap-overwrite-shared" mwrite /dev/mapper/s "$S" 8 C 16          # 8..15 now snap-only, 16..23 shared
step "snap-write-unprovisioned" mwrite /dev/mapper/s "$S" 100 D 2
step "origin-write-unprovisioned" mwrite /dev/mapper/o "$O" 120 E 1
same_as_model "origin-isolated" /dev/mapper/o "$O"
same_as_model "snap-isolated" /dev/mapper/s "$S"
# 64 + 16 (origin 0..15) + 8 (snap 16..23; its 8..15 were left to it alone) + 2 + 1
expect_eq "cow-used-blocks" "$(tl_used pool)" 91
expect_eq "origin-status" "$(tl_tstatus o)" "$((65 * TL_BS)) $((121 * TL_BS - 1))"
expect_eq "snap-status" "$(tl_tstatus s)" "$((66 * TL_BS)) $((102 * TL_BS - 1))"
step "origin-rewrite-own-block" mwrite /dev/mapper/o "$O" 0 F 1
expect_eq "rewrite-own-block-no-alloc" "$(tl_used pool)" 91
same_as_model "origin-rewrite-contents" /dev/mapper/o "$O"

# A second snapshot of the origin while the first exists; deleting the origin keeps both.
step "second-snap-of-origin" tl_snap pool 2 0 o
step "remove-origin" tl_remove o
step "delete-origin" tl_msg pool delete 0
same_as_model "snap-intact-after-origin-delete" /dev/mapper/s "$S"
if tl_thin s2 pool 2 $LEN; then
  same_as_model "snap2-intact-after-origin-delete" /dev/mapper/s2 "$O"
  tl_remove s2
else
  fail "snap2-intact-after-origin-delete" "activate failed"
fi
# Blocks only the origin owned (none: snap 2 holds all of them) stay; delete snap 2 frees them.
expect_eq "used-after-origin-delete" "$(tl_used pool)" 91
step "delete-snap2" tl_msg pool delete 2
expect_eq "used-after-snap2-delete" "$(tl_used pool)" 66
step "remove-snap" tl_remove s
step "delete-snap" tl_msg pool delete 1
expect_eq "used-after-all-deleted" "$(tl_used pool)" 0

echo "info: isolation part done at ${SECONDS}s"
# --- chain of 50 snapshots ----------------------------------------------------------------------
CLEN=$((64 * TL_BS))   # 4 MiB thins
C=$TL_WORK/chain.model
truncate -s $((CLEN * 512)) "$C"
# cwrite K: write block K of pattern chain-K (base for 0) to the model and to /dev/mapper/c.
cwrite() {
  local seed=chain-$1
  [ "$1" = 0 ] && seed=base
  yes "rthin:$seed:" | dd of="$C" bs=$TL_BLK seek="$1" count=1 iflag=fullblock conv=notrunc status=none &&
    timeout 60 /usr/bin/dd if="$C" of=/dev/mapper/c bs=$TL_BLK skip="$1" seek="$1" count=1 oflag=direct status=none
}
ok=1
tl_msg pool create_thin 100 && tl_thin c pool 100 $CLEN && cwrite 0 && tl_remove c || ok=0
k=1
while [ $k -le 50 ] && [ $ok = 1 ]; do
  tl_msg pool create_snap $((100 + k)) $((100 + k - 1)) && tl_thin c pool $((100 + k)) $CLEN &&
    cwrite $k && tl_remove c || ok=0
  k=$((k + 1))
done
echo "info: chain built at ${SECONDS}s"
[ $ok = 1 ] && pass "chain-build-50" || fail "chain-build-50" "failed at depth $((k - 1)): $(dmesg | tail -n 1)"
# chain_sum K: md5 of the first K+1 blocks of the model (member K maps exactly blocks 0..K, as
# written) into sum.K.
chain_sum() {
  dd if="$C" of="$TL_WORK/cs" bs=$TL_BLK count=$(($1 + 1)) status=none
  tl_sum "$TL_WORK/cs" >"$TL_WORK/sum.$1"
}
k=0
while [ $k -le 50 ]; do
  dd if="$C" of="$TL_WORK/p.$k" bs=$TL_BLK count=$((k + 1)) status=none
  k=$((k + 1))
done
# shellcheck disable=SC2046
while read -r sum name; do echo "$sum" >"$TL_WORK/sum.${name#p.}"; done <<<"$(cd "$TL_WORK" && md5sum $(for k in $(seq 0 50); do echo "p.$k"; done))"
rm -f "$TL_WORK"/p.*
expect_eq "chain-used-blocks" "$(tl_used pool)" 51

# activate_chain K...: activate chain members K as cK in one dmsetup run.
activate_chain() {
  local k spec="" names=""
  for k in "$@"; do
    spec="$spec;c$k,,,rw,0 $CLEN $THIN_TARGET /dev/mapper/pool $((100 + k))"
    names="$names c$k"
  done
  # shellcheck disable=SC2086
  dmsetup create --concise "${spec#;}" && TL_DEVS="$names $TL_DEVS" && tl_link $names
}
# verify_chain K...: the active members cK read as their models (blocks 0..K: sum.K) and their
# status shows exactly blocks 0..K mapped (so the rest reads zero, which 22-status checks);
# prints the bad ones.
verify_chain() {
  local k bad="" name rest line sums
  for k in "$@"; do
    dd if="/dev/mapper/c$k" of="$TL_WORK/r.$k" bs=$TL_BLK count=$((k + 1)) iflag=direct status=none ||
      bad="$bad $k(read)"
  done
  # shellcheck disable=SC2046
  sums=$(cd "$TL_WORK" && md5sum $(for k in "$@"; do echo "r.$k"; done))
  while read -r line name; do
    k=${name#r.}
    [ "$line" = "$(cat "$TL_WORK/sum.$k")" ] || bad="$bad $k(data)"
  done <<<"$sums"
  # shellcheck disable=SC2046
  while read -r name rest; do
    k=${name#c}
    k=${k%:}
    [ "$rest" = "0 $CLEN $THIN_TARGET $(((k + 1) * TL_BS)) $(((k + 1) * TL_BS - 1))" ] || bad="$bad $k(status)"
  done <<<"$(if [ $# = 1 ]; then echo "c$1: $(dmsetup status "c$1")"; else
    dmsetup status $(for k in "$@"; do echo "c$k"; done); fi)"
  rm -f "$TL_WORK"/r.*
  echo "$bad"
}
all=$(seq 0 50)
# shellcheck disable=SC2086
if activate_chain $all; then
  pass "chain-activate-all"
  # shellcheck disable=SC2086
  expect_eq "chain-all-verified" "$(verify_chain $all)" "" "bad members"
  # Overwriting an inherited block deep in the chain copies it; the previous member keeps it.
  tl_wblk /dev/mapper/c50 10 cow50
  expect_eq "chain-deep-cow-alloc" "$(tl_used pool)" 52
  expect_eq "chain-deep-cow-new" "$(tl_rblk_sum /dev/mapper/c50 10)" "$(tl_pattern_sum cow50 1)"
  expect_eq "chain-deep-cow-old-kept" "$(tl_rblk_sum /dev/mapper/c49 10)" "$(tl_pattern_sum chain-10 1)"
  # shellcheck disable=SC2046
  dmsetup remove $(for k in $all; do echo "c$k"; done) && pass "chain-remove-all" ||
    fail "chain-remove-all" "dmsetup remove failed"
  # shellcheck disable=SC2046
  tl_forget $(for k in $all; do echo "c$k"; done)
else
  fail "chain-activate-all" "$(dmesg | tail -n 1)"
fi
echo "info: chain verified at ${SECONDS}s"
tl_pattern cow50 $TL_BLK >"$TL_WORK/cow50"
dd if="$TL_WORK/cow50" of="$C" bs=$TL_BLK seek=10 conv=notrunc status=none
chain_sum 50

step "chain-delete-origin" tl_msg pool delete 100
activate_chain 1 && expect_eq "chain-first-snap-intact" "$(verify_chain 1)" "" && tl_remove c1
k=101 ok=1
while [ $k -le 149 ]; do tl_msg pool delete $k || ok=0; k=$((k + 1)); done
[ $ok = 1 ] && pass "chain-delete-intermediates" || fail "chain-delete-intermediates" "a delete failed"
activate_chain 50 && expect_eq "chain-last-intact" "$(verify_chain 50)" "" && tl_remove c50
# member 50 alone holds its 51 blocks; the old block 10 went with the intermediates
expect_eq "chain-used-after-intermediates" "$(tl_used pool)" 51
step "chain-delete-last" tl_msg pool delete 150
expect_eq "chain-used-after-delete" "$(tl_used pool)" 0

echo "info: chain deleted at ${SECONDS}s"
step "remove-pool" tl_remove pool
step "thin_check-after-teardown" thin_check "$META"
finish
