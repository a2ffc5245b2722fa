#!/usr/bin/env python3
"""Turn the output of `cargo test` into the project's result lines, checked against the list of
test binaries that must report.

    scripts/cargo-results.py CARGO_TEST_LOG EXPECTED_LIST

Every test case becomes `PASS cargo:<binary>.<kind>::<test>`, `FAIL ...: failed` or
`SKIP ...: ignored` (an #[ignore]d test). Per test binary (cargo's "Running" or "Doc-tests" line),
the number of cases seen must equal its "test result:" summary, and a binary that starts but
prints no summary (it crashed) is a failure. EXPECTED_LIST (tests/expected-suites.txt) names, as
"cargo BINARY KIND" lines, the binaries that must run at least one test; a binary that runs tests
without being listed is a failure too. Exit status: 1 if anything failed.
"""
import os
import re
import sys

RUNNING = re.compile(r"^\s+Running (unittests )?(\S+) \((.+)\)$")
DOCTESTS = re.compile(r"^\s+Doc-tests (\S+)$")
CASE = re.compile(r"^test (.+) \.\.\. (ok|FAILED|ignored)(, .*)?$")
SUMMARY = re.compile(r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;")


def kind_of(unittests, source):
    if not unittests:
        return "bench" if source.startswith("benches/") else "test"
    return "lib" if source.endswith("lib.rs") else "bin"


def read_expected(path):
    want = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "cargo":
                continue
            if len(words) != 3 or words[2] not in ("lib", "bin", "test", "bench", "doc"):
                raise SystemExit(f"{path}:{n}: want 'cargo BINARY lib|bin|test|bench|doc'")
            want.append(f"{words[1]}.{words[2]}")
    return want


def main():
    log, expected = sys.argv[1], sys.argv[2]
    want = read_expected(expected)
    out = []
    failed = False

    def fail(msg):
        nonlocal failed
        out.append(f"FAIL {msg}")
        failed = True

    groups = {}  # id -> {"cases": n, "summary": (passed, failed, ignored) or None}
    order = []
    cur = None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = RUNNING.match(line)
            d = DOCTESTS.match(line)
            if m or d:
                if m:
                    binary = re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(m.group(3)))
                    cur = f"{binary}.{kind_of(m.group(1), m.group(2))}"
                else:
                    cur = f"{d.group(1)}.doc"
                if cur in groups:
                    fail(f"cargo:{cur}: two test binaries with this name; tell them apart in {sys.argv[0]}")
                groups[cur] = {"cases": 0, "summary": None}
                order.append(cur)
                continue
            if cur is None:
                continue
            m = CASE.match(line)
            if m:
                groups[cur]["cases"] += 1
                name = f"cargo:{cur}::{m.group(1)}"
                if m.group(2) == "ok":
                    out.append(f"PASS {name}")
                elif m.group(2) == "FAILED":
                    fail(f"{name}: failed")
                else:
                    out.append(f"SKIP {name}: ignored{m.group(3) or ''}")
                continue
            m = SUMMARY.match(line)
            if m:
                groups[cur]["summary"] = tuple(int(x) for x in m.group(2, 3, 4))

    for g in order:
        s, n = groups[g]["summary"], groups[g]["cases"]
        if s is None:
            fail(f"cargo:{g}: the test binary ended without its 'test result:' summary (crashed?)")
        elif sum(s) != n:
            fail(f"cargo:{g}: its summary counts {sum(s)} tests, {n} were reported")
        if n > 0 and g not in want:
            fail(f"cargo:{g}: ran {n} tests but is not listed in {expected} "
                 f"(add 'cargo {g.replace('.', ' ', 1)}')")
    for g in want:
        if g not in groups:
            fail(f"cargo:{g}: listed in {expected} but did not run")
        elif groups[g]["cases"] == 0:
            fail(f"cargo:{g}: listed in {expected} but ran no test")
    if not order:
        fail("cargo: no test binary ran")

    print("\n".join(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
