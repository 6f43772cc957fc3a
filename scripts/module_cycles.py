#!/usr/bin/env python3
"""Fails if modules of one crate import each other in a circle.

For every library crate of the workspace (each `src/lib.rs`), a module is a top-level file or
directory of `src/` (a directory's files count as one module); module A depends on B when A's
code, comments left out, names `crate::B` (in a `use` or a path). Strongly connected components
with more than one module are cycles. Run by scripts/test.sh; `-v` prints the graph.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"target", ".git", "node_modules"}


def crates():
    for lib in sorted(ROOT.rglob("src/lib.rs")):
        if not SKIP.intersection(lib.relative_to(ROOT).parts):
            yield lib.parent


def modules(src: Path) -> dict[str, list[Path]]:
    mods: dict[str, list[Path]] = {}
    for p in src.iterdir():
        if p.is_file() and p.suffix == ".rs" and p.name != "lib.rs":
            mods.setdefault(p.stem, []).append(p)
        elif p.is_dir():
            files = sorted(p.rglob("*.rs"))
            if files:
                mods.setdefault(p.name, []).extend(files)
    return mods


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def graph(src: Path) -> dict[str, set[str]]:
    mods = modules(src)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = strip_comments(f.read_text())
            # `crate::x` and the braces of `use crate::{x, y::z}`.
            names = set(re.findall(r"\bcrate::(\w+)", text))
            for group in re.findall(r"\bcrate::\{([^}]*)\}", text, flags=re.S):
                names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            for n in names:
                if n in mods and n != m:
                    edges[m].add(n)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    verbose = "-v" in sys.argv
    bad = 0
    checked = 0
    for src in crates():
        edges = graph(src)
        checked += 1
        name = src.parent.relative_to(ROOT)
        if verbose:
            for m in sorted(edges):
                print(f"{name}: {m} -> {', '.join(sorted(edges[m])) or '-'}")
        for c in cycles(edges):
            bad += 1
            print(f"{name}: modules import each other in a circle: {' <-> '.join(c)}", file=sys.stderr)
    print(f"module cycles: {bad} in {checked} crates")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
