#!/usr/bin/env bash
# `make bench`: fio and metadata-operation timings of dm-linear, the kernel's thin-pool/thin and
# our rthin-pool/rthin, side by side in one guest run (tests/bench/guest-bench.sh), then the
# report (scripts/bench-report.py): a table on stdout and results/bench/latest.{md,json,png}.
#
#   scripts/bench.sh [--quick]
#
# --quick (or BENCH_QUICK=1): one repetition, 1 s jobs, 32 MiB volumes, smaller metadata and
# depth cases, ~5 minutes; the report goes to $RTHIN_CACHE/bench/quick, not results/bench.
# A full run takes about 35 minutes under TCG on 2 shared cores (a quarter of it rthin's delete
# of a thin with 1M mapped blocks, ~3 minutes each time).
# Knobs passed to the guest (see tests/bench/guest-bench.sh): BENCH_REPS, BENCH_RUNTIME,
# BENCH_SIZE_MB, BENCH_QD, BENCH_MAPPED, BENCH_DEPTHS, BENCH_BLOCK_KIB, BENCH_TARGETS, BENCH_ONLY.
# BENCH_OUT: report directory (results/bench); BENCH_TIMEOUT: guest time limit (3600 s).
# The raw results of the last run stay in $RTHIN_CACHE/bench/raw (quick runs: raw-quick).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$RTHIN_TOP"

quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
out=${BENCH_OUT:-$RTHIN_TOP/results/bench}
if [ "$quick" = 1 ]; then
  out=${BENCH_OUT:-$RTHIN_CACHE/bench/quick}
  : "${BENCH_REPS:=1}" "${BENCH_RUNTIME:=1}" "${BENCH_SIZE_MB:=32}" "${BENCH_MAPPED:=1000 100000}"
  : "${BENCH_DEPTHS:=1 10}" "${BENCH_BLOCK_KIB:=512}"
fi

# The chart needs matplotlib (Debian's python3-matplotlib), installed on first use.
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  [ "$(id -u)" = 0 ] || rthin_die "python3-matplotlib is missing; run as root so it can be installed"
  rthin_log "installing python3-matplotlib (for the chart)"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib >&2
fi

# The accelerator, decided as qemu/run decides it, and passed on explicitly.
accel=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine="$cpu, $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; host $(uname -sr)"

# The host's load average goes into the report: other work on the host slows the guest.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
raw=$RTHIN_CACHE/bench/raw
[ "$quick" = 1 ] && raw=$RTHIN_CACHE/bench/raw-quick   # a quick run keeps the last full run's data
rm -rf "$raw" && mkdir -p "$raw"
envs=()
for v in BENCH_REPS BENCH_RUNTIME BENCH_SIZE_MB BENCH_QD BENCH_MAPPED BENCH_DEPTHS BENCH_BLOCK_KIB BENCH_TARGETS BENCH_ONLY; do
  [ -n "${!v:-}" ] && envs+=(--env "$v=${!v}")
done
rthin_log "benchmark in the guest ($accel); raw results in $raw"
# Two 1 GiB RAM disks (brd, pages allocated on write, freed on discard): metadata and data.
status=0
qemu/run --accel "$accel" --mem 2560M --smp 2 --timeout "${BENCH_TIMEOUT:-3600}" \
  --append "brd.rd_nr=2 brd.rd_size=1048576" --share "$raw:/results" "${envs[@]}" \
  -- /rthin/tests/bench/guest-bench.sh /results || status=$?
[ -s "$raw/env.tsv" ] || rthin_die "the guest wrote no results (qemu/run exit $status)"
[ "$status" = 0 ] || rthin_log "the guest run ended with status $status: the report shows what it measured"
machine+="; host load average (1, 5, 15 min) $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
# The README's short table follows the committed report (results/bench), not quick or other runs.
readme=()
[ "$out" = "$RTHIN_TOP/results/bench" ] && readme=(--readme "$RTHIN_TOP/README.md")
python3 scripts/bench-report.py "$raw" "$out" --machine "$machine" --accel "$accel" "${readme[@]}"
rthin_log "report: $out/latest.md, $out/latest.json, $out/latest.png"
exit "$status"
