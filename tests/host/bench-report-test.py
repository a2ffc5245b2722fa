#!/usr/bin/env python3
"""Host unit test of scripts/bench-report.py (`make bench`'s report), run by `make check`.

Feeds it a synthetic raw-results directory (fio JSON documents, timings, memory, a failure) whose
figures are known, and checks the medians, spreads, ratios (both directions: throughput and
times), the linear reference of thin-only workloads, the goals, the failure cells, the JSON
file and the chart. Prints one PASS/FAIL (or SKIP) line per check; exits 1 on any FAIL.
"""

import contextlib
import importlib.util
import json
import os
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("bench_report", os.path.join(TOP, "scripts", "bench-report.py"))
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)

failed = False


def check(name, cond, why=""):
    global failed
    if cond:
        print(f"PASS bench-report-{name}")
    else:
        failed = True
        print(f"FAIL bench-report-{name}: {why or 'check failed'}")


def fio_doc(rw, iops, bw_bytes, p50_ns, p99_ns, sync=None):
    side = {"io_bytes": 4096 * 100, "iops": iops, "bw_bytes": bw_bytes, "total_ios": 100,
            "clat_ns": {"percentile": {"50.000000": p50_ns, "99.000000": p99_ns}}}
    empty = {"io_bytes": 0, "iops": 0.0, "bw_bytes": 0, "total_ios": 0, "clat_ns": {}}
    job = {"read": side if rw == "read" else empty, "write": side if rw == "write" else empty}
    if sync:
        job["sync"] = {"total_ios": 100, "lat_ns": {"percentile": {"50.000000": sync[0],
                                                                    "99.000000": sync[1]}}}
    return {"fio version": "fio-3.33", "jobs": [job]}


def write_raw(d):
    os.makedirs(os.path.join(d, "raw"))

    def put(wl, target, rep, doc, note=""):
        with open(os.path.join(d, "raw", f"{wl}.{target}.{rep}.json"), "w") as f:
            f.write(note + json.dumps(doc))

    # read-rand4k: linear 1000/1100/900, C 500/600/400, ours 750/700/800 (IOPS).
    for rep, (lin, c, ours) in enumerate([(1000, 500, 750), (1100, 600, 700), (900, 400, 800)]):
        put("read-rand4k", "linear", rep, fio_doc("read", lin, lin * 4096, 10000, 20000))
        put("read-rand4k", "c", rep, fio_doc("read", c, c * 4096, 30000, 60000),
            note="fio: a note before the document\n")
        put("read-rand4k", "ours", rep, fio_doc("read", ours, ours * 4096, 20000, 40000))
        # A throughput workload: MiB/s from bw_bytes.
        put("prov-seq1m-zero", "linear", rep, fio_doc("write", 100, 100 * 1048576, 1, 2))
        put("prov-seq1m-zero", "c", rep, fio_doc("write", 80, 80 * 1048576, 1, 2))
        put("prov-seq1m-zero", "ours", rep, fio_doc("write", 88, 88 * 1048576, 1, 2))
        # Thin-only workload, compared with linear's prov-seq1m-zero.
        put("bs512k-prov-seq1m", "c", rep, fio_doc("write", 50, 50 * 1048576, 1, 2))
        put("bs512k-prov-seq1m", "ours", rep, fio_doc("write", 60, 60 * 1048576, 1, 2))
        # fsync job: latencies are the syncs'.
        put("fsync-rand4k", "c", rep, fio_doc("write", 100, 409600, 5000, 6000, sync=(7000, 9000)))
    with open(os.path.join(d, "env.tsv"), "w") as f:
        f.write("kernel\t7.2.12\nguest_cpus\t2\nreps\t3\nruntime_s\t3\nblock_kib\t512\n"
                "mapped\t1000 1000000\ndepths\t1\n")
    with open(os.path.join(d, "timings.tsv"), "w") as f:
        for rep in range(3):
            # create_snap: C 100 ms, ours 50 ms (ours twice as fast); delete-origin: ours slower.
            f.write(f"meta1000000-create-snap\tc\t{rep}\tseconds\t0.100\n")
            f.write(f"meta1000000-create-snap\tours\t{rep}\tseconds\t0.050\n")
            f.write(f"meta1000000-delete-origin\tc\t{rep}\tseconds\t1.0\n")
            f.write(f"meta1000000-delete-origin\tours\t{rep}\tseconds\t{2.0 + rep}\n")
            f.write(f"discard\tlinear\t{rep}\tseconds\t0.5\ndiscard\tlinear\t{rep}\tbytes\t{64 << 20}\n")
    with open(os.path.join(d, "memory.tsv"), "w") as f:
        f.write("-\t-\tmodule\tdm_rthin\t471040\n-\t-\tmodule\tdm_thin_pool\t53248\n"
                "-\t-\tmodule\tdm_persistent_data\t53248\n-\t-\tmodule\tdm_bio_prison\t12288\n")
        for rep in range(3):
            f.write(f"c\t{rep}\tidle\tslab_kib\t1000\nc\t{rep}\trest\tslab_kib\t{1100 + rep}\n")
            f.write(f"ours\t{rep}\tidle\tslab_kib\t1000\nours\t{rep}\trest\tslab_kib\t1300\n")
            f.write(f"ours\t{rep}\trest\tbufio_bytes\t{2048 * (rep + 1)}\n")
    with open(os.path.join(d, "failures.tsv"), "w") as f:
        f.write("discard\tours\t1\tblkdiscard: Input/output error | dmesg: x\n")


def row(report, wl):
    return next((r for r in report["workloads"] if r["workload"] == wl), None)


def close(a, b):
    return a is not None and abs(a - b) < 1e-9


with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "raw-results")
    write_raw(raw)
    rep = br.build(raw, machine="Test CPU, 2 cores", accel="tcg", date="2026-01-01 00:00 UTC")

    r = row(rep, "read-rand4k")
    check("median", r and r["results"]["c"]["median"] == 500 and r["results"]["ours"]["median"] == 750,
          f"medians {r and (r['results']['c'], r['results']['ours'])}")
    check("spread", r and (r["results"]["linear"]["min"], r["results"]["linear"]["max"]) == (900, 1100))
    check("ratio-to-c", r and close(r["ours_vs_c"], 1.5), f"{r and r['ours_vs_c']}")
    check("ratio-to-linear", r and close(r["ours_vs_linear"], 0.75), f"{r and r['ours_vs_linear']}")
    check("c-to-linear", r and close(r["c_vs_linear"], 0.5))
    check("latency-us", r and r["results"]["ours"]["p50_us"] == 20.0 and r["results"]["ours"]["p99_us"] == 40.0)
    # 4 KiB to provisioned blocks: 1.5x C but only 0.75x linear: the 0.9x-linear goal fails.
    check("goal-4k-linear-part", r and r["goal"] == br.GOAL_4K and r["goal_met"] is False)

    r = row(rep, "prov-seq1m-zero")
    check("bandwidth-mib", r and close(r["results"]["ours"]["median"], 88.0))
    check("goal-all", r and close(r["ours_vs_c"], 1.1) and r["goal_met"] is True,
          f"{r and (r['ours_vs_c'], r['goal_met'])}")

    r = row(rep, "bs512k-prov-seq1m")
    check("linear-reference", r and close(r["ours_vs_linear"], 0.6) and r["results"]["linear"]["median"] == 100)

    r = row(rep, "fsync-rand4k")
    check("sync-latency", r and r["results"]["c"]["p50_us"] == 7.0 and r["results"]["c"]["p99_us"] == 9.0)

    r = row(rep, "meta1000000-create-snap")
    # Times: lower is better, so the ratio is C's time over ours.
    check("time-ratio", r and not r["higher_is_better"] and close(r["ours_vs_c"], 2.0)
          and close(r["results"]["ours"]["median"], 50.0), f"{r and r['ours_vs_c']}")
    r = row(rep, "meta1000000-delete-origin")
    check("time-ratio-slower", r and close(r["ours_vs_c"], 1.0 / 3.0) and r["goal_met"] is False)
    check("absent-workload-dropped", row(rep, "meta1000-create-snap") is None)

    r = row(rep, "discard")
    check("discard-throughput", r and close(r["results"]["linear"]["median"], 128.0))
    check("failure-kept", r and r["failed_targets"] == ["ours"] and r["ours_vs_c"] is None)

    mem = rep["memory"]
    check("memory-modules", mem["module_bytes"]["c"] == 53248 + 53248 + 12288
          and mem["module_bytes"]["ours"] == 471040)
    check("memory-slab-growth", mem["targets"]["c"].get("slab growth, at rest (pool + full volume) (KiB)") == 101
          and mem["targets"]["ours"].get("slab growth, at rest (pool + full volume) (KiB)") == 300, f"{mem['targets']}")
    check("memory-bufio", mem["targets"]["ours"].get("dm-bufio cache, at rest (pool + full volume) (KiB)") == 4.0)

    text = br.table(rep)
    check("table-failure-cell", "| FAILED |" in text and "Input/output error" in text)
    check("table-machine", "Test CPU, 2 cores" in text and "accelerator: tcg" in text
          and "7.2.12" in text)
    check("table-cells", "| 750 (700-800) |" in text and "| 1.50x |" in text, text)
    check("table-goal", "NOT met" in text)

    out = os.path.join(tmp, "out")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        rc = br.main([raw, out, "--machine", "Test CPU", "--accel", "tcg"])
    with open(os.path.join(out, "latest.json")) as f:
        j = json.load(f)
    check("json", rc == 0 and j["accelerator"] == "tcg" and row(j, "read-rand4k")["ours_vs_c"] == 1.5)
    check("markdown", os.path.exists(os.path.join(out, "latest.md")))
    readme = os.path.join(tmp, "README.md")
    with open(readme, "w") as f:
        f.write(f"# x\n\nbefore\n{br.README_BEGIN}\nold table\n{br.README_END}\nafter\n")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        br.main([raw, out, "--accel", "tcg", "--readme", readme])
    with open(readme) as f:
        text = f.read()
    check("readme", "old table" not in text and "before\n" in text and "after\n" in text
          and "| provisioned: rand 4 KiB read | IOPS | 1000 | 500 | 750 | 1.50x | 0.75x | **not met** |" in text
          and "results/bench/latest.png" in text, text)
    try:
        import matplotlib  # noqa: F401
        with open(os.path.join(out, "latest.png"), "rb") as f:
            check("chart-png", f.read(8) == b"\x89PNG\r\n\x1a\n")
    except ImportError:
        print("SKIP bench-report-chart-png: python3-matplotlib is not installed (make bench installs it)")

sys.exit(1 if failed else 0)
