#!/usr/bin/env bash
# Self-test of the QEMU harness (qemu/run) on the host.
#
#   tests/host/qemu-selftest.sh [qemu/run options, e.g. --kernel debug]
#
# One line per check: "PASS <name>" or "FAIL <name>: <why>"; exits 1 if any check failed.
# The console of every guest run is kept in a log directory, printed at the end when a check
# failed (removed otherwise).
# Guest commands are in single quotes on purpose: they expand in the guest.
# shellcheck disable=SC2016
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
run=$top/qemu/run
common=("$@")

work=$(mktemp -d "${TMPDIR:-/tmp}/rthin-selftest.XXXXXX")
logs=$work/logs
mkdir -p "$logs"
failed=0
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
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

# --- exit status propagation (and a clean boot does not trip the splat scan: that would be 242)
expect status-0 0 -- true
boot_secs=$secs
expect status-1 1 -- false
expect status-42 42 -- sh -c 'exit 42'
# the console cannot forge the status: the job prints a fake report and exits 3
expect status-unforgeable 3 -- sh -c 'echo "status 0"; echo "RTHIN-STATUS 0"; exit 3'
# a userspace "WARNING:"/"BUG:" line is not a kernel splat
expect no-false-splat 0 -- sh -c 'echo "WARNING: just a userspace line"; echo "BUG: neither"; echo "Call Trace:"'

# --- --script from outside the repository, with awkward arguments
sdir=$(mktemp -d "$work/script.XXXXXX")
cat >"$sdir/args.sh" <<'EOF'
#!/bin/sh
[ "$#" = 3 ] || { echo "want 3 arguments, got $#"; exit 7; }
[ "$1" = "a b" ] || { echo "arg 1: '$1'"; exit 8; }
[ "$2" = "it's" ] || { echo "arg 2: '$2'"; exit 9; }
[ "$3" = '$HOME;*' ] || { echo "arg 3: '$3'"; exit 10; }
exit 5
EOF
expect script-args 5 --script "$sdir/args.sh" "a b" "it's" '$HOME;*'

# --- the guest environment
expect guest-env 0 --env RTHIN_SELFTEST='x y' -- sh -c '
  set -e
  [ "$(pwd)" = /root ] && [ "$HOME" = /root ]
  [ "$RTHIN_TESTS" = /rthin/tests ] && [ -d "$RTHIN_TESTS" ]
  [ "$RTHIN_KO" = "/lib/modules/$(uname -r)/extra/dm-rthin.ko" ]
  [ "$RTHIN_SELFTEST" = "x y" ]
  mountpoint -q /proc && mountpoint -q /sys && mountpoint -q /tmp && mountpoint -q /sys/kernel/debug
  [ -c /dev/null ] && [ -e /dev/fd/0 ]
  case ":$PATH:" in *:/rthin/bin:*) ;; *) exit 3 ;; esac'
expect smp-2 0 --smp 2 -- sh -c 'echo "nproc=$(nproc)"; [ "$(nproc)" = 2 ]'
expect guest-tools 0 -- sh -c '
  set -x
  set -e
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
  echo abc | sha256sum >/dev/null'

# --- --bin-dir: executables land in /rthin/bin, with the libraries the base image lacks
bdir=$work/bin
mkdir -p "$bdir"
probe=''
for b in /usr/bin/zstd /usr/bin/file /usr/bin/bc; do
  if [ -x "$b" ]; then probe=$b; break; fi
done
if [ -n "$probe" ]; then
  cp "$probe" "$bdir/"
  expect bin-dir 0 --bin-dir "$bdir" -- sh -c "[ \"\$(command -v $(basename "$probe"))\" = /rthin/bin/$(basename "$probe") ] && $(basename "$probe") --version"
else
  fail bin-dir "none of zstd, file, bc on the host to test with"
fi

# --- kernel modules: the C reference target loads by hand and by dm autoload
expect modprobe-dm-thin-pool 0 -- sh -c 'set -e; modprobe dm-thin-pool; lsmod; dmsetup targets | tee /dev/stderr | grep -q "^thin-pool "'
expect dm-autoload 0 --disk meta=8M --disk data=64M -- sh -c '
  set -e
  if dmsetup targets | grep -q "^thin-pool "; then echo "thin-pool loaded before use"; exit 6; fi
  dd if=/dev/zero of=/dev/rthin/meta bs=4096 count=1 2>/dev/null
  dmsetup create selftest-pool --table "0 131072 thin-pool /dev/rthin/meta /dev/rthin/data 128 0"
  dmsetup status selftest-pool
  dmsetup remove selftest-pool
  lsmod | grep -q "^dm_thin_pool"'
# The repository's dm-rthin.ko only loads into the kernel tree it was built against (struct
# module layout differs between release and debug): check it only when that is the tree in use.
variant=release
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --kernel=*) variant=${!i#--kernel=} ;;
    --kernel) j=$((i + 1)); variant=${!j:-release} ;;
  esac
done
kdir=$("$top/scripts/build-kernel.sh" "$variant" 2>/dev/null || true)
if ! [ -f "$top/dm-rthin.ko" ]; then
  echo "note: no dm-rthin.ko in the repository: modprobe-dm-rthin not checked" >&2
elif [ -z "$kdir" ] || ! grep -qF "$kdir/" "$top/.dm-rthin.ko.cmd" 2>/dev/null; then
  echo "note: dm-rthin.ko was not built against the $variant kernel ($kdir): modprobe-dm-rthin not checked" >&2
else
  # by the alias dm's request_module("dm-rthin-pool") asks for, as device-mapper autoload does
  expect modprobe-dm-rthin 0 --module "$top/dm-rthin.ko" -- sh -c 'set -e; [ -f "$RTHIN_KO" ]
    modprobe dm-rthin-pool; lsmod | grep -q "^dm_rthin"; modprobe -r dm-rthin; modprobe dm-rthin'
fi

# --- disks persist across boots with --state-dir
state=$work/state
guest disk-first-boot --state-dir "$state" --disk pool=64M -- sh -c '
  set -e
  [ -b /dev/rthin/pool ] && [ -b /dev/disk/by-id/virtio-pool ]
  [ "$(blockdev --getsize64 /dev/rthin/pool)" = 67108864 ]
  echo "rthin persistence marker" | dd of=/dev/rthin/pool bs=512 seek=2048 conv=sync,fsync 2>/dev/null'
first=$rc
size=$(stat -c %s "$state/pool.img" 2>/dev/null || echo missing)
guest disk-second-boot --state-dir "$state" --disk pool=1G -- sh -c '
  [ "$(blockdev --getsize64 /dev/rthin/pool)" = 67108864 ] || exit 4
  dd if=/dev/rthin/pool bs=512 skip=2048 count=1 2>/dev/null | grep -q "rthin persistence marker"'
if [ "$first" = 0 ] && [ "$rc" = 0 ] && [ "$size" = 67108864 ]; then
  pass disk-persistence
else
  fail disk-persistence "first boot $first, second boot $rc (4: size changed), image size $size"
fi

# --- shares: host -> guest and guest -> host, default and explicit guest dir
share=$work/share
mkdir -p "$share"
echo "from the host" >"$share/in.txt"
guest share "--share=$share" --share "$share:/results" -- sh -c '
  set -e
  grep -qx "from the host" /mnt/share/in.txt
  echo "from the guest" >/mnt/share/out.txt
  mkdir -p /results/sub && echo nested >/results/sub/n.txt'
if [ "$rc" = 0 ] && [ "$(cat "$share/out.txt" 2>/dev/null)" = "from the guest" ] &&
  [ "$(cat "$share/sub/n.txt" 2>/dev/null)" = nested ]; then
  pass share-roundtrip
else
  fail share-roundtrip "exit status $rc; out.txt: $(head -c 100 "$share/out.txt" 2>&1)"
fi

# --- failure detection
expect splat-detected 242 -- sh -c "echo '<2>BUG: rthin selftest fake splat' >/dev/kmsg; exit 0"
if grep -q 'rthin selftest fake splat' "$logs/splat-detected.log" &&
  grep -q 'kernel splat' "$logs/splat-detected.log"; then
  pass splat-lines-printed
else
  fail splat-lines-printed "qemu/run did not print the offending line"
fi
expect warn-detected 242 -- sh -c "echo '<4>------------[ cut here ]------------' >/dev/kmsg; echo '<4>WARNING: CPU: 0 PID: 1 at fake.c:1 fake+0x0/0x0' >/dev/kmsg"
guest timeout --timeout 20 -- sleep 1000
if [ "$rc" = 241 ] && [ "${secs%.*}" -lt 60 ]; then
  pass timeout
else
  fail timeout "exit status $rc after $secs s, want 241 within 60 s"
fi
expect no-status 243 -- poweroff -f
expect bad-usage 240 --smp 0 -- true

echo "boot time (qemu/run -- true, host wall): $boot_secs s" >&2
exit $failed
