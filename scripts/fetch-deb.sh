#!/usr/bin/env bash
# Download (never install) one Debian package from a newer suite, with a private apt configuration.
#
#   scripts/fetch-deb.sh DESTDIR SUITE PACKAGE [VERSION]
#
# The machine's apt configuration is left untouched: we keep our own sources list, lists and
# archive cache under $RTHIN_CACHE/apt-<suite>, and reuse the Debian mirror URI the machine already
# uses (so a machine behind a local mirror keeps working).  With VERSION, that exact version is
# taken if the suite still has it; otherwise the newest candidate is taken and we say so.
# Prints the path of the downloaded .deb on stdout.
set -euo pipefail
dest=$1 suite=$2 pkg=$3 want=${4:-}
cache=${RTHIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rthin}
root=$cache/apt-$suite
mkdir -p "$root/lists/partial" "$root/archives/partial" "$dest"

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
[ -n "$versions" ] || { echo "fetch-deb: $pkg not found in $suite at $mirror" >&2; exit 1; }
if [ -n "$want" ] && grep -qxF "$want" <<<"$versions"; then
  version=$want
else
  version=$(head -n1 <<<"$versions")
  [ -z "$want" ] || echo "fetch-deb: $suite no longer has $pkg $want; taking $version" >&2
fi
file=$(ls "$dest/${pkg}_${version//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$file" ]; then
  (cd "$dest" && apt-get "${apt_private[@]}" download "$pkg=$version" >&2)
  file=$(ls "$dest/${pkg}_${version//:/%3a}"_*.deb | head -n1)
fi
echo "$file"
