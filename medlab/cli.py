"""The ``medlab`` command: list, run and report on the lessons; check the environment; manage data.

    medlab list
    medlab run [NOTEBOOK ...] [--profile P] [-p NAME=VALUE ...] [--out DIR] [--jobs N] [--timeout S]
    medlab report DIR
    medlab sweep NOTEBOOK [--profile P] [-p NAME=V1,V2,...] [--seeds N] [--out DIR] [--jobs N | --scheduler ADDR]
    medlab doctor
    medlab data list|fetch NAME|verify NAME
    medlab bench [--grid smoke|cpu|gpu|full|auto] [--device D] [--compile|--no-compile] [--tf32 auto|on|off] [--out FILE.json]
    medlab student [NOTEBOOK ...] [--out DIR]
    medlab reset NOTEBOOK
    medlab cache list|clear [--data|--weights] [--yes]
    medlab sync-notebooks [--check]
"""
from __future__ import annotations

import argparse
import sys

from .errors import MedlabError

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (``--jobs``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use 1 or more, e.g. --jobs 2") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number; use 1 or more, e.g. --jobs 2")
    return value


def _positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above 0 (``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; e.g. --timeout 900") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive, finite number of seconds; e.g. --timeout 900")
    return value


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
    p_run.add_argument("--jobs", type=_positive_int, default=1, help="notebooks run at the same time (default: 1)")
    p_run.add_argument("--timeout", type=_positive_seconds, default=1200,
                       help="seconds per notebook (default: 1200)")
    p_run.add_argument("--notebooks", dest="folder", help="folder of the notebooks (default: ./notebooks)")

    p_student = sub.add_parser("student", help="write student copies: each exercise's solution replaced by a stub")
    p_student.add_argument("notebooks", nargs="*", help="notebook names or number prefixes (default: all)")
    p_student.add_argument("--out", default="students", help="folder for the copies (default: ./students)")
    p_student.add_argument("--notebooks", dest="folder", default="notebooks",
                           help="folder of the solution notebooks (default: ./notebooks)")

    p_reset = sub.add_parser("reset", help="restore a lesson to its last committed state (your edits are lost)")
    p_reset.add_argument("notebook", help="a lesson's number, name or path, e.g. 01")
    p_reset.add_argument("--notebooks", dest="folder", help="folder of the notebooks (default: ./notebooks)")

    p_cache = sub.add_parser("cache", help="list or delete the downloaded data sets and pretrained weights")
    p_cache.add_argument("action", choices=["list", "clear"])
    p_cache.add_argument("--data", action="store_true", help="only the data sets")
    p_cache.add_argument("--weights", action="store_true", help="only the pretrained weights")
    p_cache.add_argument("--yes", action="store_true", help="clear without asking")

    p_sync = sub.add_parser("sync-notebooks", help="rewrite every lesson's badges and set-up cell from "
                            "medlab/project.py (REPOSITORY, RELEASE_TAG)")
    p_sync.add_argument("--check", action="store_true", help="only report what differs (exit 1 if anything does)")
    p_sync.add_argument("--notebooks", dest="folder", help="folder of the notebooks (default: ./notebooks)")

    p_report = sub.add_parser("report", help="re-render summary.md and index.html of a run folder")
    p_report.add_argument("out", help="a run folder written by 'medlab run', or a sweep folder by 'medlab sweep'")

    p_sweep = sub.add_parser(
        "sweep", help="run one notebook over a grid of parameters and seeds on Dask",
        description="Run NOTEBOOK once per combination of the -p values and the seeds, each run a normal runner "
                    "execution in a folder of its own under --out, on a local Dask cluster of --jobs workers or on "
                    "the cluster at --scheduler; write a report with every run and mean, sd and a bootstrap "
                    "interval over seeds per configuration. A sweep started again skips the runs already complete.")
    p_sweep.add_argument("notebook", help="notebook name, stem or number")
    p_sweep.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or auto (default: cpu)")
    p_sweep.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=V1,V2,...",
                         help="a parameter and its values, comma-separated (repeatable; the grid is their product)")
    p_sweep.add_argument("--seeds", type=int, help="run SEED = 0 .. N-1 for each configuration")
    p_sweep.add_argument("--out", help="sweep folder (default: sweeps/NOTEBOOK)")
    p_sweep.add_argument("--jobs", type=int, help="workers of the local Dask cluster (default: 1, or one per GPU "
                         "when the runs need a GPU)")
    p_sweep.add_argument("--scheduler", metavar="ADDRESS",
                         help="a running Dask scheduler (tcp://host:8786) instead of a local cluster")
    p_sweep.add_argument("--timeout", type=float, default=1200, help="seconds per notebook (default: 1200)")
    p_sweep.add_argument("--retries", type=int, default=2,
                         help="times a run starts again after its worker died (default: 2)")
    p_sweep.add_argument("--rerun-failed", action="store_true",
                         help="run again the complete runs that did not pass")
    p_sweep.add_argument("--metric", action="append", help="a headline metric of the report (repeatable; "
                         "default: the notebook's expected metrics)")
    p_sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_sweep.add_argument("--notebooks", dest="folder", help="folder of the notebooks (default: ./notebooks)")

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
    p_bench.add_argument("--model", action="append",
                         choices=["small_cnn", "resnet18", "resnet50", "densenet121", "unet"],
                         help="keep only this model (repeatable)")
    p_bench.add_argument("--mode", action="append", choices=["train", "infer"], help="keep only this mode")
    p_bench.add_argument("--repeats", type=int, help="timed repeats per case (default: the grid's)")
    p_bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p_bench.add_argument("--tf32", default="auto", choices=["auto", "on", "off"],
                         help="float32 math: auto (torch's setting: on CUDA, TF32 convolutions), on or off (TF32 "
                              "for convolutions and matrix products); the ceiling is measured in the same mode")
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

    runner.check_run_options(args.out, args.jobs, args.timeout)  # before any notebook is read

    params = runner.parse_assignments(args.parameter)
    results = runner.run_notebooks(args.notebooks, profile=args.profile, params=params, out=args.out,
                                   jobs=args.jobs, timeout=args.timeout, folder=args.folder)
    bad = [r for r in results if r.status != "passed"]
    print(f"{len(results) - len(bad)} of {len(results)} notebooks passed; report: {args.out}/index.html")
    return 1 if bad else 0


def _cmd_report(args) -> int:
    from . import runner, sweep

    if sweep.is_sweep(args.out):
        from . import sweep_report

        report = sweep_report.rerender(args.out)
        print(open(f"{args.out}/summary.md").read())
        return 0 if all(row["status"] == "passed" for row in report.rows) else 1
    results = runner.rerender(args.out)
    bad = [r for r in results if r.status != "passed"]
    print(open(f"{args.out}/summary.md").read())
    return 1 if bad else 0


def _cmd_doctor(args) -> int:
    from . import runtime

    print(runtime.environment_report("auto"))
    missing = [name for name in ("torch", "torchvision", "ipywidgets", "pydicom", "nibabel", "pandas")
               if runtime._version(name) is None]
    if missing:
        print("MISSING required packages: " + ", ".join(missing) + " (run: pip install -e .)")
        return 1
    runner_missing = [name for name in ("papermill", "nbconvert", "ipykernel") if runtime._version(name) is None]
    if runner_missing:
        print("medlab run needs " + ", ".join(runner_missing) + " (run: pip install -e '.[runner]'); "
              "the lessons themselves do not")
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
                        log=None if args.quiet else print, tf32=args.tf32)
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


def _cmd_reset(args) -> int:
    from .reset import reset_notebook

    path = reset_notebook(args.notebook, args.folder)
    print(f"restored {path} to its last committed state")
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 2 ** 20:,.1f} MiB"


def _cmd_cache(args) -> int:
    from .reset import cache_entries, clear_cache

    data, weights = (args.data or not args.weights), (args.weights or not args.data)
    entries = cache_entries(data, weights)
    for entry in entries:
        print(f"{entry.kind:<8} {_megabytes(entry.size_bytes):>12}  {entry.path}")
    total = _megabytes(sum(e.size_bytes for e in entries))
    if not entries:
        print("nothing cached")
        return 0
    if args.action == "list":
        print(f"{len(entries)} item(s), {total}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty() or input(f"delete these {len(entries)} item(s), {total}? [y/N] ").strip().lower() != "y":
            print("nothing deleted (add --yes to delete without asking)")
            return 1
    clear_cache(data, weights)
    print(f"deleted {len(entries)} item(s), {total}")
    return 0


def _cmd_sync_notebooks(args) -> int:
    from .project import RELEASE_TAG, REPOSITORY, sync_notebooks, sync_readme
    from .runner import notebook_dir

    results = sync_notebooks(args.folder, check=args.check)
    readme = notebook_dir(args.folder).parent / "README.md"
    if readme.is_file() and sync_readme(readme, check=args.check):
        print(f"{readme}: {'differs' if args.check else 'rewrote'}: the set-up cell's requirement or release")
        if args.check:
            return 1
    for r in results:
        if r.changed:
            print(f"{r.notebook}: {'differs' if args.check else 'rewrote'}: {', '.join(r.changed)}")
        for problem in r.problems:
            print(f"{r.notebook}: PROBLEM: {problem}")
    differ = [r for r in results if r.changed or r.problems]
    print(f"{len(results)} notebook(s) checked against {REPOSITORY} @ {RELEASE_TAG}; "
          f"{len(differ)} {'differ' if args.check else 'changed or with problems'}")
    if any(r.problems for r in results):
        return 1
    return 1 if (args.check and differ) else 0


def _cmd_sweep(args) -> int:
    from . import sweep

    grid = sweep.parse_grid(args.parameter)
    result = sweep.sweep(args.notebook, profile=args.profile, grid=grid, seeds=args.seeds, out=args.out,
                         jobs=args.jobs, scheduler=args.scheduler, timeout=args.timeout, retries=args.retries,
                         rerun_failed=args.rerun_failed, metrics=args.metric, folder=args.folder,
                         progress=not args.no_progress)
    print((result.out / "summary.md").read_text())
    bad = [row for row in result.rows if row["status"] != "passed"]
    print(f"{len(result.rows) - len(bad)} of {len(result.rows)} runs passed ({result.ran} run now, "
          f"{result.skipped} already complete); report: {result.out}/index.html")
    return 1 if bad else 0


COMMANDS = {"list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "sweep": _cmd_sweep, "doctor": _cmd_doctor,
            "data": _cmd_data, "bench": _cmd_bench, "student": _cmd_student, "reset": _cmd_reset, "cache": _cmd_cache,
            "sync-notebooks": _cmd_sync_notebooks}


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
