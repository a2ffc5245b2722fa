#!/usr/bin/env bash
# `make demo`: boot the guest and show dm-rthin at work (scripts/demo-guest.sh runs inside it).
set -euo pipefail
. "$(dirname "$0")/env.sh"
exec "$RTHIN_TOP/qemu/run" --timeout 600 --script "$RTHIN_TOP/scripts/demo-guest.sh"
