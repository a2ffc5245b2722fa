#!/usr/bin/env bash
# Download (never install) one pinned Debian package from a newer suite, with a private apt
# configuration.
#
#   scripts/fetch-deb.sh DESTDIR SUITE PACKAGE VERSION
#
# A .deb of exactly PACKAGE VERSION already in DESTDIR is used as it is: apt is not asked, so a
# warm cache keeps working when the suite moves on (trixie-backports keeps one version of a
# package). Otherwise the machine's apt configuration is left untouched: we keep our own sources
# list, lists and archive cache under $RTHIN_CACHE/apt-<suite>, and reuse the Debian mirror URI
# the machine already uses (so a machine behind a local mirror keeps working). If the suite no
# longer has VERSION, that is an error naming what to do: never another version in its place
# (for the kernel source that would silently change the kernel under test).
# Prints the path of the .deb on stdout.
set -euo pipefail
[ $# = 4 ] || { echo "usage: scripts/fetch-deb.sh DESTDIR SUITE PACKAGE VERSION" >&2; exit 2; }
dest=$1 suite=$2 pkg=$3 want=$4
cache=${RTHIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rthin}
mkdir -p "$dest"

# cached PACKAGE VERSION: the .deb in $dest holding exactly that package and version, if any.
cached() {
  local f
  # shellcheck disable=SC2016  # dpkg-deb's own ${field} syntax
  for f in "$dest/${pkg}_${want//:/%3a}"_*.deb; do
    [ -f "$f" ] || continue
    if [ "$(dpkg-deb --showformat='${Package} ${Version}' --show "$f" 2>/dev/null)" = "$pkg $want" ]; then
      echo "$f"
      return 0
    fi
    echo "fetch-deb: removing $f: not a complete $pkg $want package" >&2
    rm -f "$f"
  done
  return 1
}

if cached; then exit 0; fi

root=$cache/apt-$suite
mkdir -p "$root/lists/partial" "$root/archives/partial"
# The mirror: first deb.debian.org-style URI of a main Debian archive (not -security) on this machine.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
  sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
  grep -v -e security -e nodesource -e google | grep -m1 debian || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$root/sources.list"
: >"$root/status"

apt_private=(-o "Dir::Etc::SourceList=$root/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$root/lists" -o "Dir::State::status=$root/status"
  -o "Dir::Cache=$root" -o "Dir::Cache::archives=$root/archives" -o "APT::Architecture=amd64"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -q)

# Refresh the lists at most once a day.
if [ -z "$(find "$root/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
  apt-get "${apt_private[@]}" update >&2
fi

versions=$(apt-cache "${apt_private[@]}" madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}')
if ! grep -qxF "$want" <<<"$versions"; then
  echo "fetch-deb: error: $suite at $mirror no longer has $pkg $want (it has: $(tr '\n' ' ' <<<"${versions:-nothing}"| sed 's/ $//'));" \
    "put ${pkg}_${want}_*.deb (https://snapshot.debian.org/binary/$pkg/) into $dest, or move the pin in" \
    "scripts/env.sh to a version it has (a new kernel source means a new kernel under test)" >&2
  exit 1
fi
(cd "$dest" && apt-get "${apt_private[@]}" download "$pkg=$want" >&2)
cached || { echo "fetch-deb: error: apt-get download $pkg=$want left no such package in $dest" >&2; exit 1; }
