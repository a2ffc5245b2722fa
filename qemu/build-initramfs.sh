#!/usr/bin/env bash
# Build (once) the guest's base initramfs and print its path.
#
#   qemu/build-initramfs.sh
#
# The image is a gzip'd newc cpio holding busybox-static (all applets), bash, the device-mapper,
# e2fsprogs, util-linux and kmod binaries of this Debian host, thin-provisioning-tools 1.x
# (scripts/thin-tools.sh), every shared library `ldd` lists for them, and the guest init
# (qemu/guest-init.sh as /init).  Nothing per run lives here: qemu/run appends a second, small
# cpio with the modules, the tests and the command.
#
# fio is the exception: Debian links it with ceph, glusterfs, rdma and ICU (75 MB of libraries,
# which would make every boot seconds slower just to unpack them).  It lives, with all its
# libraries and its own dynamic loader, in `extra.ext4`, an ext4 image that qemu/run attaches
# read-only (virtio serial rthin-extra) and the guest mounts on /opt/extra; /usr/bin/fio in the
# initramfs is a wrapper that runs it from there.  Only the pages fio touches are ever read.
#
# Cache: $RTHIN_CACHE/guest/<key>/{base.cpio.gz,extra.ext4}, where <key> hashes this script, the
# guest init, the path, size and mtime of every binary copied in, and the mtime of dpkg's status
# file (so any package installation or upgrade, which may change a library, changes the key:
# the check stays a few stat calls, no ldd).  The directory also holds `manifest` (every path in the initramfs, one a line), which
# qemu/run uses to add only the libraries the image does not already have.
set -euo pipefail
shopt -s inherit_errexit
# shellcheck source-path=SCRIPTDIR source=../scripts/env.sh
. "$(dirname "$0")/../scripts/env.sh"
here=$RTHIN_TOP/qemu
init_script=$here/guest-init.sh

# Host binaries copied at their own path.  Busybox applets of the same name are dropped, so
# the guest runs the real tool whichever PATH order a script uses.
host_bins=(
  /usr/bin/bash
  /usr/sbin/dmsetup
  /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/tune2fs /usr/sbin/dumpe2fs /usr/sbin/resize2fs
  /usr/sbin/debugfs
  /usr/sbin/losetup /usr/sbin/blkdiscard /usr/sbin/blockdev /usr/sbin/blkid
  /usr/bin/mountpoint
  /usr/bin/kmod
  /usr/bin/dd
)
# Binaries that run from the read-only extra image (see above).
extra_bins=(/usr/bin/fio)
# name -> target, inside the image.  /bin/sh is bash, not busybox: Debian's busybox-static is
# built with FEATURE_SH_STANDALONE, so its ash runs its own applets (losetup, dd, modprobe,
# mke2fs, ...) even where PATH has the real tool; bash (in POSIX mode as sh) also has pipefail,
# which dash lacks.  busybox's shell stays available as /bin/ash.
host_links=(
  usr/sbin/mkfs.ext4:mke2fs usr/sbin/mkfs.ext2:mke2fs usr/sbin/fsck.ext4:e2fsck
  bin/bash:../usr/bin/bash
  bin/sh:bash
)
kmod_names=(insmod rmmod modprobe depmod lsmod modinfo)

[ -f "$init_script" ] || rthin_die "missing $init_script"
for b in "${host_bins[@]}" "${extra_bins[@]}"; do
  [ -x "$b" ] || rthin_die "$b is missing on this host (run scripts/setup.sh)"
done
busybox=/usr/bin/busybox
[ -x "$busybox" ] || rthin_die "busybox-static is missing (run scripts/setup.sh)"
# scripts/thin-tools.sh asks apt about the package each time (a second): skip it when its
# unpacked directory is already complete.
tpt=$RTHIN_CACHE/tools/thin-provisioning-tools_${RTHIN_TPT_VERSION}_amd64/usr/sbin
[ -f "$tpt/../../.rthin-done" ] || tpt=$("$RTHIN_TOP/scripts/thin-tools.sh")
pdata=$tpt/pdata_tools
[ -x "$pdata" ] || rthin_die "no pdata_tools in $tpt"
mapfile -t tpt_links < <(find "$tpt" -maxdepth 1 -type l -lname pdata_tools -printf '%f\n' | sort)

key=$( {
  set -e
  cat "$0" "$init_script"
  printf '%s\n' "${tpt_links[@]}"
  for f in "$busybox" "${host_bins[@]}" "${extra_bins[@]}" "$pdata" /var/lib/dpkg/status; do
    stat -L -c '%n %s %Y' "$f"
  done
} | sha256sum | cut -c1-16) || rthin_die "cannot stat the image's inputs"
out=$RTHIN_CACHE/guest/$key
if [ -f "$out/extra.ext4" ]; then
  echo "$out/base.cpio.gz"
  exit 0
fi

# Shared libraries (and the dynamic loader) of every dynamic binary, as `ldd` resolves them.
libs_of() {
  local b
  for b in "$@"; do
    ldd "$b" || rthin_die "ldd $b failed"
  done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } NF == 2 && $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' |
    sort -u
}
mapfile -t libs < <(libs_of "${host_bins[@]}" "$pdata")
[ ${#libs[@]} -gt 0 ] || rthin_die "ldd found no libraries (is ldd working?)"
mapfile -t extra_libs < <(libs_of "${extra_bins[@]}")

mkdir -p "$RTHIN_CACHE/guest"
exec 8>"$RTHIN_CACHE/guest/.lock"
flock 8
if [ -f "$out/extra.ext4" ]; then  # built by a concurrent run while we waited
  echo "$out/base.cpio.gz"
  exit 0
fi
rthin_log "building the guest base initramfs in $out"
tmp=$(mktemp -d "$RTHIN_CACHE/guest/.build.XXXXXX")
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,usr/lib,etc,root,tmp,proc,sys,dev,run,mnt,rthin}
chmod 1777 "$root/tmp"

# busybox and its applets (symlinks to /bin/busybox at the paths busybox itself lists)
install -m 0755 "$busybox" "$root/bin/busybox"
while IFS= read -r applet; do
  case $applet in bin/busybox | linuxrc | '') continue ;; esac
  mkdir -p "$root/$(dirname "$applet")"
  ln -sfn /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)

drop_applet() {  # drop_applet NAME: remove busybox's NAME wherever it is
  local d
  for d in bin sbin usr/bin usr/sbin; do
    if [ -L "$root/$d/$1" ] && [ "$(readlink "$root/$d/$1")" = /bin/busybox ]; then
      rm -f "$root/$d/$1"
    fi
  done
}

copy_file() {  # copy_file HOSTPATH [ROOT]: the file's content at the same path in the image
  local r=${2:-$root}
  mkdir -p "$r/$(dirname "$1")"
  cp -L --preserve=mode "$1" "$r/$1"
}

for b in "${host_bins[@]}"; do
  drop_applet "$(basename "$b")"
  copy_file "$b"
done
for l in "${host_links[@]}"; do
  name=${l%%:*}
  drop_applet "$(basename "$name")"
  ln -sfn "${l#*:}" "$root/$name"
done
# kmod: /sbin/modprobe is what the kernel's request_module() runs (CONFIG_MODPROBE_PATH)
for n in "${kmod_names[@]}"; do
  drop_applet "$n"
  ln -sfn ../usr/bin/kmod "$root/sbin/$n"
done
# thin-provisioning-tools: one binary, many names
install -m 0755 "$pdata" "$root/usr/sbin/pdata_tools"
for n in "${tpt_links[@]}"; do
  drop_applet "$n"
  ln -sfn pdata_tools "$root/usr/sbin/$n"
done
for l in "${libs[@]}"; do
  copy_file "$l"
done
if [ -e /etc/mke2fs.conf ]; then cp /etc/mke2fs.conf "$root/etc/"; fi

# The extra image: each binary with its libraries at their own paths; in the initramfs a wrapper
# that runs it with the extra image's loader and libraries.
xroot=$tmp/extra
xlibdirs=$(for l in "${extra_libs[@]}"; do dirname "$l"; done | sort -u | sed 's|^|/opt/extra|' | paste -sd:)
for b in "${extra_bins[@]}" "${extra_libs[@]}"; do
  copy_file "$b" "$xroot"
done
for b in "${extra_bins[@]}"; do
  drop_applet "$(basename "$b")"
  mkdir -p "$root/$(dirname "$b")"
  cat >"$root/$b" <<EOF
#!/bin/sh
# $(basename "$b") runs from the read-only extra image (see qemu/build-initramfs.sh)
[ -x /opt/extra$b ] || { echo "$(basename "$b"): /opt/extra is not mounted (no rthin-extra disk)" >&2; exit 127; }
exec /opt/extra/lib64/ld-linux-x86-64.so.2 --library-path $xlibdirs --argv0 "\$0" /opt/extra$b "\$@"
EOF
  chmod 0755 "$root/$b"
done
mkdir -p "$root/opt/extra"
# size: contents + 25% + 8 MiB for ext4's own metadata
xsize_kb=$(($(du -sk "$xroot" | cut -f1) * 5 / 4 + 8192))
truncate -s "${xsize_kb}K" "$tmp/extra.ext4"
mke2fs -q -F -t ext4 -O ^has_journal -L rthin-extra -E root_owner=0:0 -d "$xroot" "$tmp/extra.ext4" >&2 ||
  rthin_die "mke2fs of the extra image failed"
rm -rf "$xroot"

# minimal /etc
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ndisk:x:6:\n' >"$root/etc/group"
printf 'rthin-guest\n' >"$root/etc/hostname"
: >"$root/etc/fstab"
ln -sfn /proc/self/mounts "$root/etc/mtab"
install -m 0755 "$init_script" "$root/init"

# The kernel opens /dev/console for init before anything is mounted: it must be in the image.
if ! mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null; then
  rthin_log "warning: cannot mknod /dev/console (not root?): the guest init reopens it after mounting devtmpfs"
fi

# Every dynamic binary must run with only what the image holds: ask the image's own loader
# (needs chroot, so root; as anyone else the guest's first use would show a missing library).
check_bins() {
  local f out_ldd
  for f in "${host_bins[@]}" /usr/sbin/pdata_tools; do
    if ! out_ldd=$(chroot "$root" /lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1) ||
      grep -q 'not found' <<<"$out_ldd"; then
      rthin_die "in the image, $f misses libraries: $out_ldd"
    fi
  done
}
if [ "$(id -u)" = 0 ]; then check_bins; fi

(cd "$root" && find . -mindepth 1 | sed 's|^\./|/|' | sort) >"$tmp/manifest"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 >"$tmp/base.cpio.gz"
rm -rf "$root"
trap - EXIT
rm -rf "$out"
mv "$tmp" "$out"
rthin_log "guest base initramfs: $(du -h "$out/base.cpio.gz" | cut -f1), extra image $(du -h --apparent-size "$out/extra.ext4" | cut -f1) ($out)"
echo "$out/base.cpio.gz"
