"""The suite's own speed and memory budgets, measured.

Run from the repository root::

    python benchmarks/budgets.py --only import --only phantoms      # the two quick checks (a minute or two)
    python benchmarks/budgets.py --only suite                       # run every lesson, smoke and cpu (25+ min)
    python benchmarks/budgets.py --only suite --smoke-run runs/smoke --cpu-run runs/latest   # read finished runs
    python benchmarks/budgets.py --only gpu --gpu-run runs/gpu      # a finished gpu-profile run (or run it, on a GPU)
    python benchmarks/budgets.py                                    # everything (gpu only where there is one)

Budgets (on a 2-core machine without a GPU):

* ``import``: ``import medlab`` takes under 1 s when torch is already imported
  (submodules load lazily). Also reported: importing what a lesson touches
  (``medlab.train``, ``.models``, ``.data``, ``.metrics``, ``.viz``), for information.
* ``phantoms``: generating phantoms is at least 10 times faster than the
  model that consumes them trains (images per second, at the cpu profile's
  64x64 and the sizes in its lessons), so data never holds training back.
* ``suite``: ``medlab run --profile smoke`` over every lesson in under 5
  minutes in total; ``--profile cpu``: every lesson under 4 minutes and under
  2 GB peak memory, the whole suite under 25 minutes. Read from the runner's
  ``results.json`` (wall time and peak memory per lesson).
* ``gpu``: ``medlab run --profile gpu`` on one H100/H200-class GPU: every
  lesson under 90 s alone and the whole suite under 10 minutes one after
  another. Read from a finished run folder (``--gpu-run``) or run here when
  CUDA is available; skipped (the previous section kept) otherwise.

Every suite table also gives each lesson's own estimate of its run time on an
NVIDIA T4 (``t4_estimate_s`` in its ``metrics.json``, written by
``medlab.record``; see ``medlab/compute.py`` for the formula and the assumed
T4 rates): from a gpu run it is the estimate a course on a T4 needs, from a cpu
run it is informative only (the launch cost of small networks is not in it).

Writes ``benchmarks/results/budgets.md`` (sections not measured this time are
kept from the previous file) and prints the same.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "budgets.md"

IMPORT_BUDGET_S = 1.0
PHANTOM_RATIO = 10.0
SMOKE_TOTAL_S = 5 * 60
CPU_EACH_S = 4 * 60
CPU_EACH_MB = 2048
CPU_TOTAL_S = 25 * 60
GPU_EACH_S = 90
GPU_TOTAL_S = 10 * 60

# (phantom kind, image side, the model the lessons train on it, its width, batch): the cpu profile's pairs
PAIRS = [
    ("chest_xray", 64, "small_cnn", 16, 32),
    ("ct_slice", 64, "small_cnn", 16, 32),
    ("lung_ultrasound", 64, "small_cnn", 16, 32),
    ("us_nodule", 64, "small_cnn", 16, 32),
    ("ct_slice", 64, "unet", 16, 16),
    ("ct_slice", 128, "unet", 16, 8),
]


def ok(flag: bool) -> str:
    return "**met**" if flag else "**NOT met**"


# ---------------------------------------------------------------------------------------------
# import time


IMPORT_SNIPPET = """
import time, torch
t = time.perf_counter()
import medlab
a = time.perf_counter() - t
t = time.perf_counter()
import medlab.train, medlab.models, medlab.data, medlab.metrics, medlab.viz
b = time.perf_counter() - t
print(a, b)
"""


def measure_import(repeats: int = 5) -> dict:
    """Medians over fresh interpreters of ``import medlab`` and of a lesson's imports, torch already loaded."""
    plain, lesson = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", IMPORT_SNIPPET], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout.split()
        plain.append(float(out[0]))
        lesson.append(float(out[1]))
    heavy = subprocess.run([sys.executable, "-X", "importtime", "-c",
                            "import torch; import medlab.train, medlab.models, medlab.data, medlab.metrics, medlab.viz"],
                           capture_output=True, text=True, cwd=ROOT).stderr
    top = []
    seen_torch = False
    for line in heavy.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        if name.strip() == "torch":
            seen_torch = True
            continue
        if seen_torch and not name.startswith("  "):   # top-level imports after torch
            top.append((int(parts[1]) / 1e6, name.strip()))
    top.sort(reverse=True)
    return {"import_medlab_s": statistics.median(plain), "import_medlab_max_s": max(plain),
            "lesson_imports_s": statistics.median(lesson), "repeats": repeats, "top": top[:8]}


def import_section(r: dict) -> list[str]:
    lines = [
        f"`import medlab` with torch already imported: median {r['import_medlab_s'] * 1000:.1f} ms "
        f"(max {r['import_medlab_max_s'] * 1000:.1f} ms over {r['repeats']} fresh interpreters); budget "
        f"{IMPORT_BUDGET_S:.0f} s: {ok(r['import_medlab_max_s'] < IMPORT_BUDGET_S)}.",
        "",
        f"For information, importing what a lesson uses (`medlab.train`, `.models`, `.data`, `.metrics`, `.viz`) "
        f"after torch: median {r['lesson_imports_s']:.2f} s. Largest top-level imports after torch "
        "(`python -X importtime`, cumulative):",
        "",
    ]
    lines += [f"- {name}: {seconds:.2f} s" for seconds, name in r["top"]]
    return lines


# ---------------------------------------------------------------------------------------------
# phantoms against training


def measure_phantom_ratio(repeats: int = 3) -> list[dict]:
    """Generation and training rates (images/s) of each pair in ``PAIRS``, on this machine's threads."""
    import torch

    from medlab import bench

    rows = []
    for kind, size, model, width, batch in PAIRS:
        gen = bench.measure_phantoms(kind, size, n=256 if size <= 64 else 96, repeats=repeats)
        train = bench.measure(bench.Case(model, size, batch, "train", width=width), "cpu", warmup=1,
                              repeats=repeats, steps=2)
        ratio = gen["images_per_s"] / train["images_per_s"] if train.get("status") == "ok" else None
        rows.append({"phantom": kind, "size": size, "model": model, "width": width, "batch": batch,
                     "generate": gen["images_per_s"], "generate_min": gen["images_per_s_min"],
                     "train": train.get("images_per_s"), "train_max": train.get("images_per_s_max"),
                     "ratio": ratio,
                     "ratio_worst": (gen["images_per_s_min"] / train["images_per_s_max"]) if ratio else None,
                     "threads": torch.get_num_threads()})
        print(rows[-1], flush=True)
    return rows


def phantom_section(rows: list[dict]) -> list[str]:
    lines = ["| phantom | size | consumed by | generation (images/s) | training (images/s) | ratio (median) | "
             "ratio (slowest generation / fastest training) | budget x10 |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['phantom']} | {r['size']} | {r['model']} (width {r['width']}, batch {r['batch']}) "
                     f"| {r['generate']:,.0f} | {r['train']:,.1f} | {r['ratio']:.1f} | {r['ratio_worst']:.1f} "
                     f"| {ok(r['ratio_worst'] >= PHANTOM_RATIO)} |")
    lines += ["", f"Generation runs on one thread (NumPy); training uses {rows[0]['threads']} torch thread(s). "
              "Both are medians over repeats; the worst-case ratio sets the slowest generation against the fastest "
              "training step."]
    return lines


# ---------------------------------------------------------------------------------------------
# the whole suite


def run_suite(profile: str, out: Path) -> Path:
    """``medlab run --profile PROFILE --out OUT`` over every lesson; returns OUT."""
    cmd = [str(Path(sys.executable).with_name("medlab")), "run", "--profile", profile, "--out", str(out)]
    print("running:", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT)
    (out / "budgets_total_wall_s.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return out


def suite_rows(run_dir: Path) -> tuple[list[dict], float, float, str]:
    """A run folder's rows, its total wall time (measured by :func:`run_suite`, else the sum of the lessons),
    the sum of the lessons' wall times and when it was written."""
    payload = json.loads((run_dir / "results.json").read_text())
    rows = payload["results"]
    summed = sum(r["wall_time_s"] for r in rows)
    total_file = run_dir / "budgets_total_wall_s.txt"
    total = (float(total_file.read_text()) if total_file.exists() else 0.0) or summed
    return rows, total, summed, payload.get("written", "")


def t4_estimate(run_dir: Path, row: dict) -> float | None:
    """A lesson's T4 estimate: from the runner's row, else from its metrics.json (runs older than the column)."""
    if row.get("t4_estimate_s") is not None:
        return row["t4_estimate_s"]
    path = run_dir / row["notebook"] / "metrics.json"
    if path.exists():
        return json.loads(path.read_text()).get("t4_estimate_s")
    return None


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min")


def gpu_section(gpu_dir: Path) -> list[str]:
    """The gpu-profile budgets (90 s a lesson, 10 min in all) and each lesson's T4 estimate, from a run folder."""
    rows, total, summed, written = suite_rows(gpu_dir)
    estimates = [t4_estimate(gpu_dir, r) for r in rows]
    known = [e for e in estimates if e is not None]
    devices = sorted({json.loads((gpu_dir / r["notebook"] / "metrics.json").read_text()).get("machine", {}).get("gpu")
                      or "no GPU" for r in rows if (gpu_dir / r["notebook"] / "metrics.json").exists()})
    lines = [f"**gpu** ({len(rows)} lessons on {', '.join(devices) or 'unknown device'}, run folder `{gpu_dir}`, "
             f"written {written}): total {total / 60:.1f} min (sum of lessons {summed / 60:.1f} min); budget "
             f"{GPU_TOTAL_S // 60} min: {ok(total < GPU_TOTAL_S)}. Estimated on a T4, all lessons: "
             f"{minutes(sum(known)) if known else '–'}"
             + (f" ({len(rows) - len(known)} lesson(s) gave no estimate)" if len(known) < len(rows) else "") + ".", "",
             f"| lesson | status | wall (s) | under {GPU_EACH_S} s | T4 estimate |", "|---|---|---:|---|---:|"]
    for r, estimate in zip(rows, estimates):
        lines.append(f"| {r['notebook']} | {r['status']} | {r['wall_time_s']:.0f} | "
                     f"{ok(r['wall_time_s'] < GPU_EACH_S)} | {minutes(estimate)} |")
    lines += ["", "The T4 estimate is each lesson's own (`t4_estimate_s` in its metrics.json): the FLOPs its "
              "`medlab.train` loops did over an assumed sustained T4 rate, at least the time those loops took on "
              "the GPU measured, plus the rest of its time as measured (medlab/compute.py)."]
    return lines


def suite_section(smoke_dir: Path | None, cpu_dir: Path | None) -> list[str]:
    lines = []
    if smoke_dir is not None:
        rows, total, summed, written = suite_rows(smoke_dir)
        lines += [f"**smoke** ({len(rows)} lessons, run folder `{smoke_dir}`, written {written}): total "
                  f"{total / 60:.1f} min (sum of lessons {summed / 60:.1f} min); budget 5 min: "
                  f"{ok(total < SMOKE_TOTAL_S)}; failures: "
                  + (", ".join(r["notebook"] for r in rows if r["status"] != "passed") or "none"), ""]
    if cpu_dir is not None:
        rows, total, summed, written = suite_rows(cpu_dir)
        lines += [f"**cpu** ({len(rows)} lessons, run folder `{cpu_dir}`, written {written}): total "
                  f"{total / 60:.1f} min (sum of lessons {summed / 60:.1f} min); budget 25 min: "
                  f"{ok(total < CPU_TOTAL_S)}", "",
                  "| lesson | status | wall (s) | peak memory (MiB) | under 4 min | under 2 GB | T4 estimate |",
                  "|---|---|---:|---:|---|---|---:|"]
        for r in rows:
            peak = r.get("peak_memory_mb")
            lines.append(f"| {r['notebook']} | {r['status']} | {r['wall_time_s']:.0f} | "
                         f"{'–' if peak is None else f'{peak:.0f}'} | {ok(r['wall_time_s'] < CPU_EACH_S)} | "
                         f"{'–' if peak is None else ok(peak < CPU_EACH_MB)} | {minutes(t4_estimate(cpu_dir, r))} |")
        lines += ["", "T4 estimate from a cpu run: informative only (see the gpu section)."]
    return lines


# ---------------------------------------------------------------------------------------------


TITLES = {"import": "Import time", "phantoms": "Phantom generation against training", "suite": "The whole suite",
          "gpu": "The gpu profile and the T4 estimate"}


def write(path: Path, sections: dict, header: str) -> str:
    old = path.read_text() if path.exists() else ""
    text = [header]
    for key, title in TITLES.items():
        if key in sections:
            text.append(f"## {title}\n\n" + "\n".join(sections[key]) + "\n")
        elif f"## {title}" in old:
            chunk = old.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
            text.append(f"## {title}{chunk.rstrip()}\n")
    content = "\n".join(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return content


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(TITLES), action="append")
    ap.add_argument("--smoke-run", type=Path, help="read this finished smoke run folder instead of running it")
    ap.add_argument("--cpu-run", type=Path, help="read this finished cpu run folder instead of running it")
    ap.add_argument("--gpu-run", type=Path, help="read this finished gpu-profile run folder instead of running it")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "budgets", help="where fresh suite runs go")
    ap.add_argument("--threads", type=int, help="torch threads for the phantom/training comparison")
    ap.add_argument("--note", default="", help="a line for the report (e.g. 'machine shared with other jobs')")
    ap.add_argument("--output", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    parts = args.only or list(TITLES)
    import torch

    from medlab.runtime import cpu_model

    if args.threads:
        torch.set_num_threads(args.threads)
    sections = {}
    if "import" in parts:
        sections["import"] = import_section(measure_import())
    if "phantoms" in parts:
        sections["phantoms"] = phantom_section(measure_phantom_ratio())
    if "suite" in parts:
        smoke = args.smoke_run or run_suite("smoke", args.runs / "smoke")
        cpu = args.cpu_run or run_suite("cpu", args.runs / "cpu")
        sections["suite"] = suite_section(smoke, cpu)
    if "gpu" in parts:
        if args.gpu_run is not None:
            sections["gpu"] = gpu_section(args.gpu_run)
        elif torch.cuda.is_available():
            sections["gpu"] = gpu_section(run_suite("gpu", args.runs / "gpu"))
        else:
            print("gpu section skipped: no GPU here and no --gpu-run folder (the previous section is kept)")
    stamp = f"_Measured {time.strftime('%Y-%m-%d %H:%M')} on {cpu_model()} ({os.cpu_count()} cores)" + \
        (f"; {args.note}" if args.note else "") + "._"
    sections = {key: [stamp, ""] + lines for key, lines in sections.items()}
    header = (f"# Budgets\n\nProduced by `python benchmarks/budgets.py` (see its docstring for the options); "
              f"last run: `python benchmarks/budgets.py {shlex.join(argv or sys.argv[1:])}` with torch "
              f"{torch.__version__}, Python {platform.python_version()}. Each section says when and where it was "
              "measured.\n")
    print(write(args.output, sections, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
