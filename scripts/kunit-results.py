#!/usr/bin/env python3
"""Turn KUnit KTAP documents into the project's result lines, using the kernel's own parser, and
check them against the list of suites that must run.

    scripts/kunit-results.py KERNEL_SOURCE KTAP_DIR EXPECTED_LIST

KTAP_DIR holds one `<suite>.ktap` per suite (the debugfs `kunit/<suite>/results` documents).
Each goes through `tools/testing/kunit/kunit.py parse --json`; every test case becomes
`PASS kunit:<suite>.<case>`, `SKIP kunit:<suite>.<case>: skipped` or
`FAIL kunit:<suite>.<case>: <status>`. A file the parser rejects, or one with no test case, is a
failure: a suite that crashed before reporting must not count as green. EXPECTED_LIST
(tests/expected-suites.txt) names, as "kunit SUITE" lines, the suites that must run; a suite
missing from KTAP_DIR fails, and so does a suite that ran without being listed.
Exit status: 1 if anything failed.
"""
import json
import os
import subprocess
import sys


def cases(group, prefix):
    name = group.get("name", "?")
    path = prefix if name == "KUnit Test Group" else (f"{prefix}.{name}" if prefix else name)
    for case in group.get("test_cases", []):
        # (the parser adds a nameless ERROR case when fewer cases reported than the plan said)
        case_name = case["name"] or "(missing case)"
        yield f"{path}.{case_name}" if path else case_name, case["status"]
    for sub in group.get("sub_groups", []):
        yield from cases(sub, path)


def read_expected(path):
    want = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "kunit":
                continue
            if len(words) != 2:
                raise SystemExit(f"{path}:{n}: want 'kunit SUITE'")
            want.append(words[1])
    return want


def main():
    ksrc, ktap_dir, expected = sys.argv[1:4]
    want = read_expected(expected)
    kunit_py = os.path.join(ksrc, "tools/testing/kunit/kunit.py")
    failed = False
    files = sorted(f for f in os.listdir(ktap_dir) if f.endswith(".ktap")) if os.path.isdir(ktap_dir) else []
    if not files:
        print(f"FAIL kunit: no KTAP results were collected in {ktap_dir}")
        failed = True
    for f in files:
        suite = f[: -len(".ktap")]
        if suite not in want:
            print(f"FAIL kunit:{suite}: the suite ran but is not listed in {expected} (add 'kunit {suite}')")
            failed = True
        proc = subprocess.run([sys.executable, kunit_py, "parse", "--json", os.path.join(ktap_dir, f)],
                              capture_output=True, text=True, check=False)
        start = proc.stdout.find("{")
        try:
            doc = json.loads(proc.stdout[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            doc = None
        found = list(cases(doc, "")) if doc else []
        if not found:
            print(f"FAIL kunit:{suite}: unparseable or empty KTAP (parser exit {proc.returncode})")
            failed = True
            continue
        suite_failed = False
        for name, status in found:
            if not name.startswith(suite + "."):
                print(f"FAIL kunit:{name}: found in {f}, which should hold suite {suite} only")
                suite_failed = True
            elif status == "PASS":
                print(f"PASS kunit:{name}")
            elif status == "SKIP":
                print(f"SKIP kunit:{name}: skipped")
            else:
                print(f"FAIL kunit:{name}: {status}")
                suite_failed = True
        # The parser also fails a document whose plan and results disagree (a case missing).
        if proc.returncode != 0 and not suite_failed:
            errors = [l.strip() for l in proc.stdout.splitlines() if "[ERROR]" in l or "ERROR" in l]
            print(f"FAIL kunit:{suite}: kunit.py parse exited {proc.returncode}: "
                  f"{errors[0] if errors else 'see the KTAP'}")
            suite_failed = True
        failed |= suite_failed
    for suite in want:
        if f"{suite}.ktap" not in files:
            print(f"FAIL kunit:{suite}: listed in {expected} but reported no results (compiled out?)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
