#!/usr/bin/env bash
# Build dm-rthin.ko out of tree against KDIR (default: the cached guest kernel, built if needed).
#   scripts/build-module.sh [extra make arguments, e.g. CLIPPY=1 or rustfmtcheck]
set -euo pipefail
. "$(dirname "$0")/env.sh"
kdir=${KDIR:-$("$RTHIN_TOP/scripts/build-kernel.sh" "${RTHIN_KERNEL_VARIANT:-release}")}
exec make -C "$kdir" M="$RTHIN_TOP" "${RTHIN_KMAKE_ARGS[@]}" "$@"
