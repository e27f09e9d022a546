"""The ``medlab`` command: list, run and report on the lessons; check the environment; manage data.

    medlab list
    medlab run [NOTEBOOK ...] [--profile P] [-p NAME=VALUE ...] [--out DIR] [--jobs N] [--timeout S]
    medlab report DIR
    medlab doctor
    medlab data list|fetch NAME|verify NAME
    medlab bench [--grid smoke|cpu|gpu|full|auto] [--device D] [--compile|--no-compile] [--out FILE.json]
    medlab student [NOTEBOOK ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys

from .errors import MedlabError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medlab`` command."""
    parser = argparse.ArgumentParser(prog="medlab", description="Run and check the medlab lessons.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="the notebooks with their parameters and defaults")
    p_list.add_argument("--notebooks", help="folder of the notebooks (default: ./notebooks)")

    p_run = sub.add_parser("run", help="execute notebooks with papermill and check their metrics")
    p_run.add_argument("notebooks", nargs="*", help="notebook names, stems or numbers (default: all)")
    p_run.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or auto (default: cpu)")
    p_run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="set a notebook parameter (repeatable)")
    p_run.add_argument("--out", default="runs/latest", help="run folder (default: runs/latest)")
    p_run.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time (default: 1)")
    p_run.add_argument("--timeout", type=float, default=1200, help="seconds per notebook (default: 1200)")
    p_run.add_argument("--notebooks", dest="folder", help="folder of the notebooks (default: ./notebooks)")

    p_student = sub.add_parser("student", help="write student copies: each exercise's solution replaced by a stub")
    p_student.add_argument("notebooks", nargs="*", help="notebook names or number prefixes (default: all)")
    p_student.add_argument("--out", default="students", help="folder for the copies (default: ./students)")
    p_student.add_argument("--notebooks", dest="folder", default="notebooks",
                           help="folder of the solution notebooks (default: ./notebooks)")

    p_report = sub.add_parser("report", help="re-render summary.md and index.html of a run folder")
    p_report.add_argument("out", help="a run folder written by 'medlab run'")

    sub.add_parser("doctor", help="print the environment and what is missing")

    p_bench = sub.add_parser("bench", help="measure throughput and memory of the models and the data path",
                             description="Measure images per second and peak memory for training and inference "
                                         "(with and without mixed precision, channels_last, torch.compile), "
                                         "phantom generation and the DataLoader; write JSON and print tables.")
    p_bench.add_argument("--grid", default="auto", choices=["auto", "smoke", "cpu", "gpu", "full"],
                         help="what to measure: smoke (seconds), cpu (a few minutes on 2 cores), gpu (the gpu "
                              "lesson's grid), full (the whole grid, for a GPU); auto: full on CUDA, else cpu "
                              "(default)")
    p_bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    compile_group = p_bench.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_const", const=True, default="auto",
                               help="measure the torch.compile cases (default: all grids but smoke)")
    compile_group.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                               help="record the torch.compile cases as skipped")
    p_bench.add_argument("--model", action="append", choices=["small_cnn", "resnet18", "densenet121", "unet"],
                         help="keep only this model (repeatable)")
    p_bench.add_argument("--mode", action="append", choices=["train", "infer"], help="keep only this mode")
    p_bench.add_argument("--repeats", type=int, help="timed repeats per case (default: the grid's)")
    p_bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p_bench.add_argument("--out", default="bench.json", help="JSON results file (default: bench.json)")
    p_bench.add_argument("--markdown", help="also write the tables to this Markdown file")
    p_bench.add_argument("--quiet", action="store_true", help="no progress bar and no per-row lines")

    p_data = sub.add_parser("data", help="list, fetch and verify data sets", add_help=False)
    p_data.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _cmd_list(args) -> int:
    from . import runner

    for path in runner.discover(args.notebooks):
        params = runner.notebook_parameters(path)
        shown = ", ".join(f"{name}={info['default']!r}" for name, info in params.items())
        print(f"{path.stem}: {shown}")
    return 0


def _cmd_run(args) -> int:
    from . import runner

    params = runner.parse_assignments(args.parameter)
    results = runner.run_notebooks(args.notebooks, profile=args.profile, params=params, out=args.out,
                                   jobs=args.jobs, timeout=args.timeout, folder=args.folder)
    bad = [r for r in results if r.status != "passed"]
    print(f"{len(results) - len(bad)} of {len(results)} notebooks passed; report: {args.out}/index.html")
    return 1 if bad else 0


def _cmd_report(args) -> int:
    from . import runner

    results = runner.rerender(args.out)
    bad = [r for r in results if r.status != "passed"]
    print(open(f"{args.out}/summary.md").read())
    return 1 if bad else 0


def _cmd_doctor(args) -> int:
    from . import runtime

    print(runtime.environment_report("auto"))
    missing = [name for name in ("torch", "torchvision", "papermill", "ipywidgets", "pydicom", "nibabel")
               if runtime._version(name) is None]
    if missing:
        print("MISSING required packages: " + ", ".join(missing) + " (run: pip install -e .)")
        return 1
    try:
        from .data import cli as data_cli
    except ImportError:
        return 0
    print()
    return data_cli.main(["list"])


def _cmd_data(args) -> int:
    from .data import cli as data_cli

    return data_cli.main(args.rest)


def _cmd_bench(args) -> int:
    import torch

    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    from .runtime import choose_device

    device = choose_device(args.device)
    grid = args.grid if args.grid != "auto" else ("full" if device.type == "cuda" else "cpu")
    results = bench.run(grid, device=device, compile=args.compile, progress=not args.quiet,
                        models=args.model, modes=args.mode, repeats=args.repeats, out=args.out,
                        log=None if args.quiet else print)
    text = results.markdown()
    print()
    print(text)
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).write_text(f"# medlab bench\n\n{text}\n")
    print(f"results: {args.out}" + (f", {args.markdown}" if args.markdown else ""))
    return 0


def _cmd_student(args) -> int:
    from .student import write_student_copies

    written = write_student_copies(args.folder, args.out, args.notebooks or None)
    for name, keys in written.items():
        print(f"{args.out}/{name}: {len(keys)} exercise(s) {', '.join(keys)}")
    return 0


COMMANDS = {"student": _cmd_student, "list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "doctor": _cmd_doctor, "data": _cmd_data,
            "bench": _cmd_bench}


def main(argv=None) -> int:
    """Run the ``medlab`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MedlabError as err:
        print(f"medlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
