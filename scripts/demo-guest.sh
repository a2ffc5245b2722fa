#!/bin/sh
# `make demo`, inside the guest: the story of the project's seed article (sparse files, loop
# devices, a thin pool), told with dm-rthin beside the kernel's own dm-thin.
set -e

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
  printf '\033[36m# %s\033[0m\n' "$*"
  "$@"
}

say "Guest kernel $(uname -r), $(nproc) CPUs"

say "dm-rthin loads beside the C reference target"
run modprobe dm-rthin
run modprobe dm-thin-pool
run dmsetup targets

say "Sparse backing files on loop devices, as Docker's devicemapper driver used them"
run truncate -s 10G /tmp/data.img
run truncate -s 100M /tmp/meta.img
run ls -lsh /tmp/data.img /tmp/meta.img
META=$(losetup -f --show /tmp/meta.img)
DATA=$(losetup -f --show /tmp/data.img)
echo "metadata: $META  data: $DATA"

say "An rthin-pool table is validated like dm-thin's and echoed back"
SECTORS=$((10 * 1024 * 1024 * 2))
run dmsetup create rpool --table "0 $SECTORS rthin-pool $META $DATA 128 32768 1 skip_block_zeroing"
run dmsetup table rpool
run dmsetup status rpool || true

say "Malformed tables are refused with dm-thin's reasons (see dmesg), the kernel stays healthy"
dmesg -c >/dev/null
for table in \
  "0 $SECTORS rthin-pool $META $DATA 100 32768" \
  "0 $SECTORS rthin-pool $META $META 128 32768" \
  "0 $SECTORS rthin-pool $META $DATA 128 32768 1 no_such_feature" \
  "0 $SECTORS rthin-pool $META $DATA 128"; do
  printf '\033[36m# dmsetup create bad --table "%s"\033[0m\n' "$table"
  dmsetup create bad --table "$table" 2>&1 | sed 's/^/  /' || true
done
dmesg | grep -F 'device-mapper: table' | sed 's/^/  dmesg: /'

run dmsetup remove rpool
losetup -d "$META" "$DATA"
run rmmod dm_rthin

if command -v rthinctl >/dev/null 2>&1 && [ -x /rthin/tests/demo/metadata.sh ]; then
  sh /rthin/tests/demo/metadata.sh
fi

say "Done: no oops, no warning (qemu/run checks the console)"
