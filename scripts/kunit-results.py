#!/usr/bin/env python3
"""Turn KUnit KTAP documents into the project's result lines, using the kernel's own parser.

    scripts/kunit-results.py KERNEL_SOURCE FILE.ktap...

Each file (a debugfs `results` document) goes through `tools/testing/kunit/kunit.py parse --json`;
every test case becomes `PASS kunit:<suite>.<case>` or `FAIL kunit:<suite>.<case>: <status>`.
A file the parser rejects, or one with no test case, is a failure: a suite that crashed before
reporting must not count as green. Exit status: 1 if anything failed.
"""
import json
import os
import subprocess
import sys


def cases(group, prefix):
    name = group.get("name", "?")
    path = prefix if name == "KUnit Test Group" else (f"{prefix}.{name}" if prefix else name)
    for case in group.get("test_cases", []):
        yield f"{path}.{case['name']}" if path else case["name"], case["status"]
    for sub in group.get("sub_groups", []):
        yield from cases(sub, path)


def main():
    ksrc, files = sys.argv[1], sys.argv[2:]
    kunit_py = os.path.join(ksrc, "tools/testing/kunit/kunit.py")
    failed = False
    if not files:
        print("FAIL kunit: no KTAP results were collected")
        return 1
    for f in files:
        proc = subprocess.run([sys.executable, kunit_py, "parse", "--json", os.path.abspath(f)],
                              capture_output=True, text=True)
        start = proc.stdout.find("{")
        try:
            doc = json.loads(proc.stdout[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            doc = None
        found = list(cases(doc, "")) if doc else []
        if not found:
            print(f"FAIL kunit:{os.path.basename(f)}: unparseable or empty KTAP (parser exit {proc.returncode})")
            failed = True
            continue
        for name, status in found:
            if status == "PASS":
                print(f"PASS kunit:{name}")
            elif status == "SKIP":
                print(f"PASS kunit:{name} (skipped)")
            else:
                print(f"FAIL kunit:{name}: {status}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
