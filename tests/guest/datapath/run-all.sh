#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Runs inside the guest: every tests/guest/datapath/[0-9]*.sh in order, with the targets from
# POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), cleaning up between scripts. Exits
# non-zero if any script failed. E.g. against the kernel's C targets:
#   qemu/run --timeout 900 -- env POOL_TARGET=thin-pool THIN_TARGET=thin sh /rthin/tests/guest/datapath/run-all.sh
here=$(dirname "$0")
status=0
for t in "$here"/[0-9]*.sh; do
  [ -e "$t" ] || continue
  echo "=== datapath/$(basename "$t") ($(date +%s))"
  sh "$t" || status=1
  dmsetup remove_all >/dev/null 2>&1
  losetup -D >/dev/null 2>&1
done
echo "=== datapath done ($(date +%s))"
exit $status
