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

# Device nodes: this guest has no udev, so dmsetup is asked to make /dev/mapper nodes.
mk() { dmsetup mknodes "$1" >/dev/null 2>&1; }
devnum() { dmsetup info -c --noheadings -o major,minor "$1" | tr -d ' '; }
SECTORS=$((10 * 1024 * 1024 * 2))

say "A pool, as the article builds it, on rthin-pool: 64 KiB blocks, low water mark 32768"
run dmsetup create rpool --table "0 $SECTORS rthin-pool $META $DATA 128 32768"
mk rpool
run dmsetup table rpool
echo "status: <transaction> <used>/<total metadata blocks> <used>/<total data blocks> <held root> rw ..."
run dmsetup status rpool

say "create_thin 0, a 1 GiB thin volume on it, ext4"
run dmsetup message rpool 0 create_thin 0
run dmsetup create vol0 --table "0 2097152 rthin $(devnum rpool) 0"
mk vol0
run mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/vol0
mkdir -p /mnt/vol0 /mnt/snap
run mount /dev/mapper/vol0 /mnt/vol0
run dd if=/dev/urandom of=/mnt/vol0/layer.bin bs=1M count=16 status=none
echo "an image layer" >/mnt/vol0/README
run sync
echo "Only written blocks are allocated: the thin volume maps what ext4 wrote, the 10 GiB sparse"
echo "data file holds just those blocks."
run dmsetup status rpool vol0
run ls -lsh /tmp/data.img /tmp/meta.img

say "create_snap 1 0: a snapshot sharing every block (the origin is suspended around it)"
run dmsetup suspend vol0
run dmsetup message rpool 0 create_snap 1 0
run dmsetup resume vol0
run dmsetup create snap1 --table "0 2097152 rthin $(devnum rpool) 1"
mk snap1
run mount -o ro,noload /dev/mapper/snap1 /mnt/snap
echo "The origin changes; the snapshot keeps what it had (copy on write):"
run dd if=/dev/urandom of=/mnt/vol0/layer.bin bs=1M count=4 conv=notrunc status=none
run sync
run md5sum /mnt/vol0/layer.bin /mnt/snap/layer.bin
run ls -l /mnt/vol0 /mnt/snap
run dmsetup status rpool vol0 snap1
sum_vol0=$(md5sum </mnt/vol0/layer.bin)
sum_snap1=$(md5sum </mnt/snap/layer.bin)
run umount /mnt/snap
run umount /mnt/vol0
run e2fsck -fn /dev/mapper/vol0
run e2fsck -fn /dev/mapper/snap1
run dmsetup remove snap1
run dmsetup remove vol0
run dmsetup remove rpool
run thin_check -q "$META"
echo "thin_check: the metadata rthin-pool wrote is dm-thin's format"

say "The same pool, opened by the kernel's own C thin-pool"
run dmsetup create cpool --table "0 $SECTORS thin-pool $META $DATA 128 32768"
mk cpool
run dmsetup create cvol0 --table "0 2097152 thin $(devnum cpool) 0"
run dmsetup create csnap1 --table "0 2097152 thin $(devnum cpool) 1"
mk cvol0
mk csnap1
run dmsetup status cpool cvol0 csnap1
run mount -o ro /dev/mapper/cvol0 /mnt/vol0
run mount -o ro,noload /dev/mapper/csnap1 /mnt/snap
run cat /mnt/snap/README
if [ "$(md5sum </mnt/vol0/layer.bin)" = "$sum_vol0" ] && [ "$(md5sum </mnt/snap/layer.bin)" = "$sum_snap1" ]; then
  echo "Origin and snapshot read back, through dm-thin, byte for byte what rthin wrote."
else
  echo "ERROR: dm-thin reads different contents" >&2
  exit 1
fi
run umount /mnt/snap
run umount /mnt/vol0
run dmsetup remove csnap1
run dmsetup remove cvol0
run dmsetup remove cpool

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

losetup -d "$META" "$DATA"

say "The same walkthrough with rthinctl: one command a step, each showing the commands it runs"
export RTHINCTL_HOME=/tmp/rthinctl
echo "(--explain prints the equivalent losetup/dmsetup commands as it runs them; --dry-run only prints them)"
run rthinctl --explain pool create pool0 --data-size 10G --low-water-mark 32768 --dir /tmp/pool0
run ls -lsh /tmp/pool0
run rthinctl --explain thin create base --size 1G
run mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/base
run mount /dev/mapper/base /mnt/vol0
echo "the base image" >/mnt/vol0/README
run umount /mnt/vol0
run rthinctl --explain thin snapshot layer1 --from base
run mount /dev/mapper/layer1 /mnt/vol0
echo "added by layer 1" >/mnt/vol0/layer1.txt
run umount /mnt/vol0
run rthinctl --explain thin snapshot container1 --from layer1
run rthinctl thin list
run rthinctl pool status pool0
run mount -o ro,noload /dev/mapper/base /mnt/snap
if [ -e /mnt/snap/layer1.txt ]; then
  echo "ERROR: the base image sees its snapshot's file" >&2
  exit 1
fi
echo "The base image does not see layer 1's file; layer 1 and its container do."
run umount /mnt/snap
run rthinctl --dry-run thin delete container1
run rthinctl --explain pool remove pool0
echo "And on the kernel's C dm-thin, the same commands with --target thin:"
run rthinctl pool create cpool0 --data-size 1G --dir /tmp/cpool0 --target thin
run rthinctl thin create cvol --size 256M
run rthinctl thin list
run rthinctl pool remove cpool0
if [ "$(dmsetup ls)" != "No devices found" ] || [ -n "$(losetup -a)" ]; then
  echo "ERROR: rthinctl left devices behind: $(dmsetup ls) $(losetup -a)" >&2
  exit 1
fi
echo "Nothing left behind: no dm device, no loop device."
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
