#!/usr/bin/env bash
# Which tool each build and test step runs, and where it comes from: every tool must be one that
# scripts/setup.sh installed (a Debian package, or a pinned build in $RTHIN_CACHE/tools), never
# one the machine happened to have (a rustup toolchain in ~/.cargo, /usr/local, pyenv, ...).
# Prints one line per tool; exits 1 if any resolves elsewhere.
set -uo pipefail
. "$(dirname "$0")/env.sh"
bad=0
show() {  # show NAME PATH: where it is, its version, its Debian package
  local name=$1 path=$2 real pkg='' ver p
  real=$(readlink -f "$path" 2>/dev/null || echo "$path")
  ver=$("$path" --version 2>/dev/null | head -n1) || ver=''
  case $real in
    "$RTHIN_CACHE"/tools/*) pkg="(pinned build in the cache)" ;;
    *)
      # (Debian 12 is merged-/usr: dpkg may know /usr/bin/x as /bin/x)
      for p in "$real" "$path" "${real#/usr}" "${path#/usr}"; do
        pkg=$(dpkg-query -S "$p" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && break
      done ;;
  esac
  if [ -z "$pkg" ]; then
    pkg="NOT FROM A DEBIAN PACKAGE"
    bad=1
  fi
  printf '%-20s %-55s %-28s %s\n' "$name" "$path" "$pkg" "$ver"
}
for t in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver gcc g++ make git python3 \
  qemu-system-x86_64 shellcheck busybox dmsetup depmod cpio; do
  p=$(command -v "$t") || { printf '%-20s MISSING\n' "$t"; bad=1; continue; }
  show "$t" "$p"
done
show "rustc (\$RUSTC)" "$RUSTC"
show bindgen "$RTHIN_BINDGEN"
for f in "$RTHIN_CACHE"/tools/cargo-fuzz-*/bin/cargo-fuzz; do [ -x "$f" ] && show cargo-fuzz "$f"; done
echo "CARGO_HOME=$CARGO_HOME"
[ $bad = 0 ] || echo "a tool above does not come from what scripts/setup.sh installs" >&2
exit $bad
