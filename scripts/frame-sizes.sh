#!/usr/bin/env bash
# The largest stack frames in dm-rthin.ko, from its machine code (x86-64 `sub $N,%rsp` in each
# function's prologue). Kernel stacks are 16 KiB and the module runs under dm core, the block
# layer and filesystems: a frame above the limit (1024 bytes, the kernel's usual
# -Wframe-larger-than for 64-bit) fails.
#
#   scripts/frame-sizes.sh [MODULE.ko] [LIMIT]
set -euo pipefail
ko=${1:-dm-rthin.ko}
limit=${2:-1024}
[ -f "$ko" ] || { echo "frame-sizes: $ko not found" >&2; exit 1; }
# shellcheck disable=SC2016 # a Python program, not shell
objdump -d -C --no-show-raw-insn "$ko" | python3 -c '
import re, sys
limit = int(sys.argv[1])
fn, frames = None, {}
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        fn = m.group(1)
        continue
    m = re.search(r"\bsub\s+\$0x([0-9a-f]+),%rsp", line)
    if m and fn:
        frames[fn] = max(frames.get(fn, 0), int(m.group(1), 16))
if not frames:
    sys.exit("frame-sizes: no function prologue found")
top = sorted(frames.items(), key=lambda kv: -kv[1])
print("largest stack frames (bytes):")
for name, size in top[:10]:
    print(f"  {size:6d}  {name}")
over = [(n, s) for n, s in top if s > limit]
if over:
    sys.exit(f"frame-sizes: {len(over)} function(s) above {limit} bytes")
' "$limit"
