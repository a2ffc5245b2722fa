#!/usr/bin/env bash
# Self-test of the QEMU harness (qemu/run) on the host.
#
#   tests/host/qemu-selftest.sh [qemu/run options, e.g. --kernel debug]
#
# One line per check: "PASS <name>" or "FAIL <name>: <why>"; exits 1 if any check failed.
# The console of every guest run is kept in a log directory, printed at the end when a check
# failed (removed otherwise).
#
# Boots are batched: every check that needs no boot of its own runs in one guest (the "batch"
# boot, its results written to a share); each exit status and each kind of hang or crash gets
# its own boot, and the slow hang boots (mostly idle guests) run in parallel with the rest.
# Guest commands are in single quotes on purpose: they expand in the guest.
# shellcheck disable=SC2016
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
run=$top/qemu/run
common=("$@")
# shellcheck source-path=SCRIPTDIR source=../../scripts/env.sh
. "$top/scripts/env.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/rthin-selftest.XXXXXX")
logs=$work/logs
mkdir -p "$logs"
failed=0
bg_pids=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$failed" = 0 ]; then rm -rf "$work"; else echo "logs kept in $logs" >&2; fi
}
trap cleanup EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }

# guest NAME [qemu/run args...]: run the guest, console+stderr in $logs/NAME.log; sets rc, secs
rc=0 secs=0
guest() {
  local name=$1 t0
  shift
  t0=$(date +%s%N)
  rc=0
  "$run" "${common[@]}" "$@" >"$logs/$name.log" 2>&1 </dev/null || rc=$?
  secs=$((($(date +%s%N) - t0) / 1000000))
  secs=$((secs / 1000)).$(printf %03d $((secs % 1000)))
}
# expect NAME WANT [qemu/run args...]: the run must exit with WANT
expect() {
  local name=$1 want=$2
  shift 2
  guest "$name" "$@"
  if [ "$rc" = "$want" ]; then pass "$name"; else fail "$name" "exit status $rc, want $want (log: $name.log)"; fi
}
# in_log NAME ERE: the log of run NAME has a line matching ERE
in_log() { grep -qaE -- "$2" "$logs/$1.log"; }

# background NAME [qemu/run args...]: like guest, in the background; its exit status and wall
# time go to $work/NAME.rc and $work/NAME.secs (read them with collect_bg NAME).
background() {
  local name=$1
  shift
  (
    guest "$name" "$@"
    echo "$rc" >"$work/$name.rc"
    echo "$secs" >"$work/$name.secs"
  ) &
  bg_pids+=($!)
}
collect_bg() {
  wait "${bg_pids[0]}" || true
  bg_pids=("${bg_pids[@]:1}")
  rc=$(cat "$work/$1.rc" 2>/dev/null || echo none)
  secs=$(cat "$work/$1.secs" 2>/dev/null || echo 0)
}

# The kernel tree in use (for the oops module and to know whether dm-rthin.ko fits it).
variant=release
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --kernel=*) variant=${!i#--kernel=} ;;
    --kernel) j=$((i + 1)); variant=${!j:-release} ;;
  esac
done
kdir=$("$top/scripts/build-kernel.sh" "$variant" 2>/dev/null || true)
[ -n "$kdir" ] || { fail kernel "no $variant kernel (scripts/build-kernel.sh $variant)"; exit 1; }

# ------------------------------------------------------------------------------------------
# Hangs and crashes, each reported as what it is. A task blocks forever on a suspended dm
# device (I/O to it is queued until a resume that never comes). Started first, in parallel:
# the guests are idle while they wait.

# A job that leaves dirty data for a suspended device: the final sync cannot finish; it must
# be named as such (244) within its deadline, with the blocked tasks on the console.
background stuck-sync --smp 1 --timeout 240 -- sh -c '
  set -e
  dmsetup create stuck --table "0 8192 linear /dev/ram0 0"
  dmsetup mknodes stuck
  mkfs.ext4 -q /dev/mapper/stuck
  mkdir -p /mnt/stuck && mount /dev/mapper/stuck /mnt/stuck
  echo "dirty data" >/mnt/stuck/file
  dmsetup suspend --nolockfs stuck
  echo "job done, data still dirty"'
# A task blocked forever in the job (waiting for the writeback of what it wrote; submit_bio_wait
# would not do: it waits in slices to dodge the detector): the hung-task detector names it and
# ends the guest (242).
block_forever='
  set -e
  dmsetup create stuck --table "0 8192 linear /dev/ram0 0"
  dmsetup mknodes stuck
  dmsetup suspend stuck
  dd if=/dev/zero of=/dev/mapper/stuck bs=4096 count=1 conv=fsync'
background hung-task --smp 1 --timeout 240 -- sh -c "$block_forever"
# The same with the detector off: the run ends at --timeout (241), and the blocked tasks are
# dumped on the console before the host kills the guest.
background timeout-dump --smp 1 --timeout 90 --append sysctl.kernel.hung_task_timeout_secs=0 -- sh -c "$block_forever"

# A deliberate oops: a module whose init dereferences NULL, built against the guest's kernel.
odir=$work/oops
mkdir -p "$odir"
cat >"$odir/rthin_oops.c" <<'EOF'
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
static int __init rthin_oops_init(void)
{
	int *volatile p = NULL;

	*p = 1;
	return 0;
}
module_init(rthin_oops_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("qemu-selftest: oops on load");
EOF
echo 'obj-m := rthin_oops.o' >"$odir/Kbuild"
if make -s -C "$kdir" M="$odir" "${RTHIN_KMAKE_ARGS[@]}" modules >"$logs/oops-build.log" 2>&1; then
  expect oops 242 --share "$odir:/oops" -- sh -c 'insmod /oops/rthin_oops.ko; echo "still alive after the oops"; exit 0'
  if in_log oops 'kernel splat on the console \(kernel oops: .*NULL pointer dereference' &&
    ! in_log oops 'still alive after the oops'; then
    pass oops-named
  else
    fail oops-named "qemu/run did not name the NULL dereference as a kernel oops, or the guest ran on (log: oops.log)"
  fi
else
  fail oops "could not build the oops module against $kdir (log: oops-build.log)"
fi

# ------------------------------------------------------------------------------------------
# The batch boot: everything that needs no boot of its own. Its checks write PASS/FAIL lines
# to the share; the exit status must be 0 (which also proves that a clean boot, and a command
# printing WARNING:/BUG: lines itself, do not trip the splat scan).
share=$work/share
mkdir -p "$share"
echo "from the host" >"$share/in.txt"
bdir=$work/bin
mkdir -p "$bdir"
probe=''
for b in /usr/bin/zstd /usr/bin/file /usr/bin/bc; do
  if [ -x "$b" ]; then probe=$(basename "$b"); cp "$b" "$bdir/"; break; fi
done
# The repository's dm-rthin.ko only loads into the kernel tree it was built against (struct
# module layout differs between release and debug): check it only when that is the tree in use.
ko=0
if ! [ -f "$top/dm-rthin.ko" ]; then
  echo "note: no dm-rthin.ko in the repository: modprobe-dm-rthin not checked" >&2
elif ! grep -qF "$kdir/" "$top/.dm-rthin.ko.cmd" 2>/dev/null; then
  echo "note: dm-rthin.ko was not built against the $variant kernel ($kdir): modprobe-dm-rthin not checked" >&2
else
  ko=1
fi
cat >"$work/batch.sh" <<'EOF'
#!/bin/sh
out=/results/batch.txt
: >$out
# t NAME: run the check function of that name in a subshell with set -e; record the outcome.
t() {
  if (set -e; "$1") >/tmp/t.log 2>&1; then echo "PASS $1" >>$out; else
    echo "FAIL $1: $(tail -n 3 /tmp/t.log | tr '\n' ' ')" >>$out
    sed "s/^/  $1: /" /tmp/t.log
  fi
}
script_args() {
  [ "$ARGC" = 3 ] && [ "$A1" = "a b" ] && [ "$A2" = "it's" ] && [ "$A3" = '$HOME;*' ]
}
ARGC=$# A1=${1:-} A2=${2:-} A3=${3:-}
guest_env() {
  [ "$(pwd)" = /root ] && [ "$HOME" = /root ]
  [ "$RTHIN_TESTS" = /rthin/tests ] && [ -d "$RTHIN_TESTS" ]
  [ "$RTHIN_KO" = "/lib/modules/$(uname -r)/extra/dm-rthin.ko" ]
  [ "$RTHIN_SELFTEST" = "x y" ]
  mountpoint -q /proc && mountpoint -q /sys && mountpoint -q /tmp && mountpoint -q /sys/kernel/debug
  [ -c /dev/null ] && [ -e /dev/fd/0 ]
  case ":$PATH:" in *:/rthin/bin:*) ;; *) exit 3 ;; esac
}
smp_2() { echo "nproc=$(nproc)"; [ "$(nproc)" = 2 ]; }
guest_tools() {
  set -x
  thin_check -V | grep -q "^1\.1\."
  thin_dump -V >/dev/null && thin_restore -V >/dev/null && thin_ls -V >/dev/null
  fio --version
  dmsetup version
  bash -c "true"
  # the real tools, not busybox applets, whatever shell runs them
  modprobe --version | grep -q kmod
  losetup --version | grep -q util-linux
  dd --version | grep -q coreutils
  mke2fs -V 2>&1 | grep -q "EXT2FS Library"
  sh -c "set -o pipefail"
  truncate -s 32M /tmp/f.img
  dev=$(losetup -f --show /tmp/f.img)
  mkfs.ext4 -q "$dev"
  e2fsck -fn "$dev" >/dev/null
  blockdev --getsize64 "$dev" | grep -qx 33554432
  blkdiscard "$dev"
  losetup -d "$dev"
  echo abc | md5sum | grep -q 0bee89b07a248e27c83fc3d5951213c1
  echo abc | sha256sum >/dev/null
}
bin_dir() {
  [ -n "$PROBE" ] || { echo "none of zstd, file, bc on the host to test with"; exit 1; }
  [ "$(command -v "$PROBE")" = "/rthin/bin/$PROBE" ] && "$PROBE" --version
}
# dm autoloads the C reference target; then it loads by hand too
dm_autoload() {
  if dmsetup targets | grep -q "^thin-pool "; then echo "thin-pool loaded before use"; exit 6; fi
  dd if=/dev/zero of=/dev/rthin/meta bs=4096 count=1 2>/dev/null
  dmsetup create selftest-pool --table "0 131072 thin-pool /dev/rthin/meta /dev/rthin/data 128 0"
  dmsetup status selftest-pool
  dmsetup remove selftest-pool
  lsmod | grep -q "^dm_thin_pool"
}
modprobe_dm_thin_pool() { modprobe dm-thin-pool; dmsetup targets | grep -q "^thin-pool "; }
# by the alias dm's request_module("dm-rthin-pool") asks for, as device-mapper autoload does;
# KUnit suites do not run at load unless asked for (run-all.sh asks)
modprobe_dm_rthin() {
  [ -f "$RTHIN_KO" ]
  modprobe dm-rthin-pool; lsmod | grep -q "^dm_rthin"
  [ -z "$(ls /sys/kernel/debug/kunit/ 2>/dev/null)" ] || { echo "KUnit ran at load"; exit 1; }
  modprobe -r dm-rthin
  printf '*' >/sys/module/kunit/parameters/filter_glob
  modprobe dm-rthin
  ls -d /sys/kernel/debug/kunit/rthin_* >/dev/null
  modprobe -r dm-rthin
}
share_guest() {
  grep -qx "from the host" /results/in.txt
  echo "from the guest" >/results/out.txt
  mkdir -p /results/sub && echo nested >/results/sub/n.txt
}
disk_first_boot() {
  [ -b /dev/rthin/pool ] && [ -b /dev/disk/by-id/virtio-pool ]
  [ "$(blockdev --getsize64 /dev/rthin/pool)" = 67108864 ]
  echo "rthin persistence marker" | dd of=/dev/rthin/pool bs=512 seek=2048 conv=sync,fsync 2>/dev/null
}
for c in script_args guest_env smp_2 guest_tools bin_dir dm_autoload modprobe_dm_thin_pool share_guest \
  disk_first_boot; do
  t $c
done
[ "$KO" = 0 ] || t modprobe_dm_rthin
# a userspace "WARNING:"/"BUG:" line is not a kernel splat (the run must still exit 0)
echo "WARNING: just a userspace line"; echo "BUG: neither"; echo "Call Trace:"
exit 0
EOF
state=$work/state
guest batch --smp 2 --env RTHIN_SELFTEST='x y' --env PROBE="$probe" --env KO=$ko --bin-dir "$bdir" \
  --disk meta=8M --disk data=64M --state-dir "$state" --disk pool=64M --share "$share:/results" \
  --script "$work/batch.sh" "a b" "it's" '$HOME;*'
boot_secs=$secs
if [ "$rc" = 0 ]; then pass status-0; pass no-false-splat; else
  fail status-0 "exit status $rc, want 0 (log: batch.log)"
  fail no-false-splat "exit status $rc (242 would be a false splat; log: batch.log)"
fi
want=(script_args guest_env smp_2 guest_tools bin_dir dm_autoload modprobe_dm_thin_pool share_guest disk_first_boot)
[ $ko = 0 ] || want+=(modprobe_dm_rthin)
for c in "${want[@]}"; do
  line=$(grep -E "^(PASS|FAIL) $c(:|$)" "$share/batch.txt" 2>/dev/null || true)
  name=${c//_/-}
  case $line in
    "PASS $c") pass "$name" ;;
    "FAIL $c: "*) fail "$name" "${line#FAIL "$c": } (log: batch.log)" ;;
    *) fail "$name" "no result from the batch boot (log: batch.log)" ;;
  esac
done
if [ "$(cat "$share/out.txt" 2>/dev/null)" = "from the guest" ] && [ "$(cat "$share/sub/n.txt" 2>/dev/null)" = nested ]; then
  pass share-roundtrip
else
  fail share-roundtrip "out.txt: $(head -c 100 "$share/out.txt" 2>&1)"
fi

# --- disks persist across boots with --state-dir (the batch boot wrote the marker)
size=$(stat -c %s "$state/pool.img" 2>/dev/null || echo missing)
guest disk-second-boot --state-dir "$state" --disk pool=1G -- sh -c '
  [ "$(blockdev --getsize64 /dev/rthin/pool)" = 67108864 ] || exit 4
  dd if=/dev/rthin/pool bs=512 skip=2048 count=1 2>/dev/null | grep -q "rthin persistence marker"'
if [ "$rc" = 0 ] && [ "$size" = 67108864 ]; then
  pass disk-persistence
else
  fail disk-persistence "second boot $rc (4: size changed), image size $size"
fi

# --- exit statuses: the console cannot forge the status (the job prints a fake report and exits 3)
expect status-unforgeable 3 -- sh -c 'echo "status 0"; echo "RTHIN-STATUS 0"; exit 3'
expect no-status 243 -- poweroff -f
expect bad-usage 240 --smp 0 -- true

# --- kernel splats: a BUG and a WARN written to the kernel log, both printed by qemu/run
expect splat-detected 242 -- sh -c "echo '<2>BUG: rthin selftest fake splat' >/dev/kmsg
  echo '<4>------------[ cut here ]------------' >/dev/kmsg
  echo '<4>WARNING: CPU: 0 PID: 1 at fake.c:1 rthin_selftest_fake_warn+0x0/0x0' >/dev/kmsg"
if in_log splat-detected 'rthin selftest fake splat' && in_log splat-detected 'rthin_selftest_fake_warn' &&
  in_log splat-detected 'kernel splat'; then
  pass splat-lines-printed
else
  fail splat-lines-printed "qemu/run did not print the offending lines"
fi

# --- the hangs started at the top
collect_bg stuck-sync
if [ "$rc" = 244 ] && [ "${secs%.*}" -lt 120 ] && in_log stuck-sync 'stuck device: the final sync did not finish' &&
  in_log stuck-sync '^rthin-init: \| task:sync .* state:D'; then
  pass stuck-sync
else
  fail stuck-sync "exit status $rc after $secs s; want 244 within 120 s, named, with the blocked sync task (log: stuck-sync.log)"
fi
collect_bg hung-task
if [ "$rc" = 242 ] && [ "${secs%.*}" -lt 120 ] && in_log hung-task 'kernel splat on the console \(hung task: task dd:[0-9]+ blocked'; then
  pass hung-task
else
  fail hung-task "exit status $rc after $secs s; want 242 within 120 s, named as a hung dd task (log: hung-task.log)"
fi
collect_bg timeout-dump
if [ "$rc" = 241 ] && [ "${secs%.*}" -lt 120 ] && in_log timeout-dump 'blocked tasks were dumped' &&
  in_log timeout-dump '^rthin-init: \| task:dd .* state:D'; then
  pass timeout-dump
else
  fail timeout-dump "exit status $rc after $secs s; want 241 within 120 s with the blocked dd task dumped (log: timeout-dump.log)"
fi

echo "boot time (batch boot, host wall): $boot_secs s" >&2
exit $failed
