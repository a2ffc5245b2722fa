#!/bin/bash
# shellcheck disable=SC2015 # `set-up && more-set-up || fail` on purpose: either failing is a failure
# `make bench`, guest side (scripts/bench.sh boots the guest and runs this): fio and timings on
# dm-linear, the kernel's thin-pool/thin ("c") and our rthin-pool/rthin ("ours"), same sizes,
# data block size and features, on RAM disks (brd: /dev/ram0 metadata, /dev/ram1 data; the
# kernel command line sizes them). Targets alternate: repetition r runs every workload on the
# three targets in an order rotated by r.
#
#   guest-bench.sh OUTDIR
#
# Writes under OUTDIR (raw data only; scripts/bench-report.py makes the tables):
#   raw/WORKLOAD.TARGET.REP.json  fio's JSON output
#   timings.tsv                   WORKLOAD TARGET REP METRIC VALUE (discard, metadata operations)
#   memory.tsv                    TARGET REP PHASE KEY VALUE (slab, dm-bufio, /proc/modules)
#   failures.tsv                  WORKLOAD TARGET REP ERROR (with the last kernel messages)
#   env.tsv                       KEY VALUE (kernel, CPUs, knobs)
# Knobs (environment): BENCH_REPS (3), BENCH_RUNTIME (seconds per time-based job, 2),
# BENCH_SIZE_MB (thin volume, 64), BENCH_QD (fio iodepth, 8), BENCH_MAPPED (mapped blocks of
# the metadata-operation cases, "1000 100000 1000000"), BENCH_DEPTHS ("1 10 100"),
# BENCH_BLOCK_KIB (data block sizes beyond 64 KiB, "512 1024"), BENCH_TARGETS
# ("linear c ours"), BENCH_ONLY (an extended regex: run only the workload groups it matches).
set -u
out=${1:?usage: guest-bench.sh OUTDIR}
mkdir -p "$out/raw"
REPS=${BENCH_REPS:-3}
RUNTIME=${BENCH_RUNTIME:-2}
SIZE_MB=${BENCH_SIZE_MB:-64}
QD=${BENCH_QD:-8}
MAPPED=${BENCH_MAPPED:-1000 100000 1000000}
DEPTHS=${BENCH_DEPTHS:-1 10 100}
BLOCK_KIB=${BENCH_BLOCK_KIB:-512 1024}
TARGETS=${BENCH_TARGETS:-linear c ours}
ONLY=${BENCH_ONLY:-.}
META=/dev/ram0
DATA=/dev/ram1
BS=128                      # data block size in sectors (64 KiB) unless a workload says otherwise
VOL=$((SIZE_MB * 2048))     # thin volume in sectors
WORK=/tmp/bench
mkdir -p "$WORK"

log() { printf 'bench: %s\n' "$*" >&2; }
# tsv FILE FIELD...: append a line to OUTDIR/FILE.tsv (kept whole in a local copy and rewritten,
# so a guest that dies mid-run leaves complete lines).
tsv() {
  local f=$1 IFS=$'\t'
  shift
  printf '%s\n' "$*" >>"$WORK/$f.tsv" && cp "$WORK/$f.tsv" "$out/$f.tsv"
}
usec() { local t=${EPOCHREALTIME//[.,]/}; printf '%s\n' "$t"; }

# fail WORKLOAD TARGET REP ERROR: record a failure with the last kernel messages.
fail() {
  local k
  k=$(dmesg | grep -iE 'device-mapper|bufio|I/O error' | tail -n 4 | tr '\t\n' '  ')
  log "FAILED $1 on $2 (rep $3): $4"
  tsv failures "$1" "$2" "$3" "$4 | dmesg: $k"
}

pool_target() { case $1 in c) echo thin-pool ;; ours) echo rthin-pool ;; esac; }
thin_target() { case $1 in c) echo thin ;; ours) echo rthin ;; esac; }

# dm NAME TABLE: create a dm device; prints /dev/dm-N.
dm() {
  local m
  dmsetup create "$1" --table "$2" || return 1
  m=$(dmsetup info -c --noheadings -o minor "$1") || return 1
  m=${m// /}
  [ -b "/dev/dm-$m" ] || mknod "/dev/dm-$m" b "$(dmsetup info -c --noheadings -o major "$1" | tr -d ' ')" "$m"
  echo "/dev/dm-$m"
}

# reset: remove every dm device, hand the RAM disks' pages back. A device still open once the
# devices above it are gone (a pool that let go of its data device late) is waited for, up to
# 10 s, and noted in failures.tsv as a "teardown" entry of the target that last had a pool.
LAST_T=- LAST_R=-
reset() {
  local i t0 left=""
  t0=$(usec)
  dmsetup remove_all >/dev/null 2>&1
  for ((i = 0; i < 50; i++)); do
    compgen -G '/sys/block/dm-*' >/dev/null || break
    [ -n "$left" ] || left=$(cat /sys/block/dm-*/dm/name | tr '\n' ' ')
    sleep 0.2
    dmsetup remove_all >/dev/null 2>&1
  done
  if [ -n "$left" ]; then
    fail teardown "$LAST_T" "$LAST_R" "still open after dmsetup remove_all: ${left}($(
      [ "$i" = 50 ] && echo 'not gone after 10 s' ||
        awk -v a="$t0" -v b="$(usec)" 'BEGIN { printf "gone after %.1f s of retries", (b - a) / 1e6 }'))"
  fi
  blkdiscard "$META" 2>/dev/null
  blkdiscard "$DATA" 2>/dev/null
  return 0
}

# pool TARGET BS [FEATURE...]: a pool over the whole data disk (metadata formatted afresh).
pool() {
  local t=$1 bs=$2 nb feat=""
  shift 2
  LAST_T=$t
  [ $# -gt 0 ] && feat=" $# $*"
  nb=$(($(cat /sys/block/${DATA#/dev/}/size) / bs))
  dd if=/dev/zero of="$META" bs=4096 count=1 oflag=direct status=none || return 1
  POOL=$(dm pool "0 $((nb * bs)) $(pool_target "$t") $META $DATA $bs 0$feat") || return 1
}

# thin TARGET NAME ID SECTORS [new]: activate thin ID (created first with "new"); prints the device.
thin() {
  if [ "${5:-}" = new ]; then dmsetup message pool 0 create_thin "$3" || return 1; fi
  dm "$2" "0 $4 $(thin_target "$1") $POOL $3"
}

# vol TARGET [FEATURE...]: one volume of VOL sectors: linear on the data disk, or thin 0 of a
# fresh pool (data block BS). Sets DEV.
vol() {
  local t=$1
  shift
  if [ "$t" = linear ]; then
    DEV=$(dm vol "0 $VOL linear $DATA 0")
  else
    pool "$t" "$BS" "$@" && DEV=$(thin "$t" vol 0 "$VOL" new)
  fi
}

# used: the pool's used data blocks.
used() {
  local -a f
  read -ra f <<<"$(dmsetup status pool)"
  printf '%s\n' "${f[5]%/*}"
}

# snap NEWID ORIGID [ACTIVE_DEV_NAME]: create_snap, the active origin suspended around it.
snap() {
  local r=0
  [ -n "${3:-}" ] && { dmsetup suspend "$3" || return 1; }
  dmsetup message pool 0 create_snap "$1" "$2" || r=1
  [ -n "${3:-}" ] && { dmsetup resume "$3" || r=1; }
  return $r
}

# iolog FILE NBLOCKS BLOCK_BYTES LEN SEED: an fio replay log writing LEN bytes once into each of
# NBLOCKS blocks, in a random order, at a random LEN-aligned offset inside the block.
iolog() {
  awk -v n="$2" -v blk="$3" -v len="$4" -v seed="$5" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) a[i] = i
    for (i = n - 1; i > 0; i--) { j = int(rand() * (i + 1)); t = a[i]; a[i] = a[j]; a[j] = t }
    print "fio version 2 iolog"; print "bench add"; print "bench open"
    slots = blk / len
    for (i = 0; i < n; i++) printf "bench write %.0f %d\n", a[i] * blk + int(rand() * slots) * len, len
    print "bench close"
  }' >"$1"
}

# fio_run WORKLOAD TARGET REP FIO_ARGS...: one measured fio run (JSON to raw/); fails on error.
fio_run() {
  local wl=$1 t=$2 r=$3 rc
  shift 3
  log "$wl on $t (rep $r)"
  fio --output-format=json --output="$out/raw/$wl.$t.$r.json.tmp" --direct=1 --ioengine=libaio \
    --iodepth="$QD" --group_reporting "$@" >"$WORK/fio.err" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    mv "$out/raw/$wl.$t.$r.json.tmp" "$out/raw/$wl.$t.$r.json"
  else
    rm -f "$out/raw/$wl.$t.$r.json.tmp"
    fail "$wl" "$t" "$r" "fio exited $rc: $(tail -n 2 "$WORK/fio.err" | tr '\n' ' ')"
  fi
  return $rc
}

# fill DEV SECTORS: provision/write the whole range (not measured).
fill() { fio --name=fill --filename="$1" --direct=1 --ioengine=libaio --iodepth=4 --rw=write --bs=1M \
  --size=$(($2 * 512)) >/dev/null 2>"$WORK/fill.err"; }

# expect_used WORKLOAD TARGET REP N: a thin pool must have exactly N used data blocks.
expect_used() {
  local u
  [ "$2" = linear ] && return 0
  u=$(used)
  [ "$u" = "$4" ] || fail "$1" "$2" "$3" "wrong result: pool has $u used data blocks, expected $4"
}

mem() {
  local t=$1 r=$2 phase=$3 slab bufio
  slab=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
  bufio=$(cat /sys/module/dm_bufio/parameters/current_allocated_bytes 2>/dev/null || echo 0)
  tsv memory "$t" "$r" "$phase" slab_kib "$slab"
  tsv memory "$t" "$r" "$phase" bufio_bytes "$bufio"
}

# --- workload groups: each NAME TARGET REP sets up, measures, tears down -------------------------

blocks=$((VOL / BS))

# First write, sequential 1 MiB and random 4 KiB (one write per data block), zeroing on and off.
g_provision() {
  local t=$1 r=$2 z feat
  for z in zero nozero; do
    feat=()
    [ $z = nozero ] && feat=(skip_block_zeroing)
    reset
    if vol "$t" "${feat[@]}"; then
      fio_run "prov-seq1m-$z" "$t" "$r" --name=w --filename="$DEV" --rw=write --bs=1M --size=$((VOL * 512)) &&
        expect_used "prov-seq1m-$z" "$t" "$r" "$blocks"
    else fail "prov-seq1m-$z" "$t" "$r" "set-up failed"; fi
    reset
    iolog "$WORK/prov.log" "$blocks" $((BS * 512)) 4096 "$r"
    if vol "$t" "${feat[@]}"; then
      fio_run "prov-rand4k-$z" "$t" "$r" --name=w --rw=randwrite --bs=4k --read_iolog="$WORK/prov.log" \
        --replay_redirect="$DEV" --replay_no_stall=1 &&
        expect_used "prov-rand4k-$z" "$t" "$r" "$blocks"
    else fail "prov-rand4k-$z" "$t" "$r" "set-up failed"; fi
  done
}

# Provisioned blocks: random 4 KiB write, random 4 KiB read, sequential 1 MiB read; memory at
# rest and under load.
g_provisioned() {
  local t=$1 r=$2 tb=(--time_based --runtime="$RUNTIME" --size=$((VOL * 512)))
  reset
  mem "$t" "$r" idle
  vol "$t" && fill "$DEV" "$VOL" || { fail overwrite-rand4k "$t" "$r" "set-up failed"; return; }
  sleep 1.5
  mem "$t" "$r" rest
  (sleep "$(awk -v r="$RUNTIME" 'BEGIN { print r / 2 + 0.5 }')"; mem "$t" "$r" load) &
  fio_run overwrite-rand4k "$t" "$r" --name=w --filename="$DEV" --rw=randwrite --bs=4k "${tb[@]}"
  wait
  expect_used overwrite-rand4k "$t" "$r" "$blocks"
  fio_run read-rand4k "$t" "$r" --name=r --filename="$DEV" --rw=randread --bs=4k "${tb[@]}"
  fio_run read-seq1m "$t" "$r" --name=r --filename="$DEV" --rw=read --bs=1M "${tb[@]}"
}

# Breaking sharing after a snapshot: random 4 KiB writes (one per block: a copy each), then,
# after a second snapshot, full-block writes (no copy).
g_snapshot() {
  local t=$1 r=$2 blk=$((BS * 512))
  reset
  vol "$t" && fill "$DEV" "$VOL" || { fail snap-break-rand4k "$t" "$r" "set-up failed"; return; }
  iolog "$WORK/snap4k.log" "$blocks" "$blk" 4096 $((r + 100))
  iolog "$WORK/snapfull.log" "$blocks" "$blk" "$blk" $((r + 200))
  if [ "$t" != linear ]; then snap 1 0 vol || { fail snap-break-rand4k "$t" "$r" "create_snap failed"; return; }; fi
  fio_run snap-break-rand4k "$t" "$r" --name=w --rw=randwrite --bs=4k --read_iolog="$WORK/snap4k.log" \
    --replay_redirect="$DEV" --replay_no_stall=1 && expect_used snap-break-rand4k "$t" "$r" $((2 * blocks))
  if [ "$t" != linear ]; then snap 2 0 vol || { fail snap-break-fullblock "$t" "$r" "create_snap failed"; return; }; fi
  fio_run snap-break-fullblock "$t" "$r" --name=w --rw=randwrite --bs="$blk" --read_iolog="$WORK/snapfull.log" \
    --replay_redirect="$DEV" --replay_no_stall=1 && expect_used snap-break-fullblock "$t" "$r" $((3 * blocks))
}

# Discard of a whole (provisioned) volume.
g_discard() {
  local t=$1 r=$2 t0 t1
  reset
  vol "$t" && fill "$DEV" "$VOL" || { fail discard "$t" "$r" "set-up failed"; return; }
  log "discard on $t (rep $r)"
  t0=$(usec)
  if blkdiscard "$DEV" 2>"$WORK/discard.err"; then
    t1=$(usec)
    tsv timings discard "$t" "$r" seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')"
    tsv timings discard "$t" "$r" bytes $((VOL * 512))
    expect_used discard "$t" "$r" 0
  else
    fail discard "$t" "$r" "blkdiscard: $(tail -n 1 "$WORK/discard.err")"
  fi
}

# Four jobs on four volumes at once: first write (sequential 1 MiB), then random 4 KiB overwrite.
g_four() {
  local t=$1 r=$2 q=$((VOL / 4)) i d devs=() jobs=()
  reset
  if [ "$t" = linear ]; then
    for i in 0 1 2 3; do d=$(dm "v$i" "0 $q linear $DATA $((i * q))") || break; devs+=("$d"); done
  else
    pool "$t" "$BS" && for i in 0 1 2 3; do d=$(thin "$t" "v$i" "$i" "$q" new) || break; devs+=("$d"); done
  fi
  [ ${#devs[@]} = 4 ] || { fail 4thins-prov-seq1m "$t" "$r" "set-up failed"; return; }
  for i in 0 1 2 3; do jobs+=(--name="j$i" --filename="${devs[$i]}"); done
  fio_run 4thins-prov-seq1m "$t" "$r" --rw=write --bs=1M --size=$((q * 512)) "${jobs[@]}" &&
    expect_used 4thins-prov-seq1m "$t" "$r" "$blocks"
  fio_run 4thins-overwrite-rand4k "$t" "$r" --rw=randwrite --bs=4k --size=$((q * 512)) --time_based \
    --runtime="$RUNTIME" "${jobs[@]}"
}

# Commit latency under a FLUSH-heavy load: random 4 KiB writes to a new volume, fsync after each.
g_fsync() {
  local t=$1 r=$2
  reset
  vol "$t" || { fail fsync-rand4k "$t" "$r" "set-up failed"; return; }
  fio_run fsync-rand4k "$t" "$r" --name=w --filename="$DEV" --rw=randwrite --bs=4k --iodepth=1 --fsync=1 \
    --size=$((VOL * 512)) --time_based --runtime="$RUNTIME"
}

# Growth with the data block size: first write (sequential 1 MiB, zeroing on), random 4 KiB
# overwrite. (64 KiB is prov-seq1m-zero / overwrite-rand4k.) Thin targets only.
g_blocksize() {
  local t=$1 r=$2 k save=$BS
  [ "$t" = linear ] && return
  for k in $BLOCK_KIB; do
    BS=$((k * 2))
    reset
    if vol "$t"; then
      fio_run "bs${k}k-prov-seq1m" "$t" "$r" --name=w --filename="$DEV" --rw=write --bs=1M --size=$((VOL * 512)) &&
        expect_used "bs${k}k-prov-seq1m" "$t" "$r" $((VOL / BS))
      fio_run "bs${k}k-overwrite-rand4k" "$t" "$r" --name=w --filename="$DEV" --rw=randwrite --bs=4k \
        --size=$((VOL * 512)) --time_based --runtime="$RUNTIME"
    else fail "bs${k}k-prov-seq1m" "$t" "$r" "set-up failed"; fi
  done
  BS=$save
}

# Growth with the snapshot depth: a chain of D snapshots (each of the previous one) of a full
# volume; random 4 KiB writes breaking sharing on the last one. Thin targets only.
g_depth() {
  local t=$1 r=$2 d i t0 t1 ok dev
  [ "$t" = linear ] && return
  iolog "$WORK/depth.log" "$blocks" $((BS * 512)) 4096 $((r + 300))
  for d in $DEPTHS; do
    reset
    vol "$t" && fill "$DEV" "$VOL" || { fail "depth$d-break-rand4k" "$t" "$r" "set-up failed"; continue; }
    t0=$(usec) ok=1
    snap 1 0 vol || ok=0
    for ((i = 2; i <= d && ok; i++)); do dmsetup message pool 0 create_snap "$i" $((i - 1)) || ok=0; done
    t1=$(usec)
    [ $ok = 1 ] || { fail "depth$d-break-rand4k" "$t" "$r" "create_snap chain failed at $i"; continue; }
    tsv timings "depth$d-chain" "$t" "$r" seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')"
    dev=$(thin "$t" last "$d" "$VOL") || { fail "depth$d-break-rand4k" "$t" "$r" "activating snapshot $d failed"; continue; }
    fio_run "depth$d-break-rand4k" "$t" "$r" --name=w --rw=randwrite --bs=4k --read_iolog="$WORK/depth.log" \
      --replay_redirect="$dev" --replay_no_stall=1 && expect_used "depth$d-break-rand4k" "$t" "$r" $((2 * blocks))
  done
}

# timed NAME TARGET REP CMD...: wall time of CMD (a dmsetup run; its start-up cost is measured
# separately as dmsetup-status) into timings.tsv.
timed() {
  local wl=$1 t=$2 r=$3 t0 t1
  shift 3
  t0=$(usec)
  if "$@" >/dev/null 2>"$WORK/timed.err"; then
    t1=$(usec)
    tsv timings "$wl" "$t" "$r" seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')"
  else
    fail "$wl" "$t" "$r" "$* failed: $(tail -n 1 "$WORK/timed.err")"
    return 1
  fi
}

# Metadata operations on thin 0 with N mapped blocks: the metadata is built offline
# (thin_restore of a one-line range mapping; the data disk is dm-zero, never written), then
# create_snap, delete of the snapshot (shared tree), delete of the origin (every block unmapped).
g_metadata() {
  local t=$1 r=$2 n nb z
  [ "$t" = linear ] && return
  for n in $MAPPED; do
    reset
    nb=$((n + 1024))
    cat >"$WORK/meta.xml" <<XML
<superblock uuid="" time="1" transaction="1" flags="0" version="2" data_block_size="$BS" nr_data_blocks="$nb">
  <device dev_id="0" mapped_blocks="$n" transaction="0" creation_time="0" snap_time="0">
    <range_mapping origin_begin="0" data_begin="0" length="$n" time="0"/>
  </device>
</superblock>
XML
    if ! thin_restore -q -i "$WORK/meta.xml" -o "$META" >"$WORK/restore.err" 2>&1; then
      fail "meta$n-create-snap" "$t" "$r" "thin_restore: $(tail -n 1 "$WORK/restore.err")"
      continue
    fi
    z=$(dm zdata "0 $((nb * BS)) zero") &&
      LAST_T=$t &&
      POOL=$(dm pool "0 $((nb * BS)) $(pool_target "$t") $META $z $BS 0") ||
      { fail "meta$n-create-snap" "$t" "$r" "pool activation failed"; continue; }
    [ "$(used)" = "$n" ] || fail "meta$n-create-snap" "$t" "$r" "wrong result: $(used) used blocks after restore, expected $n"
    timed "meta$n-status" "$t" "$r" dmsetup status pool
    timed "meta$n-create-snap" "$t" "$r" dmsetup message pool 0 create_snap 1 0 &&
      timed "meta$n-delete-snap" "$t" "$r" dmsetup message pool 0 delete 1 &&
      timed "meta$n-delete-origin" "$t" "$r" dmsetup message pool 0 delete 0 &&
      { [ "$(used)" = 0 ] || fail "meta$n-delete-origin" "$t" "$r" "wrong result: $(used) used blocks after deleting everything"; }
    mem "$t" "$r" "meta$n"
  done
}

# --- main ---------------------------------------------------------------------------------------
for m in dm-thin-pool dm-rthin; do modprobe "$m" || { log "modprobe $m failed"; exit 1; }; done
rm -f "$out"/*.tsv "$WORK"/*.tsv "$out"/raw/*
tsv env kernel "$(uname -r)"
tsv env guest_cpus "$(nproc)"
tsv env guest_mem_kib "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
tsv env fio "$(fio --version)"
tsv env reps "$REPS"
tsv env runtime_s "$RUNTIME"
tsv env volume_mib "$SIZE_MB"
tsv env iodepth "$QD"
tsv env data_block_kib $((BS / 2))
tsv env data_disk_mib $(($(cat /sys/block/${DATA#/dev/}/size) / 2048))
tsv env mapped "$MAPPED"
tsv env depths "$DEPTHS"
tsv env block_kib "$BLOCK_KIB"
while read -r name size _; do
  case $name in dm_rthin | dm_thin_pool | dm_persistent_data | dm_bio_prison | dm_bufio) tsv memory - - module "$name" "$size" ;; esac
done </proc/modules

read -ra targets <<<"$TARGETS"
groups=(g_provision g_provisioned g_snapshot g_discard g_four g_fsync g_blocksize g_depth g_metadata)
start=$SECONDS
for ((r = 0; r < REPS; r++)); do
  order=()
  for ((i = 0; i < ${#targets[@]}; i++)); do order+=("${targets[$(((i + r) % ${#targets[@]}))]}"); done
  tsv env "order_rep$r" "${order[*]}"
  for g in "${groups[@]}"; do
    [[ $g =~ $ONLY ]] || continue
    for t in "${order[@]}"; do LAST_R=$r; "$g" "$t" "$r"; done
  done
  log "repetition $r done after $((SECONDS - start)) s"
done
reset
tsv env guest_seconds $((SECONDS - start))
log "done in $((SECONDS - start)) s"
