#!/usr/bin/env bash
# Fetch and unpack Debian's linux-source-7.2 (the pinned version, scripts/env.sh) into the cache
# (once); print the source tree path. An unpacked tree of the pinned version is used without
# looking at the .deb or the network.
set -euo pipefail
. "$(dirname "$0")/env.sh"
src=$RTHIN_CACHE/src/linux-source-7.2_${RTHIN_KSRC_VERSION//:/%3a}_all
if [ ! -f "$src/.rthin-done" ]; then
  deb=$("$RTHIN_TOP/scripts/fetch-deb.sh" "$RTHIN_CACHE/debs" "$RTHIN_KSRC_SUITE" linux-source-7.2 "$RTHIN_KSRC_VERSION")
  [ "$(basename "$deb" .deb)" = "$(basename "$src")" ] || rthin_die "unexpected package file name $deb"
  rthin_log "unpacking $(basename "$src")"
  rm -rf "$src" && mkdir -p "$src"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards '*/linux-source-7.2.tar.xz' | tar -xJ -C "$src" --strip-components=1
  touch "$src/.rthin-done"
fi
echo "$src"
