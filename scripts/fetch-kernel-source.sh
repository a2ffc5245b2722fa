#!/usr/bin/env bash
# Fetch and unpack Debian's linux-source-7.2 into the cache (once); print the source tree path.
set -euo pipefail
. "$(dirname "$0")/env.sh"
deb=$("$RTHIN_TOP/scripts/fetch-deb.sh" "$RTHIN_CACHE/debs" "$RTHIN_KSRC_SUITE" linux-source-7.2 "$RTHIN_KSRC_VERSION")
name=$(basename "$deb" .deb)
src=$RTHIN_CACHE/src/$name
if [ ! -f "$src/.rthin-done" ]; then
  rthin_log "unpacking $name"
  rm -rf "$src" && mkdir -p "$src"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards '*/linux-source-7.2.tar.xz' | tar -xJ -C "$src" --strip-components=1
  touch "$src/.rthin-done"
fi
echo "$src"
