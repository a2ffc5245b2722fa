#!/usr/bin/env bash
# Install what the project needs on a fresh Debian 12 (x86_64) machine, run as root.
# Idempotent and quick when everything is already there.
set -euo pipefail
. "$(dirname "$0")/env.sh"

# Debian 12 packages. rustc-web/rust-web-src (1.96, bookworm-security) build the kernel and the
# module; rust-web-clippy and rustfmt-web lint it with the same compiler; cargo-web builds
# userspace, bindgen-cli and cargo-fuzz with it too (scripts/env.sh). g++: libFuzzer (fuzz crate);
# git: the lint steps list the repository's files. ca-certificates: cargo fetches crates over
# https (a minimal Debian has no CA bundle).
packages=(
  rustc-web rust-web-src rust-web-clippy rustfmt-web cargo-web g++ git ca-certificates
  libclang-19-dev clang-19 gcc make flex bison bc cpio libelf-dev libssl-dev kmod xz-utils
  python3 qemu-system-x86 busybox-static dmsetup e2fsprogs fio util-linux pkg-config libdevmapper-dev
  shellcheck
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || rthin_die "missing packages (${missing[*]}); run as root so they can be installed"
  rthin_log "installing: ${missing[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# bindgen-cli, pinned, into the cache (not the user's PATH).
if ! "$RTHIN_BINDGEN" --version 2>/dev/null | grep -qF "$RTHIN_BINDGEN_VERSION"; then
  rthin_log "installing bindgen-cli $RTHIN_BINDGEN_VERSION (about 2 minutes)"
  cargo install --quiet bindgen-cli --version "$RTHIN_BINDGEN_VERSION" --locked \
    --root "$RTHIN_CACHE/tools/bindgen-$RTHIN_BINDGEN_VERSION" >&2
fi

# Downloads (cached): kernel source, thin-provisioning-tools 1.x.
"$RTHIN_TOP/scripts/fetch-kernel-source.sh" >/dev/null
"$RTHIN_TOP/scripts/thin-tools.sh" >/dev/null
