#!/bin/ash
# shellcheck shell=dash  # busybox ash: checked as its closest relative
# PID 1 of the dm-rthin test guest: busybox ash (its applets run in-process: a faster boot than
# with bash, which is /bin/sh for the job); installed as /init by qemu/build-initramfs.sh.
#
# Mounts the pseudo filesystems, names the virtio disks, mounts the 9p shares, runs the job that
# qemu/run put in /rthin/run/job, reports its exit status on the second serial port (ttyS1, a
# file on the host that nothing the job prints to the console can reach), then powers off.
#
# Status channel protocol (one line each, read by qemu/run after QEMU exits):
#   status N          the job exited with N
#   error MESSAGE     the guest could not set up the job (N/A status; qemu/run exits 240)
#   syncfail MESSAGE  the final sync missed its deadline (qemu/run exits 244)
#   warning MESSAGE   something qemu/run repeats on the host
#
# Hangs: the final sync has a deadline (RTHIN_SYNC_DEADLINE, 20 s); when it passes, the blocked
# tasks are dumped on the console (sysrq w), "syncfail" is reported and the guest is reset
# (sysrq b: a stuck device cannot block it, unlike `poweroff`, which syncs first). A job that
# runs into qemu/run's --timeout gets the same dump shortly before the host kills the guest:
# the host asks for it with a line "dump" on the third serial port (ttyS2; the host's clock
# decides, as the guest's clock falls behind when the host is loaded).

export PATH=/rthin/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022

[ -e /dev/null ] || mount -t devtmpfs -o mode=0755 devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "rthin-init: $*"; }

# The status port, opened once; its node is removed so the job cannot write to it by accident.
status_fd_ok=0
# (A failed `exec` redirection would end the shell, and with it the guest: try it first.)
if [ -c /dev/ttyS1 ] && (: >/dev/ttyS1) 2>/dev/null; then
  exec 9>/dev/ttyS1
  status_fd_ok=1
  rm -f /dev/ttyS1
else
  say "cannot open /dev/ttyS1: the host will not learn the exit status"
fi
report() { [ $status_fd_ok = 1 ] && echo "$*" >&9; }

# Reset at once, without sync or device shutdown; QEMU runs with -no-reboot, so this ends it.
reset_now() {
  echo b >/proc/sysrq-trigger 2>/dev/null
  reboot -f -n
}

# The tasks in uninterruptible sleep, with their stacks, on the console. sysrq w prints them at
# KERN_INFO, below the console's loglevel: they are taken from the ring buffer and printed
# without their timestamps (so qemu/run's splat scan does not count the dump as a kernel splat).
dump_blocked() {
  dmesg -c >/dev/null 2>&1
  echo w >/proc/sysrq-trigger 2>/dev/null || { say "no /proc/sysrq-trigger: cannot dump blocked tasks"; return; }
  say "---- blocked tasks (sysrq w) ----"
  dmesg -s 1048576 | sed -e 's/^\[[ 0-9.]*\] //' -e 's/^/rthin-init: | /'
  say "---- end of blocked tasks ----"
}

sync_deadline=20
power_off() {
  # sync, with a deadline: a stuck device (e.g. a suspended dm table with dirty pages) must not
  # keep the guest alive, and data the job left unsynced is a failure, not a note.
  [ -z "${RTHIN_SYNC_DEADLINE:-}" ] || sync_deadline=$RTHIN_SYNC_DEADLINE
  (
    sleep "$sync_deadline"
    say "FAIL: the final sync did not finish within $sync_deadline s"
    dump_blocked
    report "syncfail the final sync did not finish within $sync_deadline s after the job"
    reset_now
  ) &
  sync
  kill $! 2>/dev/null
  ( sleep 10; say "poweroff did not finish within 10 s: resetting"; reset_now ) &
  poweroff -f -n
  sleep 15
  reset_now
}

fail_setup() {
  say "setup failed: $*"
  report "error $*"
  power_off
}

mkdir -p /proc /sys /dev/pts /dev/shm /tmp /run /root
mount -t proc proc /proc || fail_setup "mount /proc"
mount -t sysfs sysfs /sys || fail_setup "mount /sys"
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail_setup "mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail_setup "mount /dev/shm"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail_setup "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || fail_setup "mount /run"
mount -t debugfs debugfs /sys/kernel/debug || fail_setup "mount /sys/kernel/debug"
[ -d /sys/kernel/config ] && mount -t configfs configfs /sys/kernel/config 2>/dev/null
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
hostname rthin-guest

# Disks: QEMU gives each --disk NAME the virtio serial NAME.
mkdir -p /dev/rthin /dev/disk/by-id
for s in /sys/block/vd*/serial; do
  [ -r "$s" ] || continue
  dev=${s#/sys/block/}
  dev=${dev%/serial}
  read -r name <"$s"
  [ -n "$name" ] || continue
  ln -sfn "../../$dev" "/dev/disk/by-id/virtio-$name"
  [ "$name" = rthin-extra ] || ln -sfn "/dev/$dev" "/dev/rthin/$name"
done

# The read-only image with fio and its libraries (see qemu/build-initramfs.sh).
mkdir -p /opt/extra
if [ -e /dev/disk/by-id/virtio-rthin-extra ]; then
  mount -t ext4 -o ro /dev/disk/by-id/virtio-rthin-extra /opt/extra || fail_setup "mount of the extra image failed"
else
  say "warning: no rthin-extra disk: fio will not run"
fi

[ -f /rthin/run/config ] || fail_setup "no /rthin/run/config (was the per-run archive appended?)"
# shellcheck source=/dev/null
. /rthin/run/config

# Shares: lines "TAG GUESTDIR" (GUESTDIR may contain spaces, TAG cannot).
if [ -f /rthin/run/shares ]; then
  while read -r tag dir; do
    [ -n "$tag" ] || continue
    mkdir -p "$dir" || fail_setup "mkdir $dir"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none "$tag" "$dir" ||
      fail_setup "mount of 9p share $tag on $dir failed"
  done </rthin/run/shares
fi

kver=$(uname -r)
[ -f "/lib/modules/$kver/modules.dep" ] ||
  say "warning: no /lib/modules/$kver/modules.dep: modprobe will not work"
chmod 0755 /rthin/run/job

cd /root || fail_setup "cd /root"
set -- env -i \
  PATH="$PATH" HOME=/root TERM="${RTHIN_TERM:-linux}" LANG=C.UTF-8 USER=root LOGNAME=root \
  SHELL=/bin/sh TMPDIR=/tmp \
  RTHIN_KVER="$kver" RTHIN_KO="/lib/modules/$kver/extra/dm-rthin.ko" RTHIN_TESTS=/rthin/tests \
  RTHIN_GUEST=1
if [ "${RTHIN_INTERACTIVE:-0}" = 1 ]; then
  # a session with the serial console as controlling terminal, so ^C and job control work
  setsid cttyhack "$@" /rthin/run/job 9>&-
  rc=$?
else
  # Shortly before qemu/run's --timeout kills the guest, show what is stuck (the host asks).
  watchdog=''
  if [ -c /dev/ttyS2 ] && (: </dev/ttyS2) 2>/dev/null; then
    stty -F /dev/ttyS2 -echo 2>/dev/null
    # (opened here, before its node goes: the reader is a child that may start late)
    exec 8</dev/ttyS2
    rm -f /dev/ttyS2
    (
      while read -r request; do
        case $request in dump)
          say "the job is still running shortly before qemu/run's timeout"
          dump_blocked ;;
        esac
      done
    ) <&8 9>&- &
    watchdog=$!
    exec 8<&-
  fi
  "$@" /rthin/run/job </dev/null 9>&-
  rc=$?
  [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
fi
report "status $rc"
power_off
