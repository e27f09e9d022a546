"""The ``medlab`` command: list, run and report on the lessons; check the environment; manage data.

    medlab list
    medlab run [NOTEBOOK ...] [--profile P] [-p NAME=VALUE ...] [--out DIR] [--jobs N] [--timeout S]
    medlab report DIR
    medlab doctor
    medlab data list|fetch NAME|verify NAME
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

    p_report = sub.add_parser("report", help="re-render summary.md and index.html of a run folder")
    p_report.add_argument("out", help="a run folder written by 'medlab run'")

    sub.add_parser("doctor", help="print the environment and what is missing")

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


COMMANDS = {"list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "doctor": _cmd_doctor, "data": _cmd_data}


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
