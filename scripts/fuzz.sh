#!/usr/bin/env bash
# Time-bounded fuzzing of the metadata engine (userspace/fuzz, target open_and_walk): arbitrary
# metadata images are opened and walked; any panic, overflow or sanitizer report fails.
#   scripts/fuzz.sh [SECONDS]        (default 60)
# cargo-fuzz is pinned and installed into the cache; stable rustc runs it with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs -Z flags), so no nightly toolchain is required.
set -euo pipefail
. "$(dirname "$0")/env.sh"
seconds=${1:-60}
version=0.13.1
root=$RTHIN_CACHE/tools/cargo-fuzz-$version
if ! "$root/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$version"; then
  rthin_log "installing cargo-fuzz $version"
  cargo install --quiet cargo-fuzz --version "$version" --locked --root "$root" >&2
fi
cd "$RTHIN_TOP/userspace/fuzz"
# The corpus lives in the cache, so what one run learns the next starts from (a fresh clone too).
corpus=$RTHIN_CACHE/fuzz-corpus/open_and_walk
[ -f "$corpus/a.img" ] || ./make-corpus.sh "$corpus" >/dev/null
export RUSTC_BOOTSTRAP=1
# Every run adds inputs and each start replays them all: past 1000, minimise the corpus first.
if [ "$(find "$corpus" -type f | wc -l)" -gt 1000 ]; then
  "$root/bin/cargo-fuzz" cmin --sanitizer none --target-dir "$RTHIN_CACHE/fuzz-target" open_and_walk "$corpus" --fuzz-dir .
fi
echo "corpus: $corpus ($(find "$corpus" -type f | wc -l) inputs)"
# No sanitizer: the engine has no unsafe code, and ASan needs a nightly-built std.
exec "$root/bin/cargo-fuzz" run --sanitizer none --target-dir "$RTHIN_CACHE/fuzz-target" open_and_walk "$corpus" --fuzz-dir . -- -max_total_time="$seconds" -rss_limit_mb=2048
