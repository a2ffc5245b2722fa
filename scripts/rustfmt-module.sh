#!/usr/bin/env bash
# rustfmt over the module's Rust sources (rust/, the metadata engine included), with the
# kernel's rustfmt and .rustfmt.toml, as the kernel's own `make rustfmt` does for in-tree code
# (that target does not reach out-of-tree M= modules).
#   scripts/rustfmt-module.sh [--check]
set -euo pipefail
. "$(dirname "$0")/env.sh"
ksrc=$("$RTHIN_TOP/scripts/fetch-kernel-source.sh")
cd "$RTHIN_TOP"
mapfile -t files < <(git ls-files -co --exclude-standard 'rust/*.rs' 'rust/**/*.rs' | grep -v '_generated\.rs$')
[ ${#files[@]} -gt 0 ] || rthin_die "no Rust sources under rust/"
exec /usr/bin/rustfmt --edition 2021 --config-path "$ksrc/.rustfmt.toml" "$@" "${files[@]}"
