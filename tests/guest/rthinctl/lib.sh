# Helpers for the rthinctl guest tests (tests/guest/rthinctl/[0-9]*.sh). Source it.
# shellcheck shell=bash
#
# Every script runs its cases once per target family: TARGETS (default "rthin thin") names
# them, rthinctl's --target values; result names end in "-rthin" or "-thin".
# shellcheck source=../../lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/lib.sh"

TARGETS=${TARGETS:-rthin thin}
RC_WORK=${RC_WORK:-/tmp/rthinctl-test}
export RTHINCTL_HOME=$RC_WORK/home

# rc_reset: nothing of a previous case left (devices, loops, registry, files, mounts).
rc_reset() {
  local dev m rest
  while read -r dev m rest; do
    case $dev in /dev/mapper/*) umount "$m" 2>/dev/null ;; esac
  done </proc/mounts
  dmsetup remove_all >/dev/null 2>&1
  losetup -D >/dev/null 2>&1
  rm -rf "$RC_WORK"
  mkdir -p "$RC_WORK"
}

# rc_status CMD...: run CMD quietly, print its exit status.
rc_status() {
  "$@" >"$RC_WORK/out" 2>&1
  echo $?
}

# expect_status NAME WANT CMD...: PASS if CMD exits with WANT and, when it fails, says why in
# exactly one line on stderr.
expect_status() {
  local name=$1 want=$2 got lines
  shift 2
  "$@" >"$RC_WORK/out" 2>"$RC_WORK/err"
  got=$?
  lines=$(wc -l <"$RC_WORK/err")
  if [ "$got" != "$want" ]; then
    fail "$name" "exit $got, expected $want: $(tail -n 1 "$RC_WORK/err")"
  elif [ "$want" != 0 ] && [ "$lines" != 1 ]; then
    fail "$name" "$lines lines on stderr, expected one: $(tr '\n' '|' <"$RC_WORK/err")"
  else
    pass "$name"
  fi
}

# json FIELD: a top-level number/bool/string field of the JSON object on stdin (no jq here).
json() {
  tr -d '\n' | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p"
}

# dev_count: dm devices present.
dev_count() { dmsetup ls 2>/dev/null | grep -vc '^No devices'; }

# loop_count: attached loop devices.
loop_count() { losetup -a | grep -c .; }

# vol_field VOLUME FIELD: FIELD of VOLUME in `rthinctl thin list --json`.
vol_field() {
  rthinctl thin list --json 2>/dev/null | awk -v RS='}' -v n="\"$1\"" -v f="\"$2\"" '
    index($0, "\"name\": " n ",") {
      i = index($0, f ": ")
      if (i) { s = substr($0, i + length(f) + 2); sub(/[,\n].*/, "", s); gsub(/"/, "", s); print s }
    }'
}
