# Shared helpers for the data-path guest tests (tests/guest/datapath/*.sh). Source it after
# shellcheck disable=SC2015,SC2317 # `a && pass || fail` on purpose (pass cannot fail); helpers are called indirectly
# tests/lib.sh. Every test is parameterised on the target names:
#   POOL_TARGET (default rthin-pool), THIN_TARGET (default rthin)
# so the same script proves itself against the kernel's C `thin-pool`/`thin` today
# (POOL_TARGET=thin-pool THIN_TARGET=thin) and tests ours once the data path lands.
#
# Devices: sparse files in $TL_WORK (tmpfs) on loop devices, so nothing needs a --disk; data
# blocks are 128 sectors (64 KiB) everywhere.
# shellcheck shell=bash

POOL_TARGET=${POOL_TARGET:-rthin-pool}
THIN_TARGET=${THIN_TARGET:-rthin}
TL_BS=128      # data block size in sectors
TL_BLK=65536   # ... in bytes
TL_WORK=${TL_WORK:-/tmp/rthin-datapath}
TL_DEVS=""     # dm devices we created, newest first (removed in that order)
TL_LOOPS=""    # loop devices we attached
TL_MNTS=""     # mount points we used

# errno texts as dmsetup and dd print them (used by the scripts that source this file)
# shellcheck disable=SC2034
{
  ENOSPC_TEXT="No space left on device"
  EEXIST_TEXT="File exists"
  ENODATA_TEXT="No data available"
  EINVAL_TEXT="Invalid argument"
  EBUSY_TEXT="Device or resource busy"
  EOPNOTSUPP_TEXT="Operation not supported"
  EIO_TEXT="Input/output error"
}

mkdir -p "$TL_WORK"
# TL_TRACE=1: trace every command with a timestamp (to find what is slow under TCG).
if [ -n "${TL_TRACE:-}" ]; then
  PS4='+ ${EPOCHREALTIME} '
  set -x
fi

# tl_module_for TARGET: the module that registers TARGET.
tl_module_for() {
  case $1 in
  thin-pool | thin) echo dm-thin-pool ;;
  rthin-pool | rthin) echo dm-rthin ;;
  *) echo "dm-$1" ;;
  esac
}

# tl_load TARGET...: load the modules of TARGETs; FAIL "modules-load" and exit if one fails.
tl_load() {
  local t m
  for t in "$@"; do
    m=$(tl_module_for "$t")
    if ! modprobe "$m" 2>/dev/null; then
      fail "modules-load" "modprobe $m (for target $t) failed"
      finish
    fi
  done
  for t in "$@"; do
    if ! dmsetup targets | grep -q "^$t "; then
      fail "modules-load" "target $t is not registered after loading $(tl_module_for "$t")"
      finish
    fi
  done
}

# tl_file NAME SIZE: a sparse backing file $TL_WORK/NAME.img of SIZE (truncate syntax); prints it.
tl_file() {
  rm -f "$TL_WORK/$1.img"
  truncate -s "$2" "$TL_WORK/$1.img" && echo "$TL_WORK/$1.img"
}

# tl_loop FILE: attach FILE to a free loop device; prints the device.
tl_loop() {
  local d
  d=$(losetup -f --show "$1") || return 1
  TL_LOOPS="$d $TL_LOOPS"
  echo "$d"
}

# tl_alloc FILE: bytes allocated to FILE (stat %b * %B).
tl_alloc() { echo $(($(stat -c '%b * %B' "$1"))); }

# `timeout` is a busybox applet and busybox runs its own applet for a bare command name it knows:
# `timeout 60 dd` would be busybox dd, whose unaligned buffers fail O_DIRECT with EINVAL. So
# timeout always gets the full path /usr/bin/dd (GNU dd).

# Under TCG every dmsetup run costs ~0.25 s (dynamic loading), a busybox applet ~20 ms: the
# helpers below run as few processes as they can (bash builtins for parsing, no mknodes).

# tl_link NAME...: /dev/mapper/NAME -> /dev/dm-N (devtmpfs makes dm-N; there is no udev).
tl_link() {
  local f n name
  for f in /sys/block/dm-*/dm/name; do
    read -r n <"$f" || continue
    for name in "$@"; do
      if [ "$n" = "$name" ]; then
        f=${f#/sys/block/}
        ln -sfn "/dev/${f%%/*}" "/dev/mapper/$name"
      fi
    done
  done
}

# tl_dm_create NAME TABLE: create dm device NAME with TABLE and /dev/mapper/NAME.
tl_dm_create() {
  dmsetup create "$1" --table "$2" || return 1
  TL_DEVS="$1 $TL_DEVS"
  tl_link "$1"
  [ -b "/dev/mapper/$1" ]
}

# tl_forget NAME...: drop NAMEs from the list of devices to clean up.
tl_forget() {
  local d n keep=""
  for d in $TL_DEVS; do
    for n in "$@"; do [ "$d" = "$n" ] && continue 2; done
    keep="$keep $d"
  done
  TL_DEVS=$keep
}

# tl_remove NAME: remove dm device NAME (retrying while it is briefly busy).
tl_remove() {
  local i
  if ! dmsetup remove "$1" 2>/dev/null; then
    for i in 1 2 3 4 5 6 7 8 9 10; do
      sleep 0.3
      dmsetup remove "$1" 2>/dev/null && break
      [ "$i" = 10 ] && { dmsetup remove "$1"; return 1; }
    done
  fi
  [ -L "/dev/mapper/$1" ] && rm -f "/dev/mapper/$1"
  tl_forget "$1"
  return 0
}

# tl_pool NAME META DATA NBLOCKS [LWM [FEATURE...]]: a pool of NBLOCKS data blocks.
tl_pool() {
  local name=$1 meta=$2 data=$3 nb=$4 lwm=${5:-0} feat=""
  shift 5 2>/dev/null || shift $#
  [ $# -gt 0 ] && feat=" $# $*"
  tl_dm_create "$name" "0 $((nb * TL_BS)) $POOL_TARGET $meta $data $TL_BS $lwm$feat"
}

# tl_pool_reload NAME META DATA NBLOCKS [LWM [FEATURE...]]: reload + resume with a new table.
tl_pool_reload() {
  local name=$1 meta=$2 data=$3 nb=$4 lwm=${5:-0} feat=""
  shift 5 2>/dev/null || shift $#
  [ $# -gt 0 ] && feat=" $# $*"
  dmsetup reload "$name" --table "0 $((nb * TL_BS)) $POOL_TARGET $meta $data $TL_BS $lwm$feat" &&
    dmsetup resume "$name"
}

# tl_thin NAME POOL ID SECTORS: activate thin ID of POOL as NAME.
tl_thin() { tl_dm_create "$1" "0 $4 $THIN_TARGET /dev/mapper/$2 $3"; }

# tl_msg POOL MESSAGE...: send a pool message.
tl_msg() {
  local p=$1
  shift
  dmsetup message "$p" 0 "$*"
}

# tl_snap POOL NEWID ORIGID [ORIGIN_DM_NAME]: create_snap, suspending the active origin.
tl_snap() {
  local r=0
  [ -n "$4" ] && { dmsetup suspend "$4" || return 1; }
  tl_msg "$1" create_snap "$2" "$3" || r=1
  [ -n "$4" ] && { dmsetup resume "$4" || r=1; }
  return $r
}

# tl_pstatus POOL: the pool's status fields after the target name (the line as the target
# prints it, trailing space included).
tl_pstatus() {
  local s
  s=$(dmsetup status "$1") || return 1
  s=${s#* }
  s=${s#* }
  printf '%s\n' "${s#* }"
}

# tl_pfield POOL N: field N of the pool status (1 transaction id, 2 metadata used/total,
# 3 data used/total, 4 held root, 5 mode, 6 discard, 7 no-space policy, 8 needs_check, 9 lwm).
tl_pfield() {
  local -a _tlf
  read -ra _tlf <<<"$(dmsetup status "$1")"
  printf '%s\n' "${_tlf[$(($2 + 2))]}"
}

# tl_used POOL: used data blocks. tl_total POOL: data blocks.
tl_used() {
  local u
  u=$(tl_pfield "$1" 3)
  printf '%s\n' "${u%/*}"
}
tl_total() {
  local u
  u=$(tl_pfield "$1" 3)
  printf '%s\n' "${u#*/}"
}

# tl_tstatus THIN: the thin's status fields after the target name.
tl_tstatus() { tl_pstatus "$1"; }

# tl_events NAME: the device's event counter.
tl_events() {
  local e
  e=$(dmsetup info -c --noheadings -o events "$1")
  printf '%s\n' "${e// /}"
}

# tl_pattern SEED BYTES: deterministic non-zero data, distinct per SEED.
tl_pattern() { yes "rthin:$1:" | head -c "$2"; }

# tl_wblk DEV BLOCK SEED [NBLOCKS]: write NBLOCKS (1) whole data blocks of pattern SEED at data
# block BLOCK of DEV, O_DIRECT.
tl_wblk() {
  yes "rthin:$3:" | timeout 60 /usr/bin/dd of="$1" bs=$TL_BLK seek="$2" count="${4:-1}" iflag=fullblock \
    oflag=direct status=none
}

# tl_sum FILE: md5 of a file.
tl_sum() {
  local s
  s=$(md5sum "$1") || return 1
  printf '%s\n' "${s%% *}"
}
tl_file_sum() { tl_sum "$1"; }

# tl_rblk_sum DEV BLOCK [NBLOCKS]: md5 of NBLOCKS (1) data blocks of DEV from BLOCK, O_DIRECT.
# (Through a tmpfs file: under TCG a pipe into md5sum is twice as slow.)
tl_rblk_sum() {
  timeout 120 /usr/bin/dd if="$1" of="$TL_WORK/.sum" bs=$TL_BLK skip="$2" count="${3:-1}" iflag=direct status=none &&
    tl_sum "$TL_WORK/.sum"
}

# tl_pattern_sum SEED NBLOCKS: md5 of what tl_wblk writes for SEED over NBLOCKS data blocks.
tl_pattern_sum() {
  tl_pattern "$1" $(($2 * TL_BLK)) >"$TL_WORK/.psum"
  tl_sum "$TL_WORK/.psum"
}

# tl_zero_sum BYTES: md5 of BYTES zero bytes.
tl_zero_sum() {
  rm -f "$TL_WORK/.zsum"
  truncate -s "$1" "$TL_WORK/.zsum"
  tl_sum "$TL_WORK/.zsum"
}

# tl_dev_sum DEV: md5 of the whole device, O_DIRECT.
tl_dev_sum() {
  timeout 120 /usr/bin/dd if="$1" of="$TL_WORK/.sum" bs=1M iflag=direct status=none && tl_sum "$TL_WORK/.sum"
}

# tl_model_write MODEL OFFSET_BYTES SRC_FILE: apply a write to a model image (a plain file).
tl_model_write() { dd if="$3" of="$1" bs=512 seek=$(($2 / 512)) conv=notrunc status=none; }

# tl_mount DEV DIR [OPTS]
tl_mount() {
  mkdir -p "$2"
  mount -t ext4 ${3:+-o "$3"} "$1" "$2" || return 1
  TL_MNTS="$2 $TL_MNTS"
}

# tl_mkfs DEV: a quick ext4 (no up-front inode table / journal zeroing).
tl_mkfs() { mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$1" >/dev/null; }

# step NAME CMD...: like lib.sh's check, but CMD runs in this shell (state it changes is kept).
step() {
  local name=$1
  shift
  if "$@" >"$TL_WORK/.step-out" 2>&1; then pass "$name"; else
    fail "$name" "$(tail -n 1 "$TL_WORK/.step-out")"
    head -n 30 "$TL_WORK/.step-out" | sed 's/^/  | /' >&2
  fi
}

# expect_eq NAME GOT EXPECTED [WHAT]: PASS iff GOT = EXPECTED.
expect_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "${4:+$4: }got '$2', expected '$3'"; fi
}

# msg_fails NAME POOL ERRTEXT MESSAGE...: the message must fail and dmsetup must report ERRTEXT.
msg_fails() {
  local name=$1 pool=$2 err=$3 out
  shift 3
  if out=$(dmsetup message "$pool" 0 "$*" 2>&1); then
    fail "$name" "message '$*' succeeded"
  elif printf '%s' "$out" | grep -qF "$err"; then
    pass "$name"
  else
    fail "$name" "message '$*': expected '$err', got: $(printf '%s' "$out" | tail -n 1)"
  fi
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds; fails after SECONDS.
wait_for() {
  local end=$(($(date +%s) + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

# bg NAME CMD...: run CMD in the background; its exit status lands in $TL_WORK/NAME.rc.
# (A finished but unreaped child is a zombie that `kill -0` still finds: use bg_done.)
bg() {
  local n=$1
  shift
  rm -f "$TL_WORK/$n.rc"
  ("$@"; echo $? >"$TL_WORK/$n.rc.tmp"; mv "$TL_WORK/$n.rc.tmp" "$TL_WORK/$n.rc") &
}
# bg_done NAME: the background job has finished. bg_rc NAME: its exit status.
bg_done() { [ -e "$TL_WORK/$1.rc" ]; }
bg_rc() { return "$(cat "$TL_WORK/$1.rc")"; }

# tl_cleanup: unmount, remove our dm devices, detach loops, delete the work files.
tl_cleanup() {
  local m d
  for m in $TL_MNTS; do mountpoint -q "$m" && umount "$m" 2>/dev/null; done
  for d in $TL_DEVS; do
    dmsetup resume "$d" >/dev/null 2>&1
    dmsetup remove "$d" >/dev/null 2>&1 || dmsetup remove --force "$d" >/dev/null 2>&1
  done
  for d in $TL_LOOPS; do losetup -d "$d" 2>/dev/null; done
  TL_DEVS="" TL_LOOPS="" TL_MNTS=""
  rm -rf "$TL_WORK"
}
trap tl_cleanup EXIT

# Whole-pool helpers for tests that take a pool down and bring it back (portability between
# targets, persistence across boots). They use the caller's META, DATA (devices), NB (data
# blocks) and LEN (thin length in sectors); the pool is "pool", thin ID is "t<ID>".
# tl_open_all IDS: open the pool (low water mark 10) and activate thins IDS.
tl_open_all() {
  local id
  # shellcheck disable=SC2153 # META, DATA, NB and LEN are the caller's (see above)
  tl_pool pool "$META" "$DATA" "$NB" 10 || return 1
  for id in $1; do tl_thin "t$id" pool "$id" "$LEN" || return 1; done
}
# tl_close_all IDS: remove thins IDS, then the pool.
tl_close_all() {
  local id r=0
  for id in $1; do tl_remove "t$id" || r=1; done
  tl_remove pool || r=1
  return "$r"
}
# tl_snapshot IDS: pool status line, each thin's status and md5, one a line.
tl_snapshot() {
  local id
  echo "pool: $(tl_pstatus pool)"
  for id in $1; do echo "t$id: $(tl_tstatus "t$id") $(tl_dev_sum "/dev/mapper/t$id")"; done
}
# tl_same_state NAME FILE IDS: the open pool matches the state tl_snapshot wrote to FILE.
tl_same_state() {
  local now
  now=$(tl_snapshot "$3")
  if [ "$now" = "$(cat "$2")" ]; then pass "$1"; else
    fail "$1" "$(printf '%s\n' "$now" | diff "$2" - | grep '^[-+][^-+]' | tr '\n' ' ')"
  fi
}
