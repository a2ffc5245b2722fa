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
echo "The data path is the next step of the road: until it lands the pool reports dm-thin's own"
echo "fail mode and refuses thin volumes, rather than pretend to provision anything."
run dmsetup status rpool

say "Malformed tables are refused with dm-thin's reasons (see dmesg), the kernel stays healthy"
dmesg -c >/dev/null
for table in \
  "0 $SECTORS rthin-pool $META $DATA 100 32768" \
  "0 $SECTORS rthin-pool $META $META 128 32768" \
  "0 $SECTORS rthin-pool $META $DATA 128 32768 1 no_such_feature" \
  "0 $SECTORS rthin-pool $META $DATA 128"; do
  printf '\033[36m# dmsetup create bad --table "%s"\033[0m\n' "$table"
  if dmsetup create bad --table "$table" >/tmp/bad.out 2>&1; then
    echo "  ERROR: the malformed table was accepted" >&2
    exit 1
  fi
  sed 's/^/  /' /tmp/bad.out
done
dmesg | grep -F 'device-mapper: table' | sed 's/^/  dmesg: /'

run dmsetup remove rpool
losetup -d "$META" "$DATA"
run rmmod dm_rthin

say "Offline metadata: rthinctl writes dm-thin's on-disk format, the kernel's own tools agree"
cat >/tmp/pool.xml <<'XML'
<superblock uuid="" time="1" transaction="2" version="2" data_block_size="128" nr_data_blocks="163840">
  <device dev_id="1" mapped_blocks="1000" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="1000" time="0"/>
  </device>
  <device dev_id="2" mapped_blocks="1001" transaction="1" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="1000" time="0"/>
    <single_mapping origin_block="5000" data_block="1000" time="1"/>
  </device>
</superblock>
XML
echo "a base image (thin 1) and its snapshot (thin 2) sharing 1000 data blocks, plus one of its own"
run truncate -s 16M /tmp/meta2.img
run rthinctl restore -i /tmp/pool.xml -o /tmp/meta2.img
run rthinctl check /tmp/meta2.img
run thin_check -q /tmp/meta2.img
echo "thin_check (thin-provisioning-tools 1.1.0): no errors, no leaks"
run rthinctl ls /tmp/meta2.img
rthinctl dump /tmp/meta2.img >/tmp/ours.xml
thin_dump /tmp/meta2.img >/tmp/theirs.xml
run cmp /tmp/ours.xml /tmp/theirs.xml
echo "rthinctl dump and thin_dump agree byte for byte"

say "Done: no oops, no warning (qemu/run checks the console)"
