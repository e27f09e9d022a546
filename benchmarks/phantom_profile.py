"""Where does phantom generation spend its time? Per-statement timing of a generator's ``_render``.

The renderer's source is re-compiled with a clock reading after every top-level statement (loops and ``if``
blocks count as one statement), then the generator is called as usual; the table lists the statements that
took longest, in seconds and in percent of the whole call.

    python benchmarks/phantom_profile.py                      # ct_slice and chest_xray at 64 px, writes results/phantom_profile.md
    python benchmarks/phantom_profile.py --kind ct_slice --size 128 --n 256 --output -
"""
from __future__ import annotations

import argparse
import ast
import collections
import importlib
import inspect
import os
import platform
import textwrap
import time
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "phantom_profile.md"
MODULES = {"ct_slice": "medlab.data.phantoms.ct", "chest_xray": "medlab.data.phantoms.chest_xray"}


def statement_times(kind: str, size: int, n: int, calls: int = 3, top: int = 12) -> tuple[float, list]:
    """(images per second, [(seconds, share, line of source)]) for ``kind``'s ``_render``."""
    module = importlib.import_module(MODULES[kind])
    original = module._render
    source = textwrap.dedent(inspect.getsource(original))
    tree = ast.parse(source)
    body = []
    for statement in tree.body[0].body:
        body += [statement, ast.parse(f"_T.append(({statement.lineno}, _pc()))").body[0]]
    tree.body[0].body = [ast.parse("_T.append((0, _pc()))").body[0]] + body
    ast.fix_missing_locations(tree)
    marks = []
    namespace = dict(module.__dict__, _T=marks, _pc=time.perf_counter)
    exec(compile(tree, f"<timed {kind}._render>", "exec"), namespace)
    generator = getattr(importlib.import_module("medlab.data.phantoms"), kind)
    try:
        module._render = namespace["_render"]
        generator(8, size=size, seed=0)
        marks.clear()
        started = time.perf_counter()
        for seed in range(calls):
            generator(n, size=size, seed=1 + seed)
        total = time.perf_counter() - started
    finally:
        module._render = original
    spent = collections.Counter()
    for (_, t0), (line, t1) in zip(marks, marks[1:]):
        if line != 0:
            spent[line] += t1 - t0
    lines = source.splitlines()
    rows = [(s, s / total, lines[line - 1].strip()) for line, s in spent.most_common(top)]
    return calls * n / total, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", action="append", choices=sorted(MODULES), help="default: both")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--note", default="", help="a line for the report (e.g. the machine's load)")
    parser.add_argument("--output", type=Path, default=RESULT, help="markdown file ('-' for none)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from medlab.runtime import cpu_model

    out = ["# Where phantom generation spends its time", "",
           f"Command: `python benchmarks/phantom_profile.py --size {args.size} --n {args.n}`; {cpu_model()}, "
           f"{os.cpu_count()} cores, NumPy {np.__version__}, Python {platform.python_version()}; load average "
           f"{load:.1f} at the start." + (f" {args.note}" if args.note else ""), ""]
    for kind in args.kind or sorted(MODULES):
        rate, rows = statement_times(kind, args.size, args.n)
        out += [f"## {kind} at {args.size} px: {rate:,.0f} images/s (with the clock readings)", "",
                "| seconds | share | statement (first line) |", "|---:|---:|---|"]
        out += [f"| {s:.3f} | {share:.1%} | `{text[:110]}` |" for s, share, text in rows]
        out.append("")
    text = "\n".join(out)
    print(text)
    if str(args.output) != "-":
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
