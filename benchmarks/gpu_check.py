"""One GPU check anyone can run: every lesson in the gpu profile, the bench grid, fit with CUDA graphs, medlab vs MONAI.

Steps, one after another, each with a wall-time cap (a step that would not fit in what is left of ``--budget`` is
skipped and listed as skipped, never silently dropped):

1. **lessons**: every lesson (or ``--lessons``) in the ``gpu`` profile, one at a time, through the runner
   (``medlab run NAME --profile gpu -p DEVICE=...``): status against ``notebooks/expectations.json``, wall time
   and peak memory per lesson, beside the training time ``benchmarks/gpu_plan.py`` estimated for it (the
   estimate the profile was sized by; where the two disagree, refit the plan's constants). Lesson ``08_benchmark`` runs after step 2 and shows that step's measurements
   (``RESULTS_FILE``) instead of measuring the same grid twice.
2. **bench**: ``medlab bench --grid gpu --no-compile --repeats 3`` (ResNet-18/50, DenseNet-121, U-Net; fp32 with
   the TF32 state recorded, mixed precision, channels_last), JSON written after every row, so a capped run keeps
   what it measured (the rows come in grid order: ResNet-18, ResNet-50, DenseNet-121, then the U-Nets).
3. **fit-compile**: plain ``fit`` against ``fit(compile="reduce-overhead")`` (CUDA graphs) on ResNet-18 at 64 px,
   batch 32, where steps are launch-bound (``benchmarks/train_overhead.py --compile-compare``).
4. **monai**: ``benchmarks/vs_monai.py`` on the device, one run per side with a short budget.

Everything goes under ``--out`` (default ``benchmarks/results/gpu_check_<device>/``): ``gpu_check.md`` (the
machine: GPU name, driver, CUDA, torch; one line per step and per lesson), ``gpu_check.json``, and each step's
own files. ``--shrink`` applies the tests' ``GPU_WIRING_OVERRIDES`` (read from ``tests/test_notebooks.py``)
and tiny settings for every step, so that with ``--device cpu`` the whole wiring runs on a laptop in a minute.

With the default ``--budget 600`` the later steps' caps are kept back and the lessons get what is left (two
or three lessons of the gpu profile's 60-90 s); the others are listed as skipped: run them with ``--lessons``
(and ``--steps lessons``) in a second call, or give a larger ``--budget``.

    python benchmarks/gpu_check.py                               # on a CUDA machine: about ten minutes
    python benchmarks/gpu_check.py --budget 1500                 # room for every lesson
    python benchmarks/gpu_check.py --lessons 02,04 --steps lessons,bench
    python benchmarks/gpu_check.py --device cpu --shrink --lessons 00 --steps lessons,bench --out /tmp/check
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("lessons", "bench", "fit-compile", "monai")
#: default wall-time caps in seconds (``--cap STEP=SECONDS`` changes one)
CAPS = {"lesson": 120, "bench": 180, "fit-compile": 90, "monai": 90}
BENCH_LESSON = "08_benchmark"


def wiring_overrides(path: Path = ROOT / "tests" / "test_notebooks.py") -> dict:
    """``GPU_WIRING_OVERRIDES`` from the notebook tests (read, not imported: no pytest needed)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(getattr(t, "id", None) == "GPU_WIRING_OVERRIDES" for t in targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"no GPU_WIRING_OVERRIDES in {path}; pass --shrink-json instead")


def machine_facts(device: str) -> dict:
    """GPU name, driver, CUDA, torch and the float32 math mode (medlab.bench.machine)."""
    from medlab import bench

    info = bench.machine()
    info["math_mode"] = bench.math_mode(device)
    with contextlib.suppress(Exception):
        info["load_average"] = os.getloadavg()
    return info


def machine_line(info: dict, device: str) -> str:
    gpu = info.get("gpu") or "no GPU"
    if info.get("gpu"):
        gpu += f" (driver {info.get('driver') or '?'}, CUDA {info.get('cuda') or '?'})"
    load = info.get("load_average")
    return (f"{gpu}; {info.get('cpu')}, {info.get('cores')} logical cores; torch {info.get('torch')}, "
            f"Python {info.get('python')}; device {device}; TF32 for float32 work: "
            f"{str(info['math_mode']['tf32']).lower()}"
            + (f"; load average at start {load[0]:.1f}" if load else ""))


class Clock:
    """The overall budget: what is left, and whether a step with a given cap still fits."""

    def __init__(self, budget: float):
        self.budget, self.started = budget, time.perf_counter()

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)


def run_command(command: list[str], cap: float, log_path: Path, env: dict | None = None) -> tuple[str, float]:
    """Run ``command`` with a wall-time cap; returns (``ok`` | ``failed (exit N)`` | ``timed out``, seconds)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            code = process.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(Exception):
                os.killpg(process.pid, 15)
            with contextlib.suppress(Exception):
                process.wait(timeout=15)
            with contextlib.suppress(Exception):
                os.killpg(process.pid, 9)
            return f"timed out after {cap:.0f} s (partial output kept)", time.perf_counter() - started
    return ("ok" if code == 0 else f"failed (exit {code})"), time.perf_counter() - started


def planned_training_s() -> dict:
    """Each lesson's estimated training seconds from ``benchmarks/gpu_plan.py``, for the profile as resolved now."""
    spec = importlib.util.spec_from_file_location("gpu_plan", Path(__file__).resolve().parent / "gpu_plan.py")
    plan = importlib.util.module_from_spec(spec)
    sys.modules["gpu_plan"] = plan  # its dataclass looks its module up there
    spec.loader.exec_module(plan)
    return {row["lesson"]: row["seconds"] for row in plan.plan("gpu")}


def run_lesson(name: str, device: str, cap: float, out: Path, extra: dict | None = None) -> dict:
    """One lesson in the gpu profile through the runner; returns its row."""
    from medlab import runner

    params = {"DEVICE": device, **(extra or {})}
    started = time.perf_counter()
    try:
        (result,) = runner.run_notebooks([name], profile="gpu", params=params, out=out / name, timeout=cap,
                                         folder=ROOT / "notebooks", log=lambda *a, **k: None)
    except Exception as error:  # noqa: BLE001 - a lesson that cannot even start is a row, not a crash
        return {"lesson": name, "status": f"error: {type(error).__name__}: {error}"[:300],
                "wall_s": time.perf_counter() - started, "cap_s": cap}
    failed = [f"{c.get('metric')}={c.get('value')}" for c in result.checks if not c.get("ok")]
    return {"lesson": name, "status": result.status, "wall_s": result.wall_time_s, "cap_s": cap,
            "peak_memory_mb": result.peak_memory_mb, "failed_checks": failed,
            "error": (result.error or "")[:300] or None, "folder": str(out / name)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the wiring")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole check (default 600)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    parser.add_argument("--lessons", default="all", help="lesson names or number prefixes, comma-separated "
                                                         "(default: every lesson)")
    parser.add_argument("--cap", action="append", default=[], metavar="STEP=SECONDS",
                        help=f"change a wall-time cap (defaults {CAPS}; 'lesson' is per lesson)")
    parser.add_argument("--shrink", action="store_true",
                        help="tiny settings everywhere (GPU_WIRING_OVERRIDES for the lessons, the smoke bench grid, "
                             "a few-second MONAI comparison): proves the wiring, measures nothing worth reporting")
    parser.add_argument("--shrink-json", help="profile overrides (JSON) to use with --shrink instead of the tests'")
    parser.add_argument("--grid", default=None, help="bench grid (default: gpu; smoke with --shrink)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/gpu_check_<device type>)")
    args = parser.parse_args(argv)

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    caps = {k: min(v, 90.0) for k, v in CAPS.items()} if args.shrink else dict(CAPS)
    for item in args.cap:
        key, _, value = item.partition("=")
        if key not in caps or not value:
            parser.error(f"--cap takes STEP=SECONDS with STEP one of {sorted(caps)}, got {item!r}")
        caps[key] = float(value)

    import torch

    from medlab import profiles, runner

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --shrink to check the wiring on a CPU")
    device_type = device.split(":")[0]
    out = (args.out or ROOT / "benchmarks" / "results" / f"gpu_check_{device_type}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget)
    info = machine_facts(device)
    report = {"machine": info, "device": device, "shrink": args.shrink, "budget_s": args.budget, "caps": caps,
              "steps": [], "lessons": [], "skipped": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("machine:", machine_line(info, device), flush=True)

    overrides = None
    if args.shrink:
        overrides = json.loads(args.shrink_json) if args.shrink_json else wiring_overrides()
        report["profile_overrides"] = overrides
    env_before = os.environ.get(profiles.OVERRIDES_VARIABLE)

    def reserve(after: str) -> float:
        """Seconds the steps after ``after`` need (their caps), kept back from the lessons."""
        later = {"lessons": ["bench", "fit-compile", "monai"]}.get(after, [])
        return sum(caps[s] for s in later if s in steps)

    def skip(what: str, why: str):
        report["skipped"].append({"what": what, "why": why})
        print(f"SKIPPED {what}: {why}", flush=True)

    def save():
        report["elapsed_s"] = time.perf_counter() - clock.started
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "gpu_check.md").write_text(markdown(report))

    names = [p.stem for p in runner.discover(ROOT / "notebooks")]
    if args.lessons != "all":
        wanted = [w.strip() for w in args.lessons.split(",") if w.strip()]
        names = [runner.find_notebook(w, ROOT / "notebooks").stem for w in wanted]
    bench_json = out / "bench_gpu.json" if not args.shrink else out / "bench_shrunk.json"
    try:
        if overrides is not None:
            os.environ[profiles.OVERRIDES_VARIABLE] = json.dumps(overrides)
        # 1. lessons (the benchmark lesson waits for the bench step's results)
        deferred = BENCH_LESSON in names and "bench" in steps
        if "lessons" in steps:
            planned = planned_training_s()
            for name in names:
                if name == BENCH_LESSON and deferred:
                    continue
                room = clock.left() - reserve("lessons")
                cap = min(caps["lesson"], room)
                if cap < min(20.0, caps["lesson"]):
                    skip(f"lesson {name}", f"{room:.0f} s left for lessons of the {args.budget:.0f} s budget "
                                           f"(raise --budget or pick --lessons)")
                    continue
                print(f"lesson {name} (cap {cap:.0f} s) ...", flush=True)
                row = run_lesson(name, device, cap, out / "lessons")
                row["planned_training_s"] = planned.get(name)
                report["lessons"].append(row)
                print(f"  {row['status']} in {row['wall_s']:.1f} s", flush=True)
                save()
        else:
            skip("lessons", "not in --steps")
        # 2. bench
        if "bench" in steps:
            room = clock.left() - (caps["lesson"] if deferred and "lessons" in steps else 0)
            cap = min(caps["bench"], room)
            if cap < 15:
                skip("bench", f"only {room:.0f} s of the budget left")
            else:
                grid = args.grid or ("smoke" if args.shrink else "gpu")
                command = [sys.executable, "-m", "medlab.cli", "bench", "--grid", grid, "--device", device,
                           "--out", str(bench_json), "--markdown", str(bench_json.with_suffix(".md")), "--quiet"]
                if args.shrink:
                    command += ["--no-compile", "--repeats", "2", "--model", "small_cnn"]
                elif grid == "gpu":
                    # compiling takes tens of seconds per case, and 3 repeats (of 10 steps) keep the grid near its cap
                    command += ["--no-compile", "--repeats", "3"]
                print(f"bench --grid {grid} (cap {cap:.0f} s) ...", flush=True)
                status, wall = run_command(command, cap, out / "bench.log")
                rows = json.loads(bench_json.read_text())["rows"] if bench_json.is_file() else []
                report["steps"].append({"step": "bench", "status": status, "wall_s": wall, "cap_s": cap,
                                        "rows": len(rows), "rows_ok": sum(r.get("status") == "ok" for r in rows),
                                        "files": [str(bench_json), str(bench_json.with_suffix(".md"))]})
                print(f"  {status}: {len(rows)} rows in {wall:.0f} s", flush=True)
                save()
        else:
            skip("bench", "not in --steps")
        if "lessons" in steps and deferred:
            cap = min(caps["lesson"], clock.left())
            if not bench_json.is_file():
                skip(f"lesson {BENCH_LESSON}", "the bench step wrote no results to show")
            elif cap < 20:
                skip(f"lesson {BENCH_LESSON}", f"only {clock.left():.0f} s of the budget left")
            else:
                print(f"lesson {BENCH_LESSON} on the bench step's results (cap {cap:.0f} s) ...", flush=True)
                row = run_lesson(BENCH_LESSON, device, cap, out / "lessons", {"RESULTS_FILE": str(bench_json)})
                row["note"] = "shows the bench step's measurements (RESULTS_FILE)"
                report["lessons"].append(row)
                print(f"  {row['status']} in {row['wall_s']:.1f} s", flush=True)
                save()
        # 3. fit with and without CUDA graphs
        if "fit-compile" in steps:
            cap = min(caps["fit-compile"], clock.left() - (caps["monai"] if "monai" in steps else 0))
            if cap < 15:
                skip("fit-compile", f"only {clock.left():.0f} s of the budget left")
            else:
                workload = ["--workload", "small_cnn:16:64:32", "--epochs", "2"] if args.shrink else \
                    ["--workload", "resnet18:64:2048:256", "--batch-size", "32", "--epochs", "3"]
                target = out / f"fit_compile_{device_type}.md"
                command = [sys.executable, str(ROOT / "benchmarks" / "train_overhead.py"), "--compile-compare",
                           "reduce-overhead", "--device", device, "--repeats", "1", "--output", str(target)] + workload
                print(f"fit vs fit(compile='reduce-overhead') (cap {cap:.0f} s) ...", flush=True)
                status, wall = run_command(command, cap, out / "fit_compile.log")
                report["steps"].append({"step": "fit-compile", "status": status, "wall_s": wall, "cap_s": cap,
                                        "files": [str(target)]})
                print(f"  {status} in {wall:.0f} s", flush=True)
                save()
        else:
            skip("fit-compile", "not in --steps")
        # 4. medlab vs MONAI
        if "monai" in steps:
            cap = min(caps["monai"], clock.left())
            if cap < 15:
                skip("monai", f"only {clock.left():.0f} s of the budget left")
            else:
                target = out / f"vs_monai_{device_type}.md"
                sizes = (["--budget", "2", "--n-train", "16", "--n-val", "8", "--batch-size", "4", "--eval-every", "2"]
                         if args.shrink else ["--budget", "25", "--n-train", "400", "--n-val", "100"])
                command = [sys.executable, str(ROOT / "benchmarks" / "vs_monai.py"), "--device", device,
                           "--repeats", "1", "--output", str(target),
                           "--note", "gpu_check: one run per side, short budget"] + sizes
                print(f"medlab vs MONAI (cap {cap:.0f} s) ...", flush=True)
                status, wall = run_command(command, cap, out / "vs_monai.log")
                report["steps"].append({"step": "monai", "status": status, "wall_s": wall, "cap_s": cap,
                                        "files": [str(target)]})
                print(f"  {status} in {wall:.0f} s", flush=True)
        else:
            skip("monai", "not in --steps")
    finally:
        if overrides is not None:
            if env_before is None:
                os.environ.pop(profiles.OVERRIDES_VARIABLE, None)
            else:
                os.environ[profiles.OVERRIDES_VARIABLE] = env_before
        save()
    print(f"\nwritten: {out / 'gpu_check.md'}", flush=True)
    return report


def markdown(report: dict) -> str:
    """The check as Markdown: machine, lessons, steps, what was skipped."""
    lines = ["# medlab GPU check", "",
             f"Machine: {machine_line(report['machine'], report['device'])}.", "",
             f"Started {report['started']}; budget {report['budget_s']:.0f} s, used "
             f"{report.get('elapsed_s', 0):.0f} s; caps {report['caps']}."
             + (" **Shrunken run (--shrink): proves the wiring only; its numbers are not measurements.**"
                if report["shrink"] else ""), ""]
    if report["lessons"]:
        lines += ["| lesson (gpu profile) | status | wall s | estimated training s (gpu_plan.py) | cap s | peak MiB | "
                  "failed checks / error |", "|---|---|---:|---:|---:|---:|---|"]
        for r in report["lessons"]:
            problem = ", ".join(r.get("failed_checks") or []) or (r.get("error") or "")
            peak = r.get("peak_memory_mb")
            planned = r.get("planned_training_s")
            lines.append(f"| {r['lesson']} | {r['status']} | {r['wall_s']:.1f} | "
                         f"{'–' if planned is None else f'{planned:.0f}'} | {r['cap_s']:.0f} | "
                         f"{'–' if peak is None else f'{peak:.0f}'} | {problem.replace('|', '/')[:200]} |")
        lines.append("")
    if report["steps"]:
        lines += ["| step | status | wall s | cap s | files |", "|---|---|---:|---:|---|"]
        for s in report["steps"]:
            extra = f" ({s['rows_ok']} of {s['rows']} rows ok)" if "rows" in s else ""
            lines.append(f"| {s['step']} | {s['status']}{extra} | {s['wall_s']:.0f} | {s['cap_s']:.0f} | "
                         + ", ".join(Path(f).name for f in s.get("files", [])) + " |")
        lines.append("")
    if report["skipped"]:
        lines += ["Skipped:", ""] + [f"- {s['what']}: {s['why']}" for s in report["skipped"]] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
