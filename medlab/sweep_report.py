"""The report of a sweep: every run's status and metrics, statistics over seeds, a figure per metric.

Written into the sweep folder by :func:`medlab.sweep.sweep` (and again by
``medlab report DIR``):

``summary.md`` and ``index.html``
    one table of configurations (the parameters other than ``SEED``) with, for
    each headline metric, the mean, the standard deviation and a 95 %
    percentile-bootstrap interval of the mean over the seeds; one table of every
    run with its status, attempts, wall time, metrics and a link to its own
    report; the figures; the problems.
``figures/<metric>.png``
    each headline metric against the first swept parameter: one dot per seed,
    the mean with its bootstrap interval, one line per value of the other swept
    parameters.
``results.json``
    the same as data.

The statistics use the runs that ran to the end (status ``passed`` or
``short``); failed, timed-out, errored and pending runs are listed but not
averaged. With one seed the standard deviation and the interval are left empty.
"""
from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from .sweep import ATTEMPTS_FILE, DONE_FILE, ERROR_FILE, RUNS_DIR, load_spec, write_atomic

__all__ = ["SweepReport", "seed_statistics", "rerender", "FINISHED", "MAX_DEFAULT_METRICS"]

FINISHED = ("passed", "short")  # runs whose metrics enter the statistics
MAX_DEFAULT_METRICS = 8
BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95


def seed_statistics(values, n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
    """Mean, standard deviation (n-1) and a percentile-bootstrap interval of the mean of ``values``.

    The seeds are resampled with replacement. Fewer than two values give
    ``None`` for the spread and the interval.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    stats = {"n": int(x.size), "mean": None, "sd": None, "low": None, "high": None}
    if x.size == 0:
        return stats
    stats["mean"] = float(x.mean())
    if x.size >= 2:
        stats["sd"] = float(x.std(ddof=1))
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, (n_resamples, x.size))].mean(axis=1)
        alpha = (1 - level) / 2
        stats["low"], stats["high"] = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    return stats


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _stat_text(stats: dict) -> str:
    if stats["mean"] is None:
        return "—"
    text = _fmt(stats["mean"])
    if stats["sd"] is not None:
        text += f" ± {_fmt(stats['sd'])} [{_fmt(stats['low'])}, {_fmt(stats['high'])}]"
    return text


class SweepReport:
    """Reads a sweep folder and writes its report.

    Args:
        out: the sweep folder.
        spec: its ``sweep.json`` (read when not given).
        metrics: headline metrics; default: the notebook's expectations for the profile,
            else every number the runs recorded (at most :data:`MAX_DEFAULT_METRICS`).
    """

    def __init__(self, out, spec: dict | None = None, metrics: list | None = None):
        self.out = Path(out)
        self.spec = spec or load_spec(out)
        self._metrics = list(metrics) if metrics else None
        self._rows = {run["id"]: self._read(run) for run in self.spec["runs"]}

    # ------------------------------------------------------------------ reading
    def refresh(self, run_id: str) -> None:
        """Read one run again (after it finished)."""
        run = next(r for r in self.spec["runs"] if r["id"] == run_id)
        self._rows[run_id] = self._read(run)

    def _read(self, run: dict) -> dict:
        folder = self.out / RUNS_DIR / run["id"]
        row = {"id": run["id"], "params": run["params"], "status": "pending", "attempts": 0, "wall_time_s": None,
               "metrics": {}, "error": None, "report": None, "notebook_html": None, "executed": None}
        attempts = folder / ATTEMPTS_FILE
        if attempts.exists():
            row["attempts"] = len(attempts.read_text().splitlines())
        marker = folder / DONE_FILE
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
                result = json.loads((folder / "results.json").read_text())["results"][0]
            except (OSError, ValueError, KeyError, IndexError) as err:
                row.update(status="error", error=f"{folder} is marked complete but its results.json cannot be read "
                                                 f"({type(err).__name__}: {err}); delete {DONE_FILE} there to run it again")
                return row
            row.update(status=result["status"], wall_time_s=result["wall_time_s"], metrics=result["metrics"],
                       error=result["error"], report=f"{RUNS_DIR}/{run['id']}/index.html",
                       attempts=done.get("attempts", row["attempts"]))
            for key in ("html", "executed"):
                if result.get(key):
                    row["notebook_html" if key == "html" else key] = f"{RUNS_DIR}/{run['id']}/{result[key]}"
        elif (folder / ERROR_FILE).is_file():
            row.update(status="error", error=json.loads((folder / ERROR_FILE).read_text())["error"])
        return row

    @property
    def rows(self) -> list[dict]:
        """One dict per run, in the order of ``sweep.json``."""
        return [self._rows[run["id"]] for run in self.spec["runs"]]

    @property
    def swept(self) -> list[str]:
        """Parameters with more than one value across the runs, ``SEED`` left out."""
        names = []
        for run in self.spec["runs"]:
            names += [n for n in run["params"] if n not in names and n != "SEED"]
        return [n for n in names
                if len({json.dumps(r["params"].get(n), sort_keys=True) for r in self.spec["runs"]}) > 1]

    @property
    def metrics(self) -> list[str]:
        """The headline metrics."""
        if self._metrics:
            return self._metrics
        from .runner import load_expectations
        from .errors import NotebookError

        try:
            expected = load_expectations(Path(self.spec["source"]).parent)
        except NotebookError:
            expected = {}
        names = list(expected.get(self.spec["notebook"], {}).get(self.spec["profile"], {}))
        if names:
            return names
        for row in self.rows:
            names += [k for k, v in row["metrics"].items() if k not in names and _number(v) is not None]
        return names[:MAX_DEFAULT_METRICS]

    @property
    def configurations(self) -> list[dict]:
        """Per configuration (the parameters but ``SEED``): its runs and each metric's statistics over seeds."""
        groups: dict[str, dict] = {}
        for row in self.rows:
            config = {k: v for k, v in row["params"].items() if k != "SEED"}
            key = json.dumps(config, sort_keys=True)
            group = groups.setdefault(key, {"params": config, "runs": 0, "finished": 0, "stats": {}, "_rows": []})
            group["runs"] += 1
            group["_rows"].append(row)
        metrics = self.metrics
        for group in groups.values():
            finished = [r for r in group.pop("_rows") if r["status"] in FINISHED]
            group["finished"] = len(finished)
            group["stats"] = {m: seed_statistics([_number(r["metrics"].get(m)) for r in finished]) for m in metrics}
        return list(groups.values())

    # ------------------------------------------------------------------ writing
    def write(self, figures: bool = True) -> None:
        """Write ``results.json``, ``summary.md``, ``index.html`` (and the figures)."""
        configurations = self.configurations
        written = []
        if figures:
            written = self._figures(configurations)
        else:
            folder = self.out / "figures"
            written = sorted(p.relative_to(self.out).as_posix() for p in folder.glob("*.png")) if folder.is_dir() else []
        payload = {"notebook": self.spec["notebook"], "profile": self.spec["profile"], "swept": self.swept,
                   "metrics": self.metrics, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "runs": self.rows, "configurations": configurations, "figures": written}
        write_atomic(self.out / "results.json", json.dumps(payload, indent=2))
        write_atomic(self.out / "summary.md", self._markdown(configurations, written))
        write_atomic(self.out / "index.html", self._html(configurations, written))

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return f"{len(self.rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))

    def _grid_text(self) -> str:
        grid = self.spec.get("grid", {})
        return "; ".join(f"{name} = {', '.join(_fmt(v) for v in values)}" for name, values in grid.items()) or "none"

    def _markdown(self, configurations, figures) -> str:
        swept, metrics = self.swept, self.metrics
        lines = [f"# medlab sweep: `{self.spec['notebook']}`, profile `{self.spec['profile']}`", "",
                 f"{self._counts()}. Grid: {self._grid_text()}.", "",
                 "Each metric per configuration: mean ± sd [95 % bootstrap interval of the mean] over the seeds "
                 "of the runs that ran to the end.", "", "## Configurations", "",
                 "| " + " | ".join([*swept, "runs"] + metrics) + " |",
                 "|" + "---|" * (len(swept) + 1 + len(metrics))]
        for config in configurations:
            cells = [_fmt(config["params"].get(n)) for n in swept] + [f"{config['finished']}/{config['runs']}"]
            cells += [_stat_text(config["stats"][m]) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        names = [*swept, "SEED"] if any("SEED" in r["params"] for r in self.rows) else swept
        lines += ["", "## Runs", "",
                  "| " + " | ".join(["run", *names, "status", "attempts", "wall time (s)", *metrics, "report"]) + " |",
                  "|" + "---|" * (len(names) + 5 + len(metrics))]
        for row in self.rows:
            cells = [row["id"], *(_fmt(row["params"].get(n)) for n in names), row["status"], str(row["attempts"]),
                     _fmt(row["wall_time_s"]), *(_fmt(row["metrics"].get(m)) for m in metrics),
                     f"[report]({row['report']})" if row["report"] else "—"]
            lines.append("| " + " | ".join(cells) + " |")
        if figures:
            lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
        problems = [r for r in self.rows if r["error"]]
        if problems:
            lines += ["", "## Problems", ""]
            lines += [f"- **{r['id']}** ({r['status']}): {r['error'].splitlines()[0]}" for r in problems]
        return "\n".join(lines) + "\n"

    def _html(self, configurations, figures) -> str:
        from .runner import _STYLE

        esc = html.escape
        swept, metrics = self.swept, self.metrics
        head = "".join(f"<th>{esc(n)}</th>" for n in [*swept, "runs", *metrics])
        body = []
        for config in configurations:
            cells = [esc(_fmt(config["params"].get(n))) for n in swept] + [f"{config['finished']}/{config['runs']}"]
            cells += [esc(_stat_text(config["stats"][m])) for m in metrics]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        names = [*swept, "SEED"] if any("SEED" in r["params"] for r in self.rows) else swept
        run_head = "".join(f"<th>{esc(n)}</th>" for n in
                           ["run", *names, "status", "attempts", "wall time (s)", *metrics, "links"])
        run_rows = []
        for row in self.rows:
            links = [f'<a href="{esc(row[k])}">{label}</a>' for k, label in
                     (("report", "run report"), ("notebook_html", "executed notebook"), ("executed", ".ipynb"))
                     if row[k]]
            error = f"<pre>{esc(row['error'])}</pre>" if row["error"] else ""
            cells = [esc(row["id"]), *(esc(_fmt(row["params"].get(n))) for n in names), esc(row["status"]) + error,
                     str(row["attempts"]), esc(_fmt(row["wall_time_s"])),
                     *(esc(_fmt(row["metrics"].get(m))) for m in metrics), " · ".join(links)]
            run_rows.append(f'<tr class="{esc(row["status"])}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        images = "".join(f'<figure><img src="{esc(f)}" alt="{esc(Path(f).stem)}"></figure>' for f in figures)
        title = f"medlab sweep: {self.spec['notebook']}, profile {self.spec['profile']}"
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
                f"<style>{_STYLE}.pending,.error{{background:#f1f3f4}}figure{{display:inline-block;margin:.5em}}"
                f"</style></head><body><h1>{esc(title)}</h1>"
                f"<p>{esc(self._counts())}. Grid: {esc(self._grid_text())}.</p>"
                "<p>Each metric per configuration: mean ± sd [95 % bootstrap interval of the mean] over the seeds "
                "of the runs that ran to the end.</p>"
                f"<h2>Configurations</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                f"<h2>Figures</h2>{images or '<p>none yet</p>'}"
                f"<h2>Runs</h2><table><thead><tr>{run_head}</tr></thead><tbody>{''.join(run_rows)}</tbody></table>"
                "</body></html>\n")

    def _figures(self, configurations) -> list[str]:
        """One PNG per headline metric against the first swept parameter; returns their paths."""
        from matplotlib.figure import Figure

        swept = self.swept
        x_name = swept[0] if swept else None
        others = swept[1:]
        x_values = []
        for row in self.rows:
            value = row["params"].get(x_name) if x_name else "all runs"
            if value not in x_values:
                x_values.append(value)
        numeric = all(_number(v) is not None for v in x_values)
        folder = self.out / "figures"
        written = []
        for metric in self.metrics:
            points = [(r, _number(r["metrics"].get(metric))) for r in self.rows if r["status"] in FINISHED]
            if not any(v is not None for _, v in points):
                continue
            folder.mkdir(exist_ok=True)
            fig = Figure(figsize=(6, 4), layout="constrained")
            ax = fig.subplots()
            series: dict[str, list] = {}
            for config in configurations:
                label = ", ".join(f"{n}={_fmt(config['params'].get(n))}" for n in others) or None
                series.setdefault(label, []).append(config)
            for index, (label, configs) in enumerate(series.items()):
                color = f"C{index % 10}"
                xs, means, lows, highs = [], [], [], []
                for config in configs:
                    value = config["params"].get(x_name) if x_name else "all runs"
                    x = value if numeric else x_values.index(value)
                    seeds = [v for r, v in points if v is not None
                             and {k: p for k, p in r["params"].items() if k != "SEED"} == config["params"]]
                    offset = 0 if numeric else 0.06 * (index - (len(series) - 1) / 2)
                    ax.scatter([x + offset] * len(seeds), seeds, s=14, alpha=0.45, color=color, linewidths=0)
                    stats = config["stats"][metric]
                    if stats["mean"] is not None:
                        xs.append(x + offset)
                        means.append(stats["mean"])
                        lows.append(stats["mean"] - (stats["low"] if stats["low"] is not None else stats["mean"]))
                        highs.append((stats["high"] if stats["high"] is not None else stats["mean"]) - stats["mean"])
                if not xs:
                    continue
                order = np.argsort(xs)
                ax.errorbar(np.asarray(xs)[order], np.asarray(means)[order],
                            yerr=[np.asarray(lows)[order], np.asarray(highs)[order]],
                            color=color, marker="o", capsize=4, label=label,
                            linestyle="-" if numeric else "none")  # no line between categories
            if numeric and all(v > 0 for v in x_values) and max(x_values) / min(x_values) >= 100:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(x_values)), [_fmt(v) for v in x_values])
                ax.set_xlim(-0.5, len(x_values) - 0.5)
            ax.set_xlabel(x_name or "")
            ax.set_ylabel(metric)
            ax.set_title(f"{self.spec['notebook']} ({self.spec['profile']}): mean and 95 % interval over seeds",
                         fontsize="medium")
            if len(series) > 1:
                ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
            name = re.sub(r"[^A-Za-z0-9._-]", "_", metric)
            fig.savefig(folder / f"{name}.png", dpi=110)
            written.append(f"figures/{name}.png")
        return written


def rerender(out, metrics: list | None = None) -> SweepReport:
    """Re-check every complete run against the current expectations and rewrite the sweep's report."""
    from . import runner

    out = Path(out).resolve()
    spec = load_spec(out)
    for run in spec["runs"]:
        folder = out / RUNS_DIR / run["id"]
        if (folder / DONE_FILE).is_file():
            runner.rerender(folder)
    report = SweepReport(out, spec, metrics=metrics)
    report.write(figures=True)
    return report
