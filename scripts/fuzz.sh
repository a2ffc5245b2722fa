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
./make-corpus.sh >/dev/null
export RUSTC_BOOTSTRAP=1
# No sanitizer: the engine has no unsafe code, and ASan needs a nightly-built std.
exec "$root/bin/cargo-fuzz" run --sanitizer none --target-dir "$RTHIN_CACHE/fuzz-target" open_and_walk --fuzz-dir . -- -max_total_time="$seconds" -rss_limit_mb=2048
