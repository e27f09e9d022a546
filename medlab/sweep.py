"""Sweeps: one notebook over a grid of parameters and seeds, executed by Dask.

    medlab sweep 01 --profile cpu -p LR=0.01,0.001 -p DATA=phantom,medmnist:pneumoniamnist --seeds 3
    medlab sweep 01 --profile gpu -p LR=0.01,0.001 --seeds 10 --scheduler tcp://head-node:8786

The grid is the product of the values given with ``-p NAME=V1,V2,...`` and of
the seeds (``--seeds N`` sets ``SEED`` to 0 .. N-1; ``-p SEED=3,7`` names them
instead). Every run is a normal :func:`medlab.runner.run_notebooks` execution of
the notebook in a folder of its own, with its executed copy, ``metrics.json``
and the runner's report. Every value is checked against the notebook's
parameters, as ``medlab run`` checks them, before anything runs.

Each run is one Dask task. By default a local cluster of ``--jobs`` worker
processes (one thread each: a notebook runs in a kernel process of its own
anyway) executes them; ``--scheduler tcp://...`` sends them to a running
cluster instead (dask-jobqueue on Slurm or PBS, a cloud cluster), whose workers
must see ``--out`` and the notebook at the same paths (a shared file system). A
run that needs a GPU (profile ``gpu`` with ``DEVICE`` left to ``auto``, or a
``cuda`` device) asks for the Dask resource ``{"GPU": 1}``, so that a worker
started with ``--resources GPU=1`` on each GPU runs one notebook per GPU.

A worker that dies in the middle of a run has its run started again on another
worker (the scheduler's ``allowed-failures``, which ``--retries`` sets on a local
cluster; an error in the task itself is retried with Dask's ``retries=``); the
notebook process of the dead worker stops with it (see
``medlab.runner._exit_with_parent``), and the dead attempt's files are kept under
``earlier_attempts/``. A run is complete when its marker ``done.json`` exists; it is
written last and atomically, so a sweep that is stopped and started again skips
the runs already complete in the folder and starts only the others. (Stopping
the client of a remote cluster lets the runs already going there finish: start
the sweep again once they have, or they run twice.)

Layout of the sweep folder::

    sweep.json                     notebook, profile, every run's id and parameters, each invocation
    runs/<run id>/                 one runner execution: results.json, summary.md, index.html,
                                   <notebook>/ (executed copy, its HTML, metrics.json, papermill.log)
    runs/<run id>/attempts.log     one line per attempt: host, worker, process, time
    runs/<run id>/earlier_attempts/attempt-N/   what an attempt that died (or a failed run run again) wrote
    runs/<run id>/done.json        the completion marker
    runs/<run id>/error.json       why Dask gave up on the run, where it did
    results.json, summary.md, index.html, figures/<metric>.png   the sweep's report (see medlab.sweep_report)
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NotebookError, ParameterError

__all__ = ["split_values", "parse_grid", "plan", "Plan", "run_id", "needs_gpu", "sweep", "SweepResult",
           "is_sweep", "load_spec", "SPEC_FILE", "DONE_FILE", "ERROR_FILE", "ATTEMPTS_FILE", "RUNS_DIR"]

SPEC_FILE = "sweep.json"
RUNS_DIR = "runs"
DONE_FILE = "done.json"
ERROR_FILE = "error.json"
ATTEMPTS_FILE = "attempts.log"
EARLIER_DIR = "earlier_attempts"
_REPORT_EVERY_S = 5.0


# --------------------------------------------------------------------------- the grid

def split_values(text: str) -> list[str]:
    """Split ``"a,b,[1, 2],'x,y'"`` at the commas outside brackets and quotes."""
    pieces, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(assignments) -> dict[str, list]:
    """Turn ``["LR=0.1,0.01", "DATA=phantom"]`` into ``{"LR": [0.1, 0.01], "DATA": ["phantom"]}``.

    Values are read as Python literals where they are one (as ``medlab run -p``
    reads them) and kept as text otherwise; commas inside brackets or quotes do
    not split, so ``-p SIZES=[12,48],[24,96]`` gives two lists.

    Raises:
        NotebookError: an item without ``=``, a name given twice, an empty list
            or an empty value between commas.
    """
    grid: dict[str, list] = {}
    for item in assignments or []:
        if "=" not in item:
            raise NotebookError(f"parameter {item!r} must look like NAME=V1,V2,... (for example -p LR=0.01,0.001)")
        name, text = (part.strip() for part in item.split("=", 1))
        if name in grid:
            raise NotebookError(f"{name} is given twice: list its values once, comma-separated (-p {name}=V1,V2)")
        if not text:
            raise NotebookError(f"-p {name}= gives {name} no values: list one or more, comma-separated "
                                f"(-p {name}=V1,V2); for an empty string write -p {name}=\"''\"")
        pieces = split_values(text)
        if any(not piece for piece in pieces):
            raise NotebookError(f"-p {name}={text} has an empty value between commas; "
                                f"for an empty string write '' (-p {name}=\"a,''\")")
        grid[name] = [_literal(piece) for piece in pieces]
    return grid


def _format_value(value) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, tuple, dict)) else str(value)


def run_id(params: dict) -> str:
    """A folder name for a run: ``"LR=0.01__SEED=0"`` (a hash is added where characters had to be replaced)."""
    if not params:
        return "default"
    text = "__".join(f"{name}={_format_value(value)}" for name, value in params.items())
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)
    if safe != text or len(safe) > 96:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        safe = f"{safe[:80]}-{digest}"
    return safe


def needs_gpu(profile: str, params: dict) -> bool:
    """Whether a run needs a GPU: a ``cuda`` ``DEVICE``, or the ``gpu`` profile with ``DEVICE`` left to ``auto``."""
    device = str(params.get("DEVICE", "auto")).strip().lower()
    if device.startswith("cuda"):
        return True
    return device == "auto" and profile == "gpu"


@dataclass
class Plan:
    """A checked grid: what :func:`sweep` will run."""

    source: Path
    profile: str  # resolved: smoke, cpu or gpu
    grid: dict  # name -> values, after type conversion (SEED included when swept)
    runs: list = field(default_factory=list)  # [{"id": ..., "params": {...}}]

    @property
    def swept(self) -> list[str]:
        """The parameters with more than one value, ``SEED`` left out."""
        return [name for name, values in self.grid.items() if len(values) > 1 and name != "SEED"]


def plan(notebook, profile: str = "cpu", grid: dict | None = None, seeds: int | None = None, folder=None) -> Plan:
    """Resolve the notebook and profile and check every value of the grid; nothing runs.

    Args:
        notebook: name, stem, number prefix or path of one notebook.
        profile: ``smoke``, ``cpu``, ``gpu`` or ``auto`` (resolved here, on this machine).
        grid: parameter name -> list of values (a value that is not a list or tuple is one value;
            a list-typed parameter's values are lists: ``{"SIZES": [[12, 48]]}``).
        seeds: ``SEED`` takes the values 0 .. seeds-1 (leave it None to give ``SEED`` in ``grid``).
        folder: where the notebooks are (see :func:`medlab.runner.notebook_dir`).

    Raises:
        NotebookError: unknown notebook or parameter, a value of the wrong type, an empty list,
            the same value twice, ``SEED`` given both ways, a parameter the runner sets.
        ParameterError: unknown profile.
    """
    from . import profiles, runner

    profile_name = profiles.resolve(profile).name
    source = runner.find_notebook(str(notebook), folder)
    grid = {name: (list(values) if isinstance(values, (list, tuple)) else [values])
            for name, values in (grid or {}).items()}
    declared = runner.notebook_parameters(source)
    for name in runner.INJECTED:
        if name in grid:
            raise NotebookError(f"{name} is set by the sweep for every run; use --profile / --out instead of -p {name}=...")
    if seeds is not None:
        if "SEED" in grid:
            raise NotebookError("give the seeds either with --seeds N (SEED = 0 .. N-1) or with -p SEED=..., not both")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise NotebookError(f"--seeds must be a whole number of at least 1, got {seeds!r}")
        if "SEED" not in declared:
            raise NotebookError(f"{source.stem} has no SEED parameter, so --seeds cannot vary it")
        grid["SEED"] = list(range(seeds))
    for name, values in grid.items():
        if not values:
            raise NotebookError(f"{name} has an empty list of values: give at least one (-p {name}=V1,V2)")
    # Every value goes through the runner's own check (names and types, with its messages).
    for index in range(max((len(v) for v in grid.values()), default=0)):
        sample = {name: values[min(index, len(values) - 1)] for name, values in grid.items()}
        checked = runner.validate_parameters(source, sample)
        for name, values in grid.items():
            if index < len(values):
                values[index] = checked[name]
    for name, values in grid.items():
        seen = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(seen)) < len(seen):
            twice = next(v for v, s in zip(values, seen) if seen.count(s) > 1)
            raise NotebookError(f"{name} lists the value {twice!r} more than once")
    names = sorted((n for n in grid if n != "SEED"), key=str) + (["SEED"] if "SEED" in grid else [])
    grid = {name: grid[name] for name in names}
    runs = []
    for combination in itertools.product(*grid.values()):
        params = dict(zip(names, combination))
        runs.append({"id": run_id(params), "params": params})
    if len({r["id"] for r in runs}) < len(runs):  # cannot happen with the hash, but a collision must never merge runs
        raise NotebookError("two runs of the grid map to the same folder name; report this as a bug")
    return Plan(source=source, profile=profile_name, grid=grid, runs=runs)


# --------------------------------------------------------------------------- the sweep folder

def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, document) -> None:
    """Write JSON atomically (see :func:`write_atomic`)."""
    write_atomic(path, json.dumps(document, indent=2))


def is_sweep(out) -> bool:
    """Whether ``out`` is a folder written by :func:`sweep` (rather than by ``medlab run``)."""
    return (Path(out) / SPEC_FILE).is_file()


def load_spec(out) -> dict:
    """Read a sweep folder's ``sweep.json``."""
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise NotebookError(f"{out} holds no {SPEC_FILE}: is it a folder written by 'medlab sweep'?")
    return json.loads(path.read_text())


def _merge_spec(out: Path, the_plan: Plan, invocation: dict) -> dict:
    """The sweep.json for this invocation: the runs recorded before (kept) plus this grid's."""
    spec = {"notebook": the_plan.source.stem, "source": str(the_plan.source), "profile": the_plan.profile,
            "grid": {}, "runs": [], "invocations": []}
    if (out / SPEC_FILE).is_file():
        spec = load_spec(out)
    known = {r["id"] for r in spec["runs"]}
    spec["runs"] += [r for r in the_plan.runs if r["id"] not in known]
    for name, values in the_plan.grid.items():  # the union of every invocation's values, in order
        merged = spec["grid"].setdefault(name, [])
        merged += [v for v in values if v not in merged]
    spec["source"] = str(the_plan.source)
    spec["invocations"].append(invocation)
    return spec


def _check_folder(out: Path, the_plan: Plan) -> None:
    """Refuse a folder that holds something else than a sweep of this notebook with this profile."""
    if (out / SPEC_FILE).is_file():
        spec = load_spec(out)
        if (spec["notebook"], spec["profile"]) != (the_plan.source.stem, the_plan.profile):
            raise NotebookError(f"{out} holds a sweep of {spec['notebook']} with profile {spec['profile']}; "
                                f"give this one another --out")
    elif (out / "results.json").is_file():
        raise NotebookError(f"{out} is a run folder written by 'medlab run'; give the sweep another --out")


def _complete(run_dir: Path, params: dict) -> bool:
    marker = run_dir / DONE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("params") == params
    except (OSError, json.JSONDecodeError):
        return False


def _run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "results.json").read_text())["results"][0]["status"]
    except (OSError, json.JSONDecodeError, KeyError, IndexError):
        return None


# --------------------------------------------------------------------------- one run, on a worker

def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None


def _run_task(task: dict) -> dict:
    """Execute one run of the sweep (on a Dask worker); returns its completion marker.

    A retried task whose run already completed (the worker died after writing the
    marker) returns the marker without running the notebook again.
    """
    from . import runner

    run_dir = Path(task["run_dir"])
    marker = run_dir / DONE_FILE
    if _complete(run_dir, task["params"]):
        return json.loads(marker.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    worker = _worker_name()
    attempts_log = run_dir / ATTEMPTS_FILE
    attempt = 1 + (len(attempts_log.read_text().splitlines()) if attempts_log.exists() else 0)
    with open(attempts_log, "a") as log:
        log.write(json.dumps({"attempt": attempt, "host": socket.gethostname(), "worker": str(worker),
                              "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    leftover = run_dir / Path(task["source"]).stem
    if leftover.exists():  # an earlier attempt died here (or failed, with --rerun-failed): keep its files, start clean
        keep = run_dir / EARLIER_DIR / f"attempt-{attempt - 1}"
        keep.parent.mkdir(exist_ok=True)
        os.replace(leftover, keep)
    gpus = task.get("gpu_ids")
    if gpus and isinstance(worker, int):  # a local cluster on a machine with several GPUs: one per worker
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[worker % len(gpus)])
    started = time.perf_counter()
    results = runner.run_notebooks([task["source"]], profile=task["profile"], params=task["params"], out=run_dir,
                                   jobs=1, timeout=task["timeout"], log=lambda *args: None)
    done = {"id": run_dir.name, "params": task["params"], "status": results[0].status,
            "attempts": attempt, "host": socket.gethostname(), "worker": str(worker),
            "wall_time_s": round(time.perf_counter() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    _write_json(marker, done)  # last: the run counts as complete from here on
    return done


# --------------------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    """What a sweep left in its folder."""

    out: Path
    rows: list  # one dict per run (see medlab.sweep_report.collect)
    configurations: list  # per configuration: statistics over seeds
    ran: int  # runs executed by this invocation
    skipped: int  # runs found complete and not run again

    @property
    def ok(self) -> bool:
        """Every run passed."""
        return all(row["status"] == "passed" for row in self.rows)


def _local_gpu_ids() -> list[str]:
    """The GPUs a local cluster may use (respecting ``CUDA_VISIBLE_DEVICES``)."""
    try:
        import torch
    except ImportError:
        return []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if visible else [str(i) for i in range(count)]


def _start_client(scheduler: str | None, jobs: int, gpu: bool, retries: int, log):
    """A Dask client on a new local cluster, or on the scheduler at ``scheduler``; returns (client, cluster)."""
    import importlib.util
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise NotebookError(f"cannot reach the Dask scheduler at {scheduler}: {err}. Is it running, and is "
                                f"the address the one 'dask scheduler' printed?") from None
        if gpu:
            workers = client.scheduler_info().get("workers", {}).values()
            if not any(w.get("resources", {}).get("GPU") for w in workers):
                log(f"warning: no worker of {scheduler} offers a GPU yet; the runs that need one wait until a worker "
                    f"started with '--resources GPU=1' joins")
        return client, None
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                               resources={"GPU": 1} if gpu else None, silence_logs=logging.ERROR,
                               dashboard_address=":0" if importlib.util.find_spec("bokeh") else None)
    client = Client(cluster)
    if importlib.util.find_spec("bokeh"):
        log(f"dashboard: {cluster.dashboard_link}")
    return client, cluster


def sweep(notebook, profile: str = "cpu", grid: dict | None = None, seeds: int | None = None, out=None,
          jobs: int | None = None, scheduler: str | None = None, timeout: float = 1200, retries: int = 2,
          rerun_failed: bool = False, metrics: list | None = None, folder=None, progress: bool = True,
          log=print) -> SweepResult:
    """Run ``notebook`` over the grid of ``grid`` x seeds on Dask and write the sweep's report.

    Args:
        notebook, profile, grid, seeds, folder: see :func:`plan` (everything is checked
            before anything runs).
        out: the sweep folder (default ``sweeps/<notebook>``); a folder holding an earlier
            sweep of the same notebook and profile is continued: its complete runs are kept
            and skipped, and its report covers them too.
        jobs: workers of the local cluster (ignored with ``scheduler``); default 1, or one per
            GPU of this machine when the runs need a GPU (each worker is pinned to one GPU, in turn).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``) instead of a local cluster.
        timeout: seconds a notebook may take before the runner stops it.
        retries: times a run is started again after its worker died or its task raised.
        rerun_failed: run again the complete runs whose status is not ``passed``.
        metrics: the headline metrics of the report (default: those with expectations, else all numbers).
        progress: show a progress bar over the runs.
        log: where progress lines go.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    from . import sweep_report

    if jobs is not None and not scheduler and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise NotebookError(f"--jobs must be at least 1, got {jobs!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise NotebookError(f"--retries must be 0 or more, got {retries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise NotebookError(f"--timeout must be a positive number of seconds, got {timeout!r}; e.g. --timeout 900")
    the_plan = plan(notebook, profile, grid, seeds, folder)
    out = Path(out or Path("sweeps") / the_plan.source.stem).resolve()
    _check_folder(out, the_plan)
    runs_dir = out / RUNS_DIR
    todo = []
    for run in the_plan.runs:
        run_dir = runs_dir / run["id"]
        if _complete(run_dir, run["params"]):
            if not (rerun_failed and _run_status(run_dir) != "passed"):
                continue
        todo.append(run)
    gpu_runs = {r["id"] for r in todo if needs_gpu(the_plan.profile, r["params"])}
    gpu_ids = []
    if gpu_runs and not scheduler:
        gpu_ids = _local_gpu_ids()
        if not gpu_ids:
            raise ParameterError(f"{len(gpu_runs)} run(s) need a GPU (profile {the_plan.profile}"
                                 f"{' or DEVICE=cuda' if the_plan.profile != 'gpu' else ''}) and this machine has none: "
                                 f"use --profile cpu, set -p DEVICE=cpu, or give --scheduler of a cluster with GPUs")
    if jobs is None:
        jobs = len(gpu_ids) if gpu_ids else 1

    skipped = len(the_plan.runs) - len(todo)
    invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "grid": the_plan.grid, "jobs": None if scheduler else jobs,
                  "scheduler": scheduler, "runs": len(the_plan.runs), "skipped": skipped}
    client = cluster = None
    if todo:
        client, cluster = _start_client(scheduler, min(jobs, len(todo)), bool(gpu_runs), retries, log)
    try:
        out.mkdir(parents=True, exist_ok=True)
        runs_dir.mkdir(exist_ok=True)
        spec = _merge_spec(out, the_plan, invocation)
        _write_json(out / SPEC_FILE, spec)
        where = scheduler or f"a local cluster of {min(jobs, len(todo))} worker(s)"
        log(f"sweep of {the_plan.source.stem}, profile {the_plan.profile}: {len(the_plan.runs)} run(s), "
            f"{skipped} already complete in {out}" + (f", {len(todo)} to run on {where}" if todo else ""))
        for run in todo:
            (runs_dir / run["id"] / DONE_FILE).unlink(missing_ok=True)  # a failed run asked to run again
        report = sweep_report.SweepReport(out, spec, metrics=metrics)
        futures = {}
        for run in todo:
            task = {"run_dir": str(runs_dir / run["id"]), "source": str(the_plan.source), "params": run["params"],
                    "profile": the_plan.profile, "timeout": timeout, "gpu_ids": gpu_ids}
            future = client.submit(_run_task, task, key=f"medlab-{run['id']}-{os.urandom(4).hex()}", pure=False,
                                   retries=retries, resources={"GPU": 1} if run["id"] in gpu_runs else None)
            futures[future] = run
        bar = tqdm(total=len(the_plan.runs), initial=skipped, desc=the_plan.source.stem, unit="run",
                   disable=not progress or not todo)
        last_report = time.monotonic()
        try:
            for future in as_completed(list(futures)) if futures else ():
                run = futures[future]
                try:
                    done = future.result()
                    status = done["status"]
                except Exception as err:  # noqa: BLE001 - retries spent: record why, keep going
                    status = "error"
                    (runs_dir / run["id"]).mkdir(parents=True, exist_ok=True)
                    _write_json(runs_dir / run["id"] / ERROR_FILE,
                                {"params": run["params"], "error": f"{type(err).__name__}: {err}",
                                 "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
                report.refresh(run["id"])
                bar.update(1)
                bar.set_postfix_str(f"last: {run['id']} {status}")
                if time.monotonic() - last_report > _REPORT_EVERY_S:
                    report.write(figures=False)
                    last_report = time.monotonic()
        finally:
            bar.close()
            for future in futures:
                future.cancel()
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if is_sweep(out):  # also when stopped (Ctrl-C): the report shows what is complete and what is not
            report = sweep_report.SweepReport(out, load_spec(out), metrics=metrics)
            report.write(figures=True)
    return SweepResult(out=out, rows=report.rows, configurations=report.configurations,
                       ran=len(todo), skipped=skipped)
