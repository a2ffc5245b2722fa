#!/bin/bash
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# Guest data-path test: the seed article's walkthrough with plain dmsetup. Sparse backing files
# on loop devices, a pool, create_thin, mkfs.ext4, files, a snapshot of the mounted origin,
# both mounted side by side, e2fsck clean on both, a clean teardown, thin_check, and a reopen
# that shows the same status lines and files.
# Parameterised on POOL_TARGET/THIN_TARGET (defaults rthin-pool/rthin), e.g.
#   qemu/run --env POOL_TARGET=thin-pool --env THIN_TARGET=thin -- sh /rthin/tests/guest/datapath/20-walkthrough.sh
# shellcheck source-path=SCRIPTDIR source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"
# shellcheck source=thinlib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/datapath/thinlib.sh"

tl_load "$POOL_TARGET" "$THIN_TARGET"

NB=4096                      # data blocks: 256 MiB of sparse data file
THIN_LEN=$((512 * 2048))     # 512 MiB thin: over-provisioned 2x, as in the seed
M=$TL_WORK/m0 M2=$TL_WORK/m1

# --- sparse backing files (the seed's dd seek=..., here truncate) --------------------------------
metaf=$(tl_file meta 16M) && dataf=$(tl_file data 256M) || { fail setup "truncate failed"; finish; }
expect_eq "sparse-data-file-empty" "$(tl_alloc "$dataf")" 0 "allocated bytes of a new data file"
META=$(tl_loop "$metaf") && DATA=$(tl_loop "$dataf") || { fail setup "losetup failed"; finish; }

# --- pool ----------------------------------------------------------------------------------------
if ! tl_pool pool "$META" "$DATA" $NB 16; then fail "pool-create" "$(dmesg | tail -n 1)"; finish; fi
pass "pool-create"
st=$(tl_pstatus pool)
# 16 MiB metadata = 4096 blocks; lwm min(1024, 4096/4).
if printf '%s' "$st" | grep -qE "^0 [0-9]+/4096 0/$NB - rw discard_passdown queue_if_no_space - 1024 $"; then
  pass "pool-status-fresh"
else
  fail "pool-status-fresh" "got '$st'"
fi
expect_eq "pool-table" "$(dmsetup table pool | cut -d' ' -f3,6-)" "$POOL_TARGET 128 16 0 "
expect_eq "pool-create-leaves-data-file-sparse" "$(tl_alloc "$dataf")" 0
[ "$(tl_alloc "$metaf")" -gt 0 ] && pass "pool-create-formats-metadata" ||
  fail "pool-create-formats-metadata" "metadata file still unallocated"

# --- thin volume ---------------------------------------------------------------------------------
step "create-thin-0" tl_msg pool create_thin 0
if ! tl_thin thin pool 0 $THIN_LEN; then fail "thin-activate" "$(dmesg | tail -n 1)"; finish; fi
pass "thin-activate"
expect_eq "thin-status-empty" "$(tl_tstatus thin)" "0 -"
expect_eq "thin-size" "$(blockdev --getsz /dev/mapper/thin)" $THIN_LEN
expect_eq "thin-table" "$(dmsetup table thin | cut -d' ' -f3,5)" "$THIN_TARGET 0"

if ! tl_mkfs /dev/mapper/thin; then fail "mkfs" "mkfs.ext4 failed"; finish; fi
pass "mkfs"
used_mkfs=$(tl_used pool)
# mkfs on a 512 MiB thin provisions its metadata only: a few MiB, far less than the thin.
if [ "$used_mkfs" -gt 0 ] && [ $((used_mkfs * TL_BLK)) -lt $((THIN_LEN * 512 / 8)) ]; then
  pass "mkfs-provisions-little"
else
  fail "mkfs-provisions-little" "$used_mkfs blocks used after mkfs"
fi
alloc_mkfs=$(tl_alloc "$dataf")
if [ "$alloc_mkfs" -le $((used_mkfs * TL_BLK)) ]; then pass "data-file-bounded-by-used-blocks"; else
  fail "data-file-bounded-by-used-blocks" "$alloc_mkfs bytes allocated for $used_mkfs blocks"
fi
# shellcheck disable=SC2046
set -- $(tl_tstatus thin)
expect_eq "thin-mapped-equals-pool-used" "$1" $((used_mkfs * TL_BS)) "mapped sectors"

# --- files ---------------------------------------------------------------------------------------
if ! tl_mount /dev/mapper/thin "$M" noinit_itable; then fail "mount" "mount failed"; finish; fi
pass "mount"
for f in a:1 b:2 c:4; do
  head -c $((${f#*:} * 1048576)) /dev/urandom >"$TL_WORK/${f%:*}.src"
  cp "$TL_WORK/${f%:*}.src" "$M/${f%:*}"
done
echo "hello thin world" >"$M/hello.txt"
sync
used_files=$(tl_used pool)
alloc_files=$(tl_alloc "$dataf")
# 7 MiB of file data = 112 blocks (a few may land in blocks mkfs provisioned).
if [ $((used_files - used_mkfs)) -ge 100 ] && [ $((used_files - used_mkfs)) -lt 160 ]; then
  pass "files-provision-blocks"
else
  fail "files-provision-blocks" "used went from $used_mkfs to $used_files blocks for 7 MiB of files"
fi
if [ $((alloc_files - alloc_mkfs)) -ge $((6 * 1048576)) ] && [ "$alloc_files" -le $((used_files * TL_BLK)) ]; then
  pass "data-file-grows-with-writes"
else
  fail "data-file-grows-with-writes" "allocated $alloc_mkfs -> $alloc_files bytes, $used_files blocks used"
fi

# --- snapshot of the mounted origin (seed: suspend, create_snap, resume) ---------------------------
step "suspend-origin" dmsetup suspend thin
used_susp=$(tl_used pool) tst_susp=$(tl_tstatus thin)
step "create-snap-1-of-0" tl_msg pool create_snap 1 0
# (measured before the resume: the thawed ext4 writes to the origin at once)
expect_eq "snapshot-shares-blocks" "$(tl_used pool)" "$used_susp" "used data blocks after create_snap"
step "resume-origin" dmsetup resume thin
if ! tl_thin snap pool 1 $THIN_LEN; then fail "snap-activate" "$(dmesg | tail -n 1)"; finish; fi
pass "snap-activate"
expect_eq "snap-status-equals-origin-at-snapshot" "$(tl_tstatus snap)" "$tst_susp"
if tl_mount /dev/mapper/snap "$M2" noinit_itable; then pass "snap-mount-beside-origin"; else
  fail "snap-mount-beside-origin" "mount failed"
fi
ok=1
for f in a b c; do
  [ "$(tl_file_sum "$M2/$f")" = "$(tl_file_sum "$TL_WORK/$f.src")" ] || ok=0
done
[ "$(cat "$M2/hello.txt" 2>/dev/null)" = "hello thin world" ] || ok=0
[ $ok = 1 ] && pass "snap-files-equal-origin" || fail "snap-files-equal-origin" "a file differs"

# Diverge: the origin changes a file and gains one; the snapshot gains its own and loses b.
head -c 1048576 /dev/urandom >"$TL_WORK/a2.src"
cp "$TL_WORK/a2.src" "$M/a"
echo "origin only" >"$M/origin.txt"
echo "snap only" >"$M2/snap.txt"
rm "$M2/b"
sync
[ "$(tl_file_sum "$M/a")" = "$(tl_file_sum "$TL_WORK/a2.src")" ] &&
  [ "$(tl_file_sum "$M2/a")" = "$(tl_file_sum "$TL_WORK/a.src")" ] &&
  pass "cow-file-isolation" || fail "cow-file-isolation" "a changed on the wrong side"
[ -e "$M/origin.txt" ] && [ ! -e "$M2/origin.txt" ] && [ -e "$M2/snap.txt" ] && [ ! -e "$M/snap.txt" ] &&
  [ -e "$M/b" ] && [ ! -e "$M2/b" ] && pass "cow-namespace-isolation" ||
  fail "cow-namespace-isolation" "a new or deleted file shows on the other side"

step "umount-origin" umount "$M"
step "umount-snap" umount "$M2"
step "e2fsck-origin-clean" e2fsck -fn /dev/mapper/thin
step "e2fsck-snap-clean" e2fsck -fn /dev/mapper/snap
pst=$(tl_pstatus pool) tst=$(tl_tstatus thin) sst=$(tl_tstatus snap)
[ "$tst" != "$sst" ] && pass "statuses-diverged" || fail "statuses-diverged" "origin and snapshot both '$tst'"

# --- clean teardown, thin_check, reopen ------------------------------------------------------------
step "remove-snap" tl_remove snap
step "remove-thin" tl_remove thin
step "remove-pool" tl_remove pool
step "thin_check-after-teardown" thin_check "$META"
if tl_pool pool "$META" "$DATA" $NB 16 && tl_thin thin pool 0 $THIN_LEN && tl_thin snap pool 1 $THIN_LEN; then
  pass "reopen"
else
  fail "reopen" "$(dmesg | tail -n 1)"
  finish
fi
expect_eq "reopen-pool-status" "$(tl_pstatus pool)" "$pst"
expect_eq "reopen-thin-status" "$(tl_tstatus thin)" "$tst"
expect_eq "reopen-snap-status" "$(tl_tstatus snap)" "$sst"
if tl_mount /dev/mapper/thin "$M" ro,noload && tl_mount /dev/mapper/snap "$M2" ro,noload; then
  [ "$(tl_file_sum "$M/a")" = "$(tl_file_sum "$TL_WORK/a2.src")" ] &&
    [ "$(tl_file_sum "$M/c")" = "$(tl_file_sum "$TL_WORK/c.src")" ] &&
    [ "$(cat "$M/origin.txt")" = "origin only" ] && [ -e "$M/b" ] &&
    pass "reopen-origin-files" || fail "reopen-origin-files" "origin files changed"
  [ "$(tl_file_sum "$M2/a")" = "$(tl_file_sum "$TL_WORK/a.src")" ] &&
    [ "$(tl_file_sum "$M2/c")" = "$(tl_file_sum "$TL_WORK/c.src")" ] &&
    [ "$(cat "$M2/snap.txt")" = "snap only" ] && [ ! -e "$M2/b" ] &&
    pass "reopen-snap-files" || fail "reopen-snap-files" "snapshot files changed"
  umount "$M"
  umount "$M2"
else
  fail "reopen-files" "mount failed"
fi
step "e2fsck-origin-after-reopen" e2fsck -fn /dev/mapper/thin
finish
