#!/usr/bin/env bash
# Unpack (once) thin-provisioning-tools 1.x from Debian trixie (the pinned version, scripts/env.sh)
# into the cache and print the directory holding its binaries (thin_check, thin_dump,
# thin_restore, thin_ls, ...). An unpacked copy of the pinned version is used without looking at
# the .deb or the network.
# The 1.x binary runs on Debian 12; bookworm's 0.9.0 misses wrong reference counts and leaks.
# The package is unpacked, never installed.
set -euo pipefail
. "$(dirname "$0")/env.sh"
dir=$RTHIN_CACHE/tools/thin-provisioning-tools_${RTHIN_TPT_VERSION//:/%3a}_amd64
if [ ! -f "$dir/.rthin-done" ]; then
  deb=$("$RTHIN_TOP/scripts/fetch-deb.sh" "$RTHIN_CACHE/debs" "$RTHIN_TPT_SUITE" thin-provisioning-tools "$RTHIN_TPT_VERSION")
  [ "$(basename "$deb" .deb)" = "$(basename "$dir")" ] || rthin_die "unexpected package file name $deb"
  rm -rf "$dir" && mkdir -p "$dir"
  dpkg-deb -x "$deb" "$dir"
  # pdata_tools is one multi-call binary; the thin_* names are symlinks to it.
  "$dir/usr/sbin/thin_check" -V >/dev/null || rthin_die "unpacked thin_check does not run on this machine"
  touch "$dir/.rthin-done"
fi
echo "$dir/usr/sbin"
