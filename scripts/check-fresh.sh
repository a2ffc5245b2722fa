#!/usr/bin/env bash
# `make check-fresh`: the README's two commands (`make demo`, `make check`) on a fresh clone, as
# root in a clean Debian 12 root: a `debootstrap`ped bookworm (default variant: the required
# and important packages of a minimal install) with the sources a standard install has (bookworm,
# bookworm-updates, bookworm-security), nothing else. Its tarball is cached in
# $RTHIN_CACHE/fresh/; every run unpacks a new root and removes it afterwards.
#
#   scripts/check-fresh.sh [--reuse-kernel] [--keep]
#
# --reuse-kernel  bind-mounts this machine's built guest kernels (read-only) into the fresh root,
#                 so the run skips the ~20 minute kernel build; the kernel cache key (source
#                 version, config, rustc, bindgen, gcc, libclang) must still match, which is a
#                 check of its own. Everything else (packages, bindgen, kernel source, userspace,
#                 tools, guest image) starts from nothing.
# --keep          keep the fresh root afterwards (its path is printed).
#
# Inside, after the two commands, scripts/toolchain.sh shows where every tool came from and the
# run fails if anything lives in /root/.cargo or /usr/local. Exit status: that of the run.
set -euo pipefail
. "$(dirname "$0")/env.sh"
reuse_kernel=0 keep=0
for a in "$@"; do
  case $a in
    --reuse-kernel) reuse_kernel=1 ;;
    --keep) keep=1 ;;
    *) rthin_die "usage: scripts/check-fresh.sh [--reuse-kernel] [--keep]" ;;
  esac
done
[ "$(id -u)" = 0 ] || rthin_die "check-fresh needs root (debootstrap, chroot, mounts)"

fresh=$RTHIN_CACHE/fresh
mkdir -p "$fresh"
tarball=$fresh/debian12-bookworm-amd64.tar.gz
mirror=http://deb.debian.org/debian
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    rthin_log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
  }
  rthin_log "debootstrap of Debian 12 (bookworm) from $mirror (once; cached as $tarball)"
  tmp=$(mktemp -d "$fresh/debootstrap.XXXXXX")
  debootstrap --arch=amd64 bookworm "$tmp" "$mirror" >&2
  rm -rf "$tmp"/var/cache/apt/archives/*.deb
  tar -C "$tmp" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$tmp"
fi

root=$(mktemp -d "$fresh/root.XXXXXX")
mounts=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -R "${mounts[i]}" 2>/dev/null || umount -R -l "${mounts[i]}" || true; done
  if [ "$keep" = 1 ]; then
    rthin_log "fresh root kept in $root"
  elif awk -v r="$root/" 'index($2 "/", r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    # never delete through a mount that is still there (/dev and /sys are the host's)
    rthin_log "warning: something is still mounted under $root; not removing it"
  else
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT
mnt() { mount "$@"; mounts+=("${!#}"); }

rthin_log "fresh Debian 12 root in $root"
tar -C "$root" -xzf "$tarball"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
# The network, as this machine has it: its resolver and its site CAs (a TLS-intercepting proxy
# signs with one; ca-certificates, installed by setup, picks them up from there).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
# A chroot has no init: packages must not try to start services in it (the usual policy-rc.d).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mnt -t proc proc "$root/proc"
mnt --rbind /sys "$root/sys"
mnt --rbind /dev "$root/dev"
mnt -t tmpfs tmpfs "$root/tmp"
# the fresh clone: HEAD of this repository, as `git clone` gives it
git clone -q --no-local "$RTHIN_TOP" "$root/root/dm-rthin"
if [ $reuse_kernel = 1 ]; then
  mkdir -p "$root/root/.cache/rthin/kernel"
  mnt --bind -o ro "$RTHIN_CACHE/kernel" "$root/root/.cache/rthin/kernel"
  mount -o remount,bind,ro "$root/root/.cache/rthin/kernel"
fi

rthin_log "make demo, then make check, in the fresh root (a cold run: packages, bindgen, builds)"
start=$SECONDS
rc=0
# shellcheck disable=SC2016  # the script runs in the fresh root
chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/bash -c '
    set -e
    cd /root/dm-rthin
    # The README starts at `make ...`: make itself is the one thing a minimal Debian lacks that
    # its two commands presuppose (scripts/setup.sh installs everything else).
    if ! command -v make >/dev/null; then
      echo "== apt-get install make (the README commands are make targets)"
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make
    fi
    time make demo
    time make check
    echo "== where the tools came from"
    scripts/toolchain.sh
    # (/usr/local/man is the base system'"'"'s own symlink; the site CAs were put there above)
    leftovers=$(find /root/.cargo /usr/local -mindepth 1 -not -type d -not -path /usr/local/man \
      -not -path "/usr/local/share/ca-certificates/*" 2>/dev/null | head)
    if [ -n "$leftovers" ]; then echo "files outside what set-up manages:"; echo "$leftovers"; exit 1; fi
    echo "nothing in /root/.cargo or /usr/local"' || rc=$?
rthin_log "check-fresh: exit $rc after $((SECONDS - start)) s"
exit $rc
