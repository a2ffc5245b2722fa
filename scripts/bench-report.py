#!/usr/bin/env python3
"""`make bench`, host side: turn the guest's raw results into a table, a JSON file and a chart.

    scripts/bench-report.py RAWDIR OUTDIR [--machine TEXT] [--accel NAME] [--date TEXT] [--readme FILE]

RAWDIR is what tests/bench/guest-bench.sh wrote (raw/*.json from fio, timings.tsv, memory.tsv,
failures.tsv, env.tsv). Writes OUTDIR/latest.md (the table), OUTDIR/latest.json and
OUTDIR/latest.png (the ratios, when matplotlib is there) and prints the table; with --readme,
also the short table between FILE's bench markers.

Every figure is the median over the repetitions, with the spread (min-max) next to it. Ratios
are performance ratios: above 1 means the first named target is faster (for timed operations
that is the inverse ratio of the times). The goals are reported, never asserted.
"""

import argparse
import datetime
import glob
import json
import os
import statistics
import sys

TARGETS = ("linear", "c", "ours")
TARGET_NAMES = {"linear": "dm-linear", "c": "dm-thin (C)", "ours": "rthin (ours)"}

GOAL_ALL = "ours >= 1.0x dm-thin"
GOAL_4K = "ours >= 1.2x dm-thin and >= 0.9x dm-linear"


def W(name, label, unit, linear_ref=None, goal=GOAL_ALL, kind="fio"):
    return {"name": name, "label": label, "unit": unit, "linear_ref": linear_ref, "goal": goal,
            "kind": kind}


def workloads(env):
    """The workloads in report order; parameterised ones from the run's env.tsv."""
    out = [
        W("prov-seq1m-zero", "first write, seq 1 MiB, zeroing on", "MiB/s", "prov-seq1m-zero"),
        W("prov-seq1m-nozero", "first write, seq 1 MiB, zeroing off", "MiB/s", "prov-seq1m-nozero"),
        W("prov-rand4k-zero", "first write, rand 4 KiB (1 per block), zeroing on", "IOPS",
          "prov-rand4k-zero"),
        W("prov-rand4k-nozero", "first write, rand 4 KiB (1 per block), zeroing off", "IOPS",
          "prov-rand4k-nozero"),
        W("overwrite-rand4k", "provisioned: rand 4 KiB write", "IOPS", "overwrite-rand4k", GOAL_4K),
        W("read-rand4k", "provisioned: rand 4 KiB read", "IOPS", "read-rand4k", GOAL_4K),
        W("read-seq1m", "provisioned: seq 1 MiB read", "MiB/s", "read-seq1m"),
        W("snap-break-rand4k", "after snapshot: rand 4 KiB write (copy)", "IOPS",
          "snap-break-rand4k"),
        W("snap-break-fullblock", "after snapshot: full-block write", "MiB/s",
          "snap-break-fullblock"),
        W("discard", "discard whole volume", "MiB/s", "discard", kind="discard"),
        W("4thins-prov-seq1m", "4 jobs, 4 volumes: first write seq 1 MiB", "MiB/s",
          "4thins-prov-seq1m"),
        W("4thins-overwrite-rand4k", "4 jobs, 4 volumes: rand 4 KiB overwrite", "IOPS",
          "4thins-overwrite-rand4k", GOAL_4K),
        W("fsync-rand4k", "new volume: rand 4 KiB write + fsync each (sync latency)", "IOPS",
          "fsync-rand4k"),
    ]
    for k in env.get("block_kib", "").split():
        out.append(W(f"bs{k}k-prov-seq1m", f"block {k} KiB: first write seq 1 MiB", "MiB/s",
                     "prov-seq1m-zero"))
        out.append(W(f"bs{k}k-overwrite-rand4k", f"block {k} KiB: rand 4 KiB overwrite", "IOPS",
                     "overwrite-rand4k", GOAL_4K))
    for d in env.get("depths", "").split():
        out.append(W(f"depth{d}-break-rand4k", f"snapshot chain {d} deep: rand 4 KiB write (copy)",
                     "IOPS", "snap-break-rand4k"))
    for d in env.get("depths", "").split():
        out.append(W(f"depth{d}-chain", f"create a chain of {d} snapshots", "ms", kind="time"))
    for n in env.get("mapped", "").split():
        for op, what in (("create-snap", "create_snap"), ("delete-snap", "delete the snapshot"),
                         ("delete-origin", "delete the origin")):
            out.append(W(f"meta{n}-{op}", f"{n} mapped blocks: {what} (dmsetup wall)", "ms",
                         kind="time"))
    if env.get("mapped"):
        n = env["mapped"].split()[0]
        out.append(W(f"meta{n}-status", "dmsetup status (start-up cost in the times above)", "ms",
                     kind="time", goal=None))
    return out


def read_tsv(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    rows.append(line.split("\t"))
    return rows


def pct(d, p):
    v = (d or {}).get("percentile", {}).get(p)
    return v / 1000.0 if v is not None else None


def fio_metrics(doc, unit):
    """One fio JSON document: the primary value in UNIT, p50/p99 latency in microseconds.
    For a job with syncs (fsync=1) the latencies are those of the syncs (the commits)."""
    job = doc["jobs"][0]
    d = "write" if job["write"]["io_bytes"] > 0 else "read"
    side = job[d]
    value = side["iops"] if unit == "IOPS" else side["bw_bytes"] / 1048576.0
    lat = side.get("clat_ns")
    sync = job.get("sync", {})
    if sync.get("total_ios", 0) > 0 and sync.get("lat_ns", {}).get("percentile"):
        lat = sync["lat_ns"]
    return {"value": value, "p50_us": pct(lat, "50.000000"), "p99_us": pct(lat, "99.000000")}


def summarize(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def load(rawdir):
    env = {r[0]: r[1] for r in read_tsv(os.path.join(rawdir, "env.tsv")) if len(r) >= 2}
    runs = {}  # (workload, target) -> list of per-rep dicts
    for path in sorted(glob.glob(os.path.join(rawdir, "raw", "*.json"))):
        base = os.path.basename(path)[:-len(".json")]
        wl, target, rep = base.rsplit(".", 2)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        # fio may print notes before the JSON document.
        doc = json.loads(text[text.index("{"):])
        runs.setdefault((wl, target), []).append((int(rep), doc))
    timings = {}
    for r in read_tsv(os.path.join(rawdir, "timings.tsv")):
        wl, target, rep, metric, value = r[:5]
        timings.setdefault((wl, target, int(rep)), {})[metric] = float(value)
    memory = read_tsv(os.path.join(rawdir, "memory.tsv"))
    failures = [{"workload": r[0], "target": r[1], "rep": r[2], "error": r[3] if len(r) > 3 else ""}
                for r in read_tsv(os.path.join(rawdir, "failures.tsv"))]
    return env, runs, timings, memory, failures


def measure(w, target, runs, timings):
    """Per-repetition values of workload W on TARGET."""
    vals, p50, p99 = [], [], []
    if w["kind"] == "fio":
        for _rep, doc in sorted(runs.get((w["name"], target), [])):
            m = fio_metrics(doc, w["unit"])
            vals.append(m["value"])
            if m["p50_us"] is not None:
                p50.append(m["p50_us"])
                p99.append(m["p99_us"])
    else:
        for (wl, t, _rep), m in sorted(timings.items()):
            if wl != w["name"] or t != target or "seconds" not in m:
                continue
            if w["kind"] == "discard":
                vals.append(m["bytes"] / 1048576.0 / m["seconds"] if m["seconds"] > 0 else 0.0)
            else:
                vals.append(m["seconds"] * 1000.0)
    s = summarize(vals)
    if s:
        s["values"] = vals
        s["p50_us"] = statistics.median(p50) if p50 else None
        s["p99_us"] = statistics.median(p99) if p99 else None
    return s


def ratio(a, b, higher_is_better):
    """Performance of A relative to B (> 1: A is better), from medians."""
    if not a or not b or a["median"] <= 0 or b["median"] <= 0:
        return None
    return a["median"] / b["median"] if higher_is_better else b["median"] / a["median"]


def goal_met(w, r_c, r_lin):
    if w["goal"] is None or r_c is None:
        return None
    if w["goal"] == GOAL_4K:
        return r_c >= 1.2 and (r_lin is None or r_lin >= 0.9)
    return r_c >= 1.0


def phase_label(phase):
    if phase == "rest":
        return "at rest (pool + full volume)"
    if phase == "load":
        return "under load (rand 4 KiB write)"
    if phase.startswith("meta"):
        return f"after metadata ops on {phase[4:]} mapped blocks"
    return phase


def memory_summary(memory):
    """Module sizes (bytes) and the median over repetitions of slab growth (KiB) and dm-bufio
    bytes per target and phase."""
    mods = {r[3]: int(r[4]) for r in memory if r[2] == "module"}
    per = {}
    for t, rep, phase, key, value in (r[:5] for r in memory if r[2] != "module"):
        per.setdefault((t, rep), {}).setdefault(phase, {})[key] = int(value)
    out = {"module_bytes": {
        "c": sum(mods.get(m, 0) for m in ("dm_thin_pool", "dm_persistent_data", "dm_bio_prison")),
        "ours": mods.get("dm_rthin", 0),
        "dm_bufio (shared)": mods.get("dm_bufio", 0)}, "targets": {}}
    for t in ("c", "ours"):
        rows = {}
        for (tt, _rep), phases in per.items():
            if tt != t or "idle" not in phases:
                continue
            idle = phases["idle"]["slab_kib"]
            for phase, kv in phases.items():
                if phase == "idle":
                    continue
                label = phase_label(phase)
                if "slab_kib" in kv:
                    rows.setdefault(f"slab growth, {label} (KiB)", []).append(kv["slab_kib"] - idle)
                if "bufio_bytes" in kv:
                    rows.setdefault(f"dm-bufio cache, {label} (KiB)", []).append(kv["bufio_bytes"] / 1024)
        out["targets"][t] = {k: statistics.median(v) for k, v in sorted(rows.items())}
    return out


def build(rawdir, machine="", accel="", date=""):
    env, runs, timings, memory, failures = load(rawdir)
    rows = []
    for w in workloads(env):
        hib = w["unit"] != "ms"
        res = {t: measure(w, t, runs, timings) for t in TARGETS}
        if w["linear_ref"] and w["linear_ref"] != w["name"]:
            ref = dict(w, name=w["linear_ref"])
            res["linear"] = measure(ref, "linear", runs, timings)
        failed = {f["target"] for f in failures if f["workload"] == w["name"]}
        if not any(res.values()) and not failed:
            continue
        r_c = ratio(res["ours"], res["c"], hib)
        r_lin = ratio(res["ours"], res["linear"], hib)
        rows.append({
            "workload": w["name"], "label": w["label"], "unit": w["unit"],
            "higher_is_better": hib, "linear_ref": w["linear_ref"],
            "results": res, "failed_targets": sorted(failed),
            "ours_vs_c": r_c, "ours_vs_linear": r_lin,
            "c_vs_linear": ratio(res["c"], res["linear"], hib),
            "goal": w["goal"], "goal_met": goal_met(w, r_c, r_lin),
        })
    return {
        "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine, "accelerator": accel, "env": env,
        "workloads": rows, "memory": memory_summary(memory), "failures": failures,
    }


def fmt_num(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(s, failed):
    if failed and not s:
        return "FAILED"
    if not s:
        return "-"
    text = fmt_num(s["median"])
    if s["n"] > 1:
        text += f" ({fmt_num(s['min'])}-{fmt_num(s['max'])})"
    return text + (" FAILED" if failed else "")


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_lat(s):
    if not s or s.get("p50_us") is None:
        return "-"
    return f"{fmt_num(s['p50_us'])} / {fmt_num(s['p99_us'])}"


def table(report):
    env = report["env"]
    lines = [
        f"Machine: {report['machine'] or '?'}; accelerator: {report['accelerator'] or '?'}; "
        f"guest kernel {env.get('kernel', '?')}, {env.get('guest_cpus', '?')} vCPUs; {report['date']}",
        "",
        f"Repetitions: {env.get('reps', '?')} (target order rotated each time); time-based jobs "
        f"{env.get('runtime_s', '?')} s; volume {env.get('volume_mib', '?')} MiB on brd RAM disks; "
        f"data block {env.get('data_block_kib', '?')} KiB unless named; fio libaio, O_DIRECT, "
        f"iodepth {env.get('iodepth', '?')} (fsync job: 1). Cells: median (min-max). "
        "Ratios: performance (>1 = faster), from medians. Latency: fio completion latency "
        "p50 / p99 in µs (fsync job: the syncs). Goals are reported, not asserted.",
        "",
        "| workload | unit | dm-linear | dm-thin (C) | rthin (ours) | ours/C | ours/linear | "
        "C/linear | p50 / p99 µs C | p50 / p99 µs ours | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["workloads"]:
        res, failed = row["results"], set(row["failed_targets"])
        if row["goal"] is None:
            goal = ""
        elif row["goal_met"] is None:
            goal = f"{row['goal']}: no figure"
        else:
            goal = f"{row['goal']}: {'met' if row['goal_met'] else 'NOT met'}"
        lin = cell(res["linear"], "linear" in failed)
        if row["linear_ref"] and row["linear_ref"] != row["workload"] and res["linear"]:
            lin += f" [{row['linear_ref']}]"
        lines.append(
            f"| {row['workload']}: {row['label']} | {row['unit']} | {lin} | "
            f"{cell(res['c'], 'c' in failed)} | {cell(res['ours'], 'ours' in failed)} | "
            f"{fmt_ratio(row['ours_vs_c'])} | {fmt_ratio(row['ours_vs_linear'])} | "
            f"{fmt_ratio(row['c_vs_linear'])} | {fmt_lat(res['c'])} | {fmt_lat(res['ours'])} | {goal} |")
    mem = report["memory"]
    lines += ["", "Kernel memory (medians over repetitions; slab growth over the idle state with no "
              "pool, from /proc/meminfo Slab; dm-bufio from its module parameters):", "",
              "| | dm-thin (C) | rthin (ours) |", "|---|---|---|",
              f"| module size (/proc/modules; C: dm_thin_pool + dm_persistent_data + dm_bio_prison) | "
              f"{mem['module_bytes']['c'] // 1024} KiB | {mem['module_bytes']['ours'] // 1024} KiB |"]
    keys = sorted(set(mem["targets"].get("c", {})) | set(mem["targets"].get("ours", {})))
    for k in keys:
        c = mem["targets"].get("c", {}).get(k)
        o = mem["targets"].get("ours", {}).get(k)
        lines.append(f"| {k} | {fmt_num(c)} | {fmt_num(o)} |")
    if report["failures"]:
        lines += ["", "Failures (a workload's error or wrong result, with the last kernel messages; "
                  "\"teardown\": a device still open once the devices above it were removed, "
                  "which the run waited for):", ""]
        for f in report["failures"]:
            lines.append(f"* {f['workload']} on {TARGET_NAMES.get(f['target'], f['target'])} "
                         f"(rep {f['rep']}): {f['error']}")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- bench-table:begin (scripts/bench-report.py --readme writes this part) -->"
README_END = "<!-- bench-table:end -->"


def compact(report):
    """The README's short form: medians and ratios, the machine line, the chart."""
    env = report["env"]
    lines = [
        f"Measured {report['date']} on {report['machine'] or '?'}, accelerator "
        f"**{report['accelerator'] or '?'}**, guest kernel {env.get('kernel', '?')} with "
        f"{env.get('guest_cpus', '?')} vCPUs; {env.get('reps', '?')} repetitions, medians "
        "(full table with spreads, latencies and memory: "
        "[results/bench/latest.md](results/bench/latest.md), data: "
        "[latest.json](results/bench/latest.json)).",
        "",
        "| workload | unit | dm-linear | dm-thin | rthin | rthin/dm-thin | rthin/linear | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["workloads"]:
        res, failed = row["results"], set(row["failed_targets"])

        def med(t):
            s = res[t]
            if not s:
                return "FAILED" if t in failed else "-"
            return fmt_num(s["median"]) + (" (failed once)" if t in failed else "")
        goal = "" if row["goal_met"] is None else ("met" if row["goal_met"] else "**not met**")
        lin = med("linear") if row["linear_ref"] else "-"
        lines.append(f"| {row['label']} | {row['unit']} | {lin} | {med('c')} | {med('ours')} | "
                     f"{fmt_ratio(row['ours_vs_c'])} | {fmt_ratio(row['ours_vs_linear'])} | {goal} |")
    lines += ["", "![rthin / dm-thin and rthin / dm-linear](results/bench/latest.png)"]
    return "\n".join(lines) + "\n"


def update_readme(path, report):
    """Replace the text between the README's bench markers; False if the markers are missing."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    b, e = text.find(README_BEGIN), text.find(README_END)
    if b < 0 or e < b:
        return False
    text = text[:b + len(README_BEGIN)] + "\n" + compact(report) + text[e:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def chart(report, path):
    """A horizontal bar chart of ours/C and ours/linear per workload. False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["workloads"] if r["goal"] is not None
            and (r["ours_vs_c"] is not None or r["ours_vs_linear"] is not None)]
    names = [r["workload"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.6))
    ys = range(len(rows))
    h = 0.38
    ax.barh([y - h / 2 for y in ys], [r["ours_vs_c"] or 0 for r in rows], h, label="rthin / dm-thin")
    ax.barh([y + h / 2 for y in ys], [r["ours_vs_linear"] or 0 for r in rows], h,
            label="rthin / dm-linear")
    for y, r in zip(ys, rows):
        for dy, v in ((-h / 2, r["ours_vs_c"]), (h / 2, r["ours_vs_linear"])):
            if v is not None:
                ax.text(v, y + dy, f" {v:.2f}", va="center", fontsize=6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("performance ratio (> 1: rthin faster), medians")
    ax.set_title(f"rthin vs dm-thin and dm-linear ({report['accelerator']}, {report['date']})",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rawdir")
    ap.add_argument("outdir")
    ap.add_argument("--machine", default="")
    ap.add_argument("--accel", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--readme", help="also put the short table into this README (between its markers)")
    a = ap.parse_args(argv)
    report = build(a.rawdir, a.machine, a.accel, a.date)
    os.makedirs(a.outdir, exist_ok=True)
    text = table(report)
    with open(os.path.join(a.outdir, "latest.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(a.outdir, "latest.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")
    if not chart(report, os.path.join(a.outdir, "latest.png")):
        print("bench-report: matplotlib is missing, no chart", file=sys.stderr)
    if a.readme and not update_readme(a.readme, report):
        print(f"bench-report: {a.readme} has no bench markers, left alone", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
