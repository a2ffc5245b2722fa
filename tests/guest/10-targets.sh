#!/bin/sh
# Guest test: the rthin-pool and rthin targets register, autoload, accept well-formed tables and
# refuse malformed ones with dm-thin's reason (checked in dmesg) and errno (checked in dmsetup's
# message). Runs inside the guest: qemu/run -- sh /rthin/tests/guest/10-targets.sh
#
# Devices: the built-in RAM disks /dev/ram0../dev/ram3 (4 MiB each) as metadata and data devices.
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"

META=/dev/ram0
DATA=/dev/ram1
OTHER=/dev/ram2
LEN=8192 # sectors: the whole 4 MiB data device

# devnum NAME: major:minor of a dm device.
devnum() { dmsetup info -c --noheadings -o major,minor "$1" | tr -d ' '; }

# try_table NAME TABLE: load TABLE into a new device NAME; output: dmsetup's messages.
try_table() { dmsetup create "$1" --table "$2" 2>&1; }

# refused NAME TARGET REASON ERRNO_TEXT TABLE: creating a device with TABLE must fail, the
# kernel log must show "<TARGET>: <REASON>" and dmsetup must report ERRNO_TEXT.
refused() {
  name=$1 target=$2 reason=$3 errtext=$4 table=$5
  dmesg -c >/dev/null
  if out=$(try_table "t_refused" "$table"); then
    fail "$name" "table was accepted: $table"
    dmsetup remove t_refused >/dev/null 2>&1
    return
  fi
  dmsetup remove t_refused >/dev/null 2>&1
  if ! dmesg | grep -qF "$target: $reason"; then
    fail "$name" "no '$target: $reason' in dmesg: $(dmesg | grep -F 'device-mapper: table' | tail -n 1)"
  elif ! printf '%s' "$out" | grep -qF "$errtext"; then
    fail "$name" "dmsetup did not report '$errtext': $(printf '%s' "$out" | head -n 1)"
  else
    pass "$name"
  fi
}

# reload_refused NAME DEVICE REASON ERRNO_TEXT TABLE: reloading DEVICE with TABLE must fail the
# same way, leaving the live table alone.
reload_refused() {
  name=$1 dev=$2 reason=$3 errtext=$4 table=$5
  dmesg -c >/dev/null
  if out=$(dmsetup reload "$dev" --table "$table" 2>&1); then
    fail "$name" "reload was accepted: $table"
    dmsetup clear "$dev" >/dev/null 2>&1
    return
  fi
  if ! dmesg | grep -qF "rthin-pool: $reason"; then
    fail "$name" "no 'rthin-pool: $reason' in dmesg: $(dmesg | grep -F 'device-mapper: table' | tail -n 1)"
  elif ! printf '%s' "$out" | grep -qF "$errtext"; then
    fail "$name" "dmsetup did not report '$errtext': $(printf '%s' "$out" | head -n 1)"
  else
    pass "$name"
  fi
}

EINVAL="Invalid argument"
EBUSY="Device or resource busy"

for d in $META $DATA $OTHER; do
  [ -b "$d" ] || { fail "ram-disks" "$d missing (CONFIG_BLK_DEV_RAM=y expected)"; finish; }
done
# A fresh pool would find zeroes; keep it that way for whoever comes next.
dd if=/dev/zero of=$META bs=4096 count=1 conv=fsync 2>/dev/null

# --- registration and autoload --------------------------------------------------------------

rmmod dm_rthin >/dev/null 2>&1
if lsmod | grep -q '^dm_rthin '; then
  fail "autoload-precondition" "dm_rthin is loaded and cannot be removed"
fi
if try_table pool "0 $LEN rthin-pool $META $DATA 128 0" >/dev/null; then
  if lsmod | grep -q '^dm_rthin '; then pass "autoload-on-create"; else
    fail "autoload-on-create" "table loaded but dm_rthin is not in lsmod"
  fi
else
  fail "autoload-on-create" "dmsetup create with rthin-pool failed: $(dmesg | tail -n 1)"
fi
targets=$(dmsetup targets)
for t in rthin-pool rthin; do
  if printf '%s\n' "$targets" | grep -qx "$t *v1\.24\.0"; then pass "targets-list-$t"; else
    fail "targets-list-$t" "dmsetup targets lacks '$t v1.24.0'"
  fi
done

# --- a well-formed pool ------------------------------------------------------------------------

meta_nr=$(cat /sys/class/block/"${META#/dev/}"/dev)
data_nr=$(cat /sys/class/block/"${DATA#/dev/}"/dev)
pool_nr=$(devnum pool)
table=$(dmsetup table pool)
expected="0 $LEN rthin-pool $meta_nr $data_nr 128 0 0 "
if [ "$table" = "$expected" ]; then pass "pool-table-line"; else
  fail "pool-table-line" "got '$table', expected '$expected'"
fi
# A fresh pool on 4 MiB devices: 1024 metadata blocks (the reserve, min(4096, 1024/10), counts
# as used), 64 data blocks of 64 KiB, metadata low water mark min(1024, 1024/4).
status=$(dmsetup status pool)
case $status in
  "0 $LEN rthin-pool 0 "*"/1024 0/64 - rw discard_passdown queue_if_no_space - 256 ") pass "pool-status-fresh" ;;
  *) fail "pool-status-fresh" "got '$status'" ;;
esac
check "pool-message-create-thin" dmsetup message pool 0 create_thin 0
if out=$(dmsetup message pool 0 create_thin 0 2>&1); then
  fail "pool-message-duplicate-refused" "message accepted twice"
elif printf '%s' "$out" | grep -qF "File exists"; then
  pass "pool-message-duplicate-refused"
else
  fail "pool-message-duplicate-refused" "unexpected: $out"
fi

# I/O to the pool device itself goes to the data device (dm-thin's pool_map), untouched.
printf 'rthin-pool-passthrough' | dd of=/dev/dm-"${pool_nr#*:}" bs=512 seek=100 conv=fsync 2>/dev/null
got=$(dd if=$DATA bs=512 skip=100 count=1 2>/dev/null | head -c 22)
if [ "$got" = "rthin-pool-passthrough" ]; then pass "pool-io-reaches-data-dev"; else
  fail "pool-io-reaches-data-dev" "data device holds '$got'"
fi

# Reload with the same devices reuses the pool object; features show in the table line. As in
# dm-thin, the block size printed is the pool object's (fixed when it was created), not the
# reloaded table's.
if dmsetup reload pool --table "0 $LEN rthin-pool $META $DATA 256 10 3 Skip_Block_Zeroing ERROR_IF_NO_SPACE no_discard_passdown" &&
  dmsetup resume pool; then
  table=$(dmsetup table pool)
  expected="0 $LEN rthin-pool $meta_nr $data_nr 128 10 3 skip_block_zeroing no_discard_passdown error_if_no_space "
  if [ "$table" = "$expected" ]; then pass "pool-reload-features"; else
    fail "pool-reload-features" "got '$table', expected '$expected'"
  fi
else
  fail "pool-reload-features" "reload with the same devices was refused: $(dmesg | tail -n 1)"
fi

reload_refused "pool-reload-other-metadata" pool "different pool cannot replace a pool" "$EINVAL" \
  "0 $LEN rthin-pool $OTHER $DATA 128 0"
reload_refused "pool-reload-disable-discard" pool "Discard support cannot be disabled once enabled" \
  "$EINVAL" "0 $LEN rthin-pool $META $DATA 128 0 1 ignore_discard"
refused "pool-metadata-in-use" rthin-pool "metadata device already in use by a pool" "$EBUSY" \
  "0 $LEN rthin-pool $META $OTHER 128 0"

# --- malformed pool tables ---------------------------------------------------------------------

P="0 $LEN rthin-pool"
refused "pool-no-args" rthin-pool "Invalid argument count" "$EINVAL" "$P"
refused "pool-three-args" rthin-pool "Invalid argument count" "$EINVAL" "$P $META $DATA 128"
refused "pool-same-device" rthin-pool "Error setting metadata or data device" "$EINVAL" \
  "$P $META $META 128 0"
refused "pool-missing-metadata-dev" rthin-pool "Error opening metadata block device" "" \
  "$P /dev/nonexistent $DATA 128 0"
refused "pool-missing-data-dev" rthin-pool "Error getting data device" "" \
  "$P $OTHER /dev/nonexistent 128 0"
refused "pool-block-size-too-small" rthin-pool "Invalid block size" "$EINVAL" "$P $OTHER $DATA 64 0"
refused "pool-block-size-zero" rthin-pool "Invalid block size" "$EINVAL" "$P $OTHER $DATA 0 0"
refused "pool-block-size-too-big" rthin-pool "Invalid block size" "$EINVAL" \
  "$P $OTHER $DATA 4194304 0"
refused "pool-block-size-not-multiple" rthin-pool "Invalid block size" "$EINVAL" \
  "$P $OTHER $DATA 192 0"
refused "pool-block-size-not-number" rthin-pool "Invalid block size" "$EINVAL" \
  "$P $OTHER $DATA 128k 0"
refused "pool-low-water-not-number" rthin-pool "Invalid low water mark" "$EINVAL" \
  "$P $OTHER $DATA 128 -1"
refused "pool-low-water-overflow" rthin-pool "Invalid low water mark" "$EINVAL" \
  "$P $OTHER $DATA 128 18446744073709551616"
refused "pool-unknown-feature" rthin-pool "Unrecognised pool feature requested" "$EINVAL" \
  "$P $OTHER $DATA 128 0 1 bogus_feature"
refused "pool-too-many-features" rthin-pool "Invalid number of pool feature arguments" "$EINVAL" \
  "$P $OTHER $DATA 128 0 5 skip_block_zeroing ignore_discard no_discard_passdown read_only error_if_no_space"
refused "pool-feature-count-short" rthin-pool "Invalid number of pool feature arguments" "$EINVAL" \
  "$P $OTHER $DATA 128 0 2 skip_block_zeroing"
refused "pool-feature-count-junk" rthin-pool "Invalid number of pool feature arguments" "$EINVAL" \
  "$P $OTHER $DATA 128 0 one skip_block_zeroing"

# --- thin tables -------------------------------------------------------------------------------

T="0 2048 rthin"
refused "thin-one-arg" rthin "Invalid argument count" "$EINVAL" "$T $pool_nr"
refused "thin-four-args" rthin "Invalid argument count" "$EINVAL" "$T $pool_nr 0 $OTHER extra"
refused "thin-origin-is-pool" rthin "Error setting origin device" "$EINVAL" "$T $pool_nr 0 $pool_nr"
refused "thin-missing-pool-dev" rthin "Error opening pool device" "" "$T /dev/nonexistent 0"
refused "thin-dev-id-too-big" rthin "Invalid device id" "$EINVAL" "$T $pool_nr 16777216"
refused "thin-dev-id-not-number" rthin "Invalid device id" "$EINVAL" "$T $pool_nr 1x"
refused "thin-pool-not-dm" rthin "Couldn't get pool mapped device" "$EINVAL" "$T $OTHER 0"
if dmsetup create notpool --table "0 $LEN zero" >/dev/null 2>&1; then
  refused "thin-no-pool-object" rthin "Couldn't find pool object" "$EINVAL" "$T $(devnum notpool) 0"
  dmsetup remove notpool
else
  fail "thin-no-pool-object" "could not create a dm-zero device"
fi
refused "thin-no-such-device" rthin "Couldn't open thin internal device" "No data available" \
  "$T $pool_nr 7"
if try_table thin0 "$T $pool_nr 0" >/dev/null; then
  pass "thin-activate"
  status=$(dmsetup status thin0)
  if [ "$status" = "0 2048 rthin 0 -" ]; then pass "thin-status-empty"; else
    fail "thin-status-empty" "got '$status'"
  fi
  check "thin-remove" dmsetup remove thin0
else
  fail "thin-activate" "thin table refused: $(dmesg | tail -n 1)"
fi

# --- teardown ----------------------------------------------------------------------------------

check "pool-remove" dmsetup remove pool
# shellcheck disable=SC2016 # expanded by the inner shell
check "no-devices-left" sh -c '[ -z "$(dmsetup ls | grep -v "No devices found")" ]'
check "rmmod" rmmod dm_rthin
check "targets-gone" sh -c '! dmsetup targets | grep -q rthin'
finish
