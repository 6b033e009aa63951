#!/usr/bin/env python3
"""Fails when a module of src/ imports one that imports it back (directly or through others).

The rule (docs/architecture.md): the crate's modules form a directed graph without cycles,
at two levels:
  - between top-level modules (`api`, `lifecycle`, `upstream`, ...);
  - between the files of one top-level module (`domain::request`, `domain::shipment`, ...).
A module "imports" another when its source names it: `use crate::x::...`, `crate::x::...` in
a path, or `super::x` from a sibling. With --graph it also prints which top-level module imports which. Test modules (from the first `#[cfg(test)]` of a file
on) are left out: tests may reach anywhere.

Written by hand because no maintained tool checks module cycles inside one Rust crate
(cargo-modules draws the graph but has no failing check; cargo-deny and cargo-udeps work
between crates).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    """src/a/b.rs -> ["a", "b"]; src/a/mod.rs -> ["a"]; src/lib.rs -> []."""
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def source_without_tests(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    # Comments and literals name modules without importing them: character literals first
    # (a '"' would open a string), then raw strings, strings, and comments.
    text = re.sub(r"'(\\.|[^'\\\n])'", "' '", text)
    text = re.sub(r'r(#*)"(.|\n)*?"\1', '""', text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    text = re.sub(r"//[^\n]*", "", text)
    return text


def files():
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                yield os.path.join(d, n)


def main():
    modules = {}
    for p in files():
        if os.path.basename(p) == "main.rs" and os.path.dirname(p) == os.path.abspath(ROOT):
            continue  # the binary is a client of the library, not part of its graph
        modules[tuple(module_of(p))] = p
    known = set(modules)

    def resolve(parts):
        """The longest known module that a path names."""
        for n in range(len(parts), 0, -1):
            if tuple(parts[:n]) in known:
                return tuple(parts[:n])
        return None

    edges = {}  # module -> set of modules it names
    for mod, path in modules.items():
        text = source_without_tests(path)
        named = set()
        # crate::a::b::c and `use crate::{a, b::c}` groups (one level of braces).
        for m in re.finditer(r"crate::\{([^}]*)\}", text):
            for item in m.group(1).split(","):
                item = item.strip().split(" as ")[0]
                if item:
                    named.add(tuple(p for p in item.split("::") if p))
        for m in re.finditer(r"crate((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            named.add(tuple(p for p in m.group(1).split("::") if p))
        # super::x from a file module: x is a sibling (or the parent's item).
        parent = mod[:-1]
        for m in re.finditer(r"\bsuper((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            named.add(parent + tuple(p for p in m.group(1).split("::") if p))
        targets = set()
        for parts in named:
            t = resolve(list(parts))
            if t is not None and t != mod:
                targets.add(t)
        edges[mod] = targets

    failures = []

    def cycles(nodes, graph):
        """Tarjan's strongly connected components of more than one node."""
        index, low, stack, on, out = {}, {}, [], set(), []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(graph.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        for v in sorted(nodes):
            if v not in index:
                visit(v)
        return out

    def why(a, b, level):
        """Files of a that name b, for the message."""
        hits = []
        for mod, targets in edges.items():
            if mod[:level] == a and any(t[:level] == b for t in targets):
                hits.append(os.path.relpath(modules[mod], os.path.join(ROOT, "..")))
        return ", ".join(sorted(hits))

    # Level 1: top-level modules.
    top = {}
    for mod, targets in edges.items():
        if not mod:
            continue
        for t in targets:
            if t and t[:1] != mod[:1]:
                top.setdefault(mod[:1], set()).add(t[:1])
    for comp in cycles({m[:1] for m in edges if m}, top):
        names = [c[0] for c in comp]
        detail = "; ".join(
            f"{a[0]} -> {b[0]} ({why(a, b, 1)})"
            for a in comp
            for b in comp
            if b in top.get(a, ())
        )
        failures.append(f"top-level modules {', '.join(names)} import each other: {detail}")

    # Level 2: the files of one top-level module.
    for head in sorted({m[:1] for m in edges if m}):
        inner = {}
        for mod, targets in edges.items():
            if len(mod) >= 2 and mod[:1] == head:
                for t in targets:
                    if len(t) >= 2 and t[:1] == head and t[:2] != mod[:2]:
                        inner.setdefault(mod[:2], set()).add(t[:2])
        for comp in cycles({m[:2] for m in edges if len(m) >= 2 and m[:1] == head}, inner):
            detail = "; ".join(
                f"{'::'.join(a)} -> {'::'.join(b)} ({why(a, b, 2)})"
                for a in comp
                for b in comp
                if b in inner.get(a, ())
            )
            failures.append(f"modules of {head[0]} import each other: {detail}")

    if "--graph" in sys.argv:
        for a in sorted(top):
            print(f"{a[0]} -> {', '.join(sorted(b[0] for b in top[a]))}")
    if failures:
        for f in failures:
            print("import cycle:", f)
        print(f"{len(failures)} import cycle(s); the rule is in docs/architecture.md")
        return 1
    print(f"no import cycles among {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
