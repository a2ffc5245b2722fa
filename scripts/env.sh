# Shared settings for the project's scripts; source it, do not run it.
# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this file
#
# Everything large or slow (kernel source and builds, bindgen, downloaded .debs, the guest image)
# lives in $RTHIN_CACHE, outside the clone, so a fresh clone on the same machine reuses it.

RTHIN_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RTHIN_CACHE=${RTHIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rthin}
export RTHIN_TOP RTHIN_CACHE

# Kernel source: Debian's linux-source-7.2 from trixie-backports, the version we tested.
# Pinned: a cached copy is used without asking apt; if the suite has moved on and nothing is cached,
# scripts/fetch-deb.sh stops and says what to do (it never takes another version by itself).
RTHIN_KSRC_SUITE=trixie-backports
RTHIN_KSRC_VERSION=7.2.12-1~bpo13+1
# thin-provisioning-tools 1.x from trixie: runs on Debian 12; unpacked, never installed.
RTHIN_TPT_SUITE=trixie
RTHIN_TPT_VERSION=1.1.0-4+b1

# The kernel and every module must be built by the same rustc (E0514 otherwise): Debian's
# rustc-web, never a rustup rustc that may be first on PATH. Userspace uses the same toolchain
# (cargo-web, rust-web-clippy, rustfmt-web: 1.96 from bookworm-security): /usr/bin comes first on
# PATH, rustc is named explicitly, and cargo's home is in the cache (a ~/.cargo/bin would offer
# rustup's cargo-clippy and cargo-fmt proxies before /usr/bin's).
RTHIN_RUSTC=/usr/bin/rustc
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
export RUSTC=$RTHIN_RUSTC RUSTDOC=/usr/bin/rustdoc
export CARGO_HOME=$RTHIN_CACHE/cargo-home
RTHIN_RUSTDOC=/usr/bin/rustdoc
RTHIN_BINDGEN_VERSION=0.72.1
RTHIN_BINDGEN=$RTHIN_CACHE/tools/bindgen-$RTHIN_BINDGEN_VERSION/bin/bindgen

# Arguments for every kernel/module make invocation.
RTHIN_KMAKE_ARGS=(ARCH=x86_64 "RUSTC=$RTHIN_RUSTC" "RUSTDOC=$RTHIN_RUSTDOC" "BINDGEN=$RTHIN_BINDGEN"
  "RUSTFMT=/usr/bin/rustfmt" "CLIPPY_DRIVER=/usr/bin/clippy-driver")

rthin_log() { printf '\033[1m[rthin]\033[0m %s\n' "$*" >&2; }
rthin_die() { printf '\033[1;31m[rthin] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Userspace builds go to the cache too, so a fresh clone (CI) reuses compiled dependencies.
# qemu/run takes the guest's binaries from $CARGO_TARGET_DIR/release.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RTHIN_CACHE/cargo-target}
