#!/bin/sh
# Guest test: rthin-pool/rthin refuse malformed tables with exactly the reason and errno that
# the kernel's C thin-pool/thin print, and print the same pool table line. Each table is loaded
# once with the C target and once with ours; dm core's log line
#   device-mapper: table: <dev>: <type>: <reason> (<errno>)
# must match after the type name.
# Runs inside the guest: qemu/run -- sh /rthin/tests/guest/11-compare-dm-thin.sh
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"

META=/dev/ram2
DATA=/dev/ram3
LEN=8192

if ! modprobe dm-thin-pool || ! modprobe dm-rthin; then
  fail "modules-load" "modprobe dm-thin-pool or dm-rthin failed"
  finish
fi
dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null

devnum() { dmsetup info -c --noheadings -o major,minor "$1" | tr -d ' '; }

# reason TYPE ARGS [LEN]: the "<reason> (<errno>)" dm core logs when a TYPE table with ARGS is
# refused, or "accepted".
reason() {
  dmesg -c >/dev/null
  if dmsetup create t_cmp --table "0 ${3:-$LEN} $1 $2" >/dev/null 2>&1; then
    dmsetup remove t_cmp >/dev/null 2>&1
    echo accepted
    return
  fi
  dmsetup remove t_cmp >/dev/null 2>&1
  dmesg | sed -n "s/.*device-mapper: table: [0-9:]*: $1: //p" | tail -n 1
}

# same NAME C_TYPE OUR_TYPE ARGS: both refuse ARGS the same way. Every case here is meant to be
# refused: the C target accepting it means the case no longer tests what it says (both
# accepting would otherwise compare equal and pass).
same() {
  c=$(reason "$2" "$4")
  ours=$(reason "$3" "$4")
  if [ "$c" = accepted ]; then
    fail "$1" "C $2 accepted '$4', which this case expects to be refused ($3: $ours)"
  elif [ -z "$c" ]; then
    fail "$1" "no reason logged for C $2 '$4'"
  elif [ "$c" = "$ours" ]; then
    pass "$1"
  else
    fail "$1" "C $2: '$c'; $3: '$ours'"
  fi
}

M=$META D=$DATA
same cmp-pool-no-args thin-pool rthin-pool ""
same cmp-pool-three-args thin-pool rthin-pool "$M $D 128"
same cmp-pool-same-dev thin-pool rthin-pool "$M $M 128 0"
same cmp-pool-same-dev-before-features thin-pool rthin-pool "$M $M 128 0 1 bogus"
same cmp-pool-missing-meta thin-pool rthin-pool "/dev/nonexistent $D 128 0"
same cmp-pool-missing-data thin-pool rthin-pool "$M /dev/nonexistent 128 0"
same cmp-pool-missing-dev-before-bs thin-pool rthin-pool "$M /dev/nonexistent 64 0"
same cmp-pool-bs-64 thin-pool rthin-pool "$M $D 64 0"
same cmp-pool-bs-192 thin-pool rthin-pool "$M $D 192 0"
same cmp-pool-bs-huge thin-pool rthin-pool "$M $D 4194304 0"
same cmp-pool-bs-junk thin-pool rthin-pool "$M $D 128k 0"
same cmp-pool-lwm-junk thin-pool rthin-pool "$M $D 128 x"
same cmp-pool-lwm-overflow thin-pool rthin-pool "$M $D 128 18446744073709551616"
same cmp-pool-feature-unknown thin-pool rthin-pool "$M $D 128 0 1 bogus"
same cmp-pool-feature-5 thin-pool rthin-pool "$M $D 128 0 5 a b c d e"
same cmp-pool-feature-short thin-pool rthin-pool "$M $D 128 0 2 read_only"
same cmp-pool-feature-junk thin-pool rthin-pool "$M $D 128 0 x"
same cmp-pool-feature-before-bs thin-pool rthin-pool "$M $D 64 0 1 bogus"
# sscanf("%u") truncates 2^32 + 1 to 1, so this is one unknown feature in both.
same cmp-pool-feature-count-wraps thin-pool rthin-pool "$M $D 128 0 4294967297 bogus"

# queue_limits NAME: the I/O limits of dm device NAME that pool_io_hints() shapes.
queue_limits() {
  q=/sys/block/dm-$(devnum "$1" | cut -d: -f2)/queue
  for f in max_sectors_kb minimum_io_size optimal_io_size discard_granularity discard_max_bytes; do
    printf '%s=%s ' "$f" "$(cat "$q/$f")"
  done
}

# same_pool NAME ARGS: a well-formed pool table gives the same table line and queue limits with
# the C target as with ours (the C pool formats the metadata device; ours ignores it).
same_pool() {
  name=$1 args=$2
  dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null
  if ! dmsetup create cpool --table "0 $LEN thin-pool $args" >/dev/null 2>&1; then
    fail "$name" "C thin-pool refused '$args': $(dmesg | tail -n 1)"
    return
  fi
  c_table=$(dmsetup table cpool | sed 's/ thin-pool / POOL /')
  c_limits=$(queue_limits cpool)
  dmsetup remove cpool
  if ! dmsetup create rpool --table "0 $LEN rthin-pool $args" >/dev/null 2>&1; then
    fail "$name" "rthin-pool refused '$args': $(dmesg | tail -n 1)"
    return
  fi
  r_table=$(dmsetup table rpool | sed 's/ rthin-pool / POOL /')
  r_limits=$(queue_limits rpool)
  dmsetup remove rpool
  if [ "$c_table" != "$r_table" ]; then
    fail "$name" "table: C '$c_table'; rthin '$r_table'"
  elif [ "$c_limits" != "$r_limits" ]; then
    fail "$name" "limits: C '$c_limits'; rthin '$r_limits'"
  else
    pass "$name"
    echo "  ($name: $r_limits)"
  fi
}

same_pool cmp-pool-good-features "$M $D 256 7 3 ERROR_IF_NO_SPACE skip_block_zeroing Ignore_Discard"
same_pool cmp-pool-good-plain "$M $D 384 0"
same_pool cmp-pool-good-no-passdown "$M $D 128 0 1 no_discard_passdown"
same_pool cmp-pool-good-big-block "$M $D 1024 5 1 error_if_no_space"
dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null

# Thin tables whose failure does not depend on pool state.
if dmsetup create zero --table "0 $LEN zero" >/dev/null 2>&1; then
  Z=$(devnum zero)
  same cmp-thin-one-arg thin rthin "$Z"
  same cmp-thin-four-args thin rthin "$Z 0 $DATA x"
  same cmp-thin-origin-is-pool thin rthin "$Z 0 $Z"
  same cmp-thin-missing-pool thin rthin "/dev/nonexistent 0"
  same cmp-thin-missing-origin thin rthin "$Z 0 /dev/nonexistent"
  same cmp-thin-dev-id-big thin rthin "$Z 16777216"
  same cmp-thin-dev-id-junk thin rthin "$Z 12ab"
  same cmp-thin-pool-not-dm thin rthin "$DATA 0"
  same cmp-thin-no-pool-object thin rthin "$Z 0"
  dmsetup remove zero
else
  fail "cmp-thin" "could not create a dm-zero device"
fi

check "cleanup-rmmod" rmmod dm_rthin
finish
