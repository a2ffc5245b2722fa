#!/bin/bash
# Guest test of glue calls the thin targets do not use yet, through the glue test module
# dm-rthin-test.ko (rust/dm_rthin_test.rs, built beside dm-rthin.ko) and its target rthin-test:
#   `rthin-test <dev> <chunk sectors>` maps linearly onto <dev> and handles at most one chunk
#   per map call, keeping the part of a bio up to the next chunk boundary with
#   MapRequest::accept_partial (dm_accept_partial_bio); dm core sends the rest again.
#   Status: <map calls> <partial accepts> <refusals of flushes/discards> <wrong answers>.
# Checks that data lands where it belongs, that bios are cut exactly at chunk boundaries, and that
# the glue refuses what dm_accept_partial_bio would BUG() on (flushes, discards, 0 sectors, more
# sectors than the bio has) instead of calling it.
# Runs inside the guest: qemu/run -- bash /rthin/tests/guest/12-glue-test.sh
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"

CHUNK=8                # sectors (4 KiB)
SIZE_MB=4
SECTORS=$((SIZE_MB * 2048))
work=$(mktemp -d) || { fail setup "mktemp failed"; finish; }
img=$work/backing.img pattern=$work/pattern

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  dmsetup remove gt >/dev/null 2>&1
  [ -z "${loop:-}" ] || losetup -d "$loop" >/dev/null 2>&1
  rmmod dm_rthin_test >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# counters: the target's status numbers as "maps partial refused wrong".
counters() { dmsetup status gt | cut -d' ' -f4-; }
# field N of "maps partial refused wrong" (1-based) from counters output $2.
field() { echo "$2" | cut -d' ' -f"$1"; }

if modprobe dm-rthin-test; then pass "module-load"; else
  fail "module-load" "modprobe dm-rthin-test failed: $(dmesg | tail -n 1)"
  finish
fi

# A loop device on a file: it takes flushes (write cache) and discards (hole punching), so both
# reach the target.
if ! truncate -s ${SIZE_MB}M "$img" || ! loop=$(losetup -f --show "$img"); then
  fail setup "losetup failed"
  finish
fi

check_fails "ctr-refuses-chunk-0" dmsetup create gt0 --table "0 $SECTORS rthin-test $loop 0"
check_fails "ctr-refuses-missing-argument" dmsetup create gt0 --table "0 $SECTORS rthin-test $loop"
dmsetup remove gt0 >/dev/null 2>&1

if ! dmsetup create gt --table "0 $SECTORS rthin-test $loop $CHUNK"; then
  fail "create" "dmsetup create failed: $(dmesg | tail -n 1)"
  finish
fi
dmsetup mknodes gt >/dev/null 2>&1
dev=/dev/mapper/gt
table=$(dmsetup table gt)
expect_table="0 $SECTORS rthin-test $(printf '%d:%d' "0x$(stat -L -c %t "$loop")" "0x$(stat -L -c %T "$loop")") $CHUNK"
if [ "$table" = "$expect_table" ]; then pass "table-line"; else
  fail "table-line" "got '$table', want '$expect_table'"
fi

# --- chunk-aligned writes: every map call is exactly one chunk ------------------------------------
head -c $((SIZE_MB << 20)) /dev/urandom >"$pattern"
before=$(counters)
dd if="$pattern" of=$dev bs=1M oflag=direct status=none
after=$(counters)
maps=$(($(field 1 "$after") - $(field 1 "$before")))
partial=$(($(field 2 "$after") - $(field 2 "$before")))
if [ "$maps" = $((SECTORS / CHUNK)) ]; then pass "aligned-write-one-chunk-per-map"; else
  fail "aligned-write-one-chunk-per-map" "$maps map calls for $((SECTORS / CHUNK)) chunks"
fi
# A bio of n chunks makes n map calls, n-1 of them partial: so partial < maps, and > 0 because
# 1 MiB bios are longer than a chunk.
if [ "$partial" -gt 0 ] && [ "$partial" -lt "$maps" ]; then pass "aligned-write-partial-accepts"; else
  fail "aligned-write-partial-accepts" "$partial partial accepts in $maps map calls"
fi
if cmp -s "$pattern" <(dd if="$loop" bs=1M iflag=direct status=none); then pass "aligned-write-data"; else
  fail "aligned-write-data" "the backing device differs from what was written"
fi

# --- a read starting 3 sectors into a chunk: the first piece is 5 sectors, then whole chunks ------
before=$(counters)
got=$(dd if=$dev bs=1M count=1 skip=1536 iflag=direct,skip_bytes status=none | md5sum)
want=$(tail -c +1537 "$pattern" | head -c 1048576 | md5sum)
after=$(counters)
maps=$(($(field 1 "$after") - $(field 1 "$before")))
if [ "$got" = "$want" ]; then pass "unaligned-read-data"; else
  fail "unaligned-read-data" "read through the target differs from the pattern"
fi
# Sectors 3..2050 touch chunks 0..256: at least 257 map calls, one per chunk when the block layer
# did not split the bio itself.
if [ "$maps" -ge 257 ]; then pass "unaligned-read-cut-at-boundaries"; else
  fail "unaligned-read-cut-at-boundaries" "$maps map calls for 257 chunks"
fi

# --- flushes and discards: accept_partial refused, I/O still done --------------------------------
before=$(counters)
dd if="$pattern" of=$dev bs=4096 count=1 oflag=direct conv=fsync status=none
blkdiscard -o 0 -l 1048576 $dev
after=$(counters)
refused=$(($(field 3 "$after") - $(field 3 "$before")))
if [ "$refused" -ge 2 ]; then pass "flush-and-discard-refused"; else
  fail "flush-and-discard-refused" "$refused refusals for a flush and a discard"
fi
if [ "$(dd if=$dev bs=1M count=1 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ]; then
  pass "discard-passed-through"
else
  fail "discard-passed-through" "the discarded MiB does not read back as zeroes"
fi

wrong=$(field 4 "$(counters)")
if [ "$wrong" = 0 ]; then pass "no-wrong-answers"; else
  fail "no-wrong-answers" "$wrong accept_partial calls answered wrongly"
fi

check "remove" dmsetup remove gt
check "module-unload" rmmod dm_rthin_test
finish
