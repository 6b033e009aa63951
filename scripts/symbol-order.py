#!/usr/bin/env python3
"""Writes the linker's symbol ordering list (link/symbol-order.txt) from callgrind runs.

usage: symbol-order.py LINK_MAP CALLGRIND_DIR [LINK_MAP CALLGRIND_DIR ...] > link/symbol-order.txt

Each LINK_MAP is lld's map (-Map, --no-demangle) of the very binary the runs in the
CALLGRIND_DIR after it executed (one pair per build variant); a CALLGRIND_DIR holds
callgrind files (--dump-instr=yes --compress-pos=no): `cg.*.out.1` covers start-up to the
first ready answer, `cg.*.out` the rest of each run. Every executed instruction address is
placed in the input section that holds it, and the section is named by the first symbol it
defines. The list gives start-up's functions first (of every variant), then those of the
request and processing paths, each group in its current address order.
"""
import bisect
import glob
import re
import sys

SECTION = re.compile(r"\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S+:\((\.text[^)]*)\)")
SYMBOL = re.compile(r"\s+[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s+\d+\s+(\S+)\s*$")


def sections(map_path):
    secs, cur = [], None
    for line in open(map_path):
        m = SECTION.match(line)
        if m:
            cur = [int(m.group(1), 16), int(m.group(2), 16), None]
            secs.append(cur)
            continue
        m = SYMBOL.match(line)
        if m and ":(" not in line and cur is not None and cur[2] is None:
            cur[2] = m.group(1)
        else:
            cur = None
    secs.sort()
    return secs


def executed(path):
    obj, addrs = None, set()
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("0x") and obj and obj.endswith("/fido-connector"):
            addrs.add(int(line.split()[0], 16))
    return addrs


def variant(map_path, runs):
    """(start-up sections, later sections) of one build: (size, name) in address order."""
    secs = sections(map_path)
    starts = [s[0] for s in secs]

    def touched(files):
        hit = set()
        for f in files:
            for a in executed(f):
                i = bisect.bisect_right(starts, a) - 1
                if i >= 0 and a < secs[i][0] + secs[i][1]:
                    hit.add(i)
        return hit

    start = touched(sorted(glob.glob(runs + "/cg.*.out.1")))
    rest = touched(sorted(glob.glob(runs + "/cg.*.out"))) - start
    return ([secs[i][1:] for i in sorted(start)], [secs[i][1:] for i in sorted(rest)])


def main():
    args = sys.argv[1:]
    variants = [variant(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    seen, size = set(), {"start": 0, "rest": 0, "unnamed": 0}
    for group, g in (("start", 0), ("rest", 1)):
        for v in variants:
            for length, name in v[g]:
                if name is None:
                    size["unnamed"] += length
                elif name not in seen:
                    seen.add(name)
                    size[group] += length
                    print(name)
    print(
        f"{len(seen)} functions: start-up {size['start']} bytes, later paths {size['rest']} "
        f"bytes, in sections without a symbol {size['unnamed']} bytes",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
