#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# `rthinctl ls --format thin_ls` prints what thin_ls 1.1.0 prints, on metadata written by both
# target families (volumes, a snapshot sharing blocks, later writes on each side).
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

fields=DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,MAPPED_SECTORS,EXCLUSIVE_SECTORS,SHARED_SECTORS,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES,TRANSACTION,CREATE_TIME,SNAP_TIME

for t in $TARGETS; do
  rc_reset
  dir=$RC_WORK/files
  rthinctl pool create lp --data-size 256M --dir "$dir" --target "$t" >/dev/null &&
    rthinctl thin create a --size 64M >/dev/null &&
    dd if=/dev/urandom of=/dev/mapper/a bs=64K count=40 oflag=direct status=none &&
    rthinctl thin snapshot b --from a >/dev/null &&
    dd if=/dev/urandom of=/dev/mapper/a bs=64K count=5 oflag=direct status=none &&
    dd if=/dev/urandom of=/dev/mapper/b bs=64K count=3 seek=100 oflag=direct status=none &&
    rthinctl thin create c --size 16M >/dev/null &&
    rthinctl pool deactivate lp >/dev/null || { fail "thin-ls-setup-$t" "set-up failed"; continue; }
  meta=$dir/lp-metadata.img
  for f in "$fields" default; do
    if [ "$f" = default ]; then
      want=$(thin_ls "$meta" 2>/dev/null)
      got=$(rthinctl ls --format thin_ls "$meta")
    else
      want=$(thin_ls -o "$f" "$meta" 2>/dev/null)
      got=$(rthinctl ls --format thin_ls -o "$f" "$meta")
    fi
    label=fields
    [ "$f" = default ] && label=default
    [ -n "$want" ] && [ "$want" = "$got" ] && pass "thin-ls-$label-$t" ||
      fail "thin-ls-$label-$t" "thin_ls: $(echo "$want" | tr '\n' '|') rthinctl: $(echo "$got" | tr '\n' '|')"
  done
  want=$(thin_ls --no-headers -o DEV,MAPPED_BLOCKS "$meta" 2>/dev/null)
  got=$(rthinctl ls --format thin_ls --no-headers -o DEV,MAPPED_BLOCKS "$meta")
  [ "$want" = "$got" ] && pass "thin-ls-no-headers-$t" || fail "thin-ls-no-headers-$t" "$got"
  rthinctl pool remove lp >/dev/null
done
rc_reset
finish
