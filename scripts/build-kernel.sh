#!/usr/bin/env bash
# Build (once) and print the object tree of the guest kernel.
#
#   scripts/build-kernel.sh [release|debug]
#
# The object tree lives in $RTHIN_CACHE/kernel/<variant>-<key>, where <key> hashes everything
# that decides the result: the kernel source version, the config fragments, this script, rustc
# and bindgen.  A finished tree carries a .rthin-done stamp; a second run just prints its path.
set -euo pipefail
. "$(dirname "$0")/env.sh"
variant=${1:-release}
case $variant in
  release) fragments=("$RTHIN_TOP/qemu/kernel.config") ;;
  debug) fragments=("$RTHIN_TOP/qemu/kernel.config" "$RTHIN_TOP/qemu/kernel-debug.config") ;;
  *) rthin_die "unknown kernel variant '$variant' (release or debug)" ;;
esac

ksrc=$("$RTHIN_TOP/scripts/fetch-kernel-source.sh")
# Bump recipe when a change to the build steps below changes the resulting kernel.
recipe=1
# The compilers are part of the key: gcc builds the C, libclang (through bindgen) reads it.
key=$( { echo "recipe $recipe $ksrc"; cat "${fragments[@]}"; "$RTHIN_RUSTC" --version; "$RTHIN_BINDGEN" --version
  gcc --version | head -n1; dpkg-query -W -f='${Version}\n' libclang-19-dev clang-19; } |
  sha256sum | cut -c1-16)
kout=$RTHIN_CACHE/kernel/$variant-$key
if [ -f "$kout/.rthin-done" ]; then
  echo "$kout"
  exit 0
fi

# One build at a time per tree: a second caller waits, then finds the stamp.
mkdir -p "$RTHIN_CACHE/kernel"
exec 9>"$kout.lock"
flock 9
if [ -f "$kout/.rthin-done" ]; then
  echo "$kout"
  exit 0
fi

rthin_log "building the $variant guest kernel in $kout (about 8 minutes on 2 cores)"
mkdir -p "$kout"
km=(make -C "$ksrc" O="$kout" "${RTHIN_KMAKE_ARGS[@]}")
"${km[@]}" -s tinyconfig >&2
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$kout" "$kout/.config" "${fragments[@]}" >/dev/null
"${km[@]}" -s olddefconfig >&2

# Kconfig drops symbols whose dependencies are missing without a word: insist on every one.
missing=0
# shellcheck disable=SC2094  # $f is only read (the loop writes to stderr)
for f in "${fragments[@]}"; do
  while IFS= read -r line; do
    case $line in CONFIG_*=*) ;; *) continue ;; esac
    grep -qxF "$line" "$kout/.config" || { rthin_log "config lost: $line (from $(basename "$f"))"; missing=1; }
  done <"$f"
done
[ $missing = 0 ] || rthin_die "the kernel configuration does not contain what qemu/*.config asks for"

"${km[@]}" rustavailable >&2
"${km[@]}" -j"$(($(nproc) + 1))" bzImage modules >&2
touch "$kout/.rthin-done"
echo "$kout"
