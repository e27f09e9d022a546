"""How much does ``medlab.train.fit`` cost over a bare PyTorch loop?

Same model, same data, same seed, same optimizer (AdamW, lr 1e-3, weight
decay 0.01), same validation pass each epoch. The bare loop does the minimum
(forward, loss, backward, step; validation loss read per batch), so the
comparison is strict. Runs alternate (bare, medlab, bare, medlab, ...) so
that drift in machine load hits both alike; the median over repeats is
reported. medlab runs with ``progress=False`` and with ``progress=True`` (the
bar written to a null stream).

Two workloads by default: ``small_cnn`` on 64x64 images (the CPU profile's
model) through a DataLoader, and ``linear`` (one linear layer on 16x16
images) on pre-collated batches, whose steps cost almost nothing, so that the
loop's own cost per batch stands out; divided by a real model's time per
batch it bounds the overhead independently of machine noise.

    python benchmarks/train_overhead.py                    # both workloads, writes results/train_overhead.md
    python benchmarks/train_overhead.py --workload small_cnn:64 --repeats 9 --threads 2

``--compile-compare MODE`` measures something else: plain ``fit`` against
``fit(compile=MODE)`` (e.g. ``reduce-overhead``, CUDA graphs on CUDA) on the
same model, data and seed, in one run, on ``--device``; it reports the first
epoch (which includes compiling) apart from the steady epochs, and writes
results/fit_compile_<device>.md:

    python benchmarks/train_overhead.py --compile-compare reduce-overhead --workload small_cnn:64:320:96 --epochs 3
    python benchmarks/train_overhead.py --compile-compare reduce-overhead --device cuda \
        --workload resnet18:64:4096:512 --batch-size 32 --epochs 4
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from medlab.models import build_classifier
from medlab.runtime import cpu_model
from medlab.train import fit

RESULT = Path(__file__).parent / "results" / "train_overhead.md"


def make_data(n_train, n_val, size, seed=0):
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 1, size, size, generator=g)
        x[y == 1, :, size // 4: size // 2, size // 4: size // 2] += 1.0
        return TensorDataset(x, y)

    return split(n_train), split(n_val)


def loaders(train_set, val_set, batch_size, seed, preloaded=False):
    """DataLoaders, or (``preloaded``) plain lists of ready batches, which take the loader's own cost out."""
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g)
    val = DataLoader(val_set, batch_size=batch_size)
    if preloaded:
        return list(train), list(val)
    return train, val


def bare_loop(model, train_loader, val_loader, epochs, lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            val_loss = 0.0
            for x, y in val_loader:
                val_loss += loss_fn(model(x), y).item() * x.shape[0]
    return val_loss


def timed(fn):
    """(wall seconds, CPU seconds of this process) for one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def build(name):
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
    return build_classifier(name, num_classes=2, in_channels=1)


def measure(model_name, size, n_train, n_val, args):
    """Median wall and CPU seconds of bare / fit / fit+progress on one workload."""
    train_set, val_set = make_data(n_train, n_val, size)
    lr, seed = 1e-3, 0

    def fresh_model():
        torch.manual_seed(seed)
        model = build(model_name)
        model(train_set.tensors[0][:1])          # materialise lazy layers before the optimizer sees them
        return model

    preloaded = model_name == "linear"           # the probe measures the loop alone, without DataLoader cost
    if preloaded:
        batches = loaders(train_set, val_set, args.batch_size, seed, preloaded=True)

    def get_loaders():
        return batches if preloaded else loaders(train_set, val_set, args.batch_size, seed)

    def run_bare():
        bare_loop(fresh_model(), *get_loaders(), args.epochs, lr)

    def run_fit(progress):
        model = fresh_model()
        train_loader, val_loader = get_loaders()
        with contextlib.redirect_stderr(io.StringIO()):
            fit(model, train_loader, val_loader, loss="cross_entropy", lr=lr, epochs=args.epochs, device="cpu",
                amp="auto", channels_last="auto", progress=progress)

    run_bare()                                    # warm-up (allocator, lazy imports)
    run_fit(False)
    variants = {"bare": run_bare, "fit": lambda: run_fit(False), "fit+progress": lambda: run_fit(True)}
    names = list(variants)
    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    repeats = args.probe_repeats if preloaded else args.repeats
    for repeat in range(repeats):
        for name in names[repeat % 3:] + names[:repeat % 3]:      # rotate the order: no variant always first
            w, c = timed(variants[name])
            wall[name].append(w)
            cpu[name].append(c)
    steps = args.epochs * (len(range(0, n_train, args.batch_size)) + len(range(0, n_val, args.batch_size)))
    return {"model": model_name, "size": size, "n_train": n_train, "n_val": n_val, "steps": steps, "wall": wall,
            "cpu": cpu, "preloaded": preloaded, "repeats": repeats}


def table(result):
    wall, cpu, steps = result["wall"], result["cpu"], result["steps"]
    med = statistics.median
    lines = [
        f"### {result['model']}, {result['size']}x{result['size']} images, {result['n_train']} training + "
        f"{result['n_val']} validation ({steps} batches per run"
        + (", pre-collated batches: no DataLoader" if result["preloaded"] else ", DataLoader")
        + f"; {result['repeats']} repeats)",
        "",
        "| loop | wall s, median | CPU s, median | CPU s, min | overhead (CPU median) | overhead (CPU min) "
        "| overhead per batch (CPU min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| bare PyTorch | {med(wall['bare']):.3f} | {med(cpu['bare']):.3f} | {min(cpu['bare']):.3f} | - | - | "
        f"(bare: {1e6 * min(cpu['bare']) / steps:.0f} µs per batch) |",
    ]
    for name in ("fit", "fit+progress"):
        label = "progress bar" if "progress" in name else "progress=False"
        pct_med = 100 * (med(cpu[name]) - med(cpu["bare"])) / med(cpu["bare"])
        pct_min = 100 * (min(cpu[name]) - min(cpu["bare"])) / min(cpu["bare"])
        us_min = 1e6 * (min(cpu[name]) - min(cpu["bare"])) / steps
        lines.append(f"| medlab `fit` ({label}) | {med(wall[name]):.3f} | {med(cpu[name]):.3f} | "
                     f"{min(cpu[name]):.3f} | {pct_med:+.1f}% | {pct_min:+.1f}% | {us_min:+.0f} µs |")
    q1, _, q3 = statistics.quantiles(cpu["bare"], n=4)
    lines += ["", f"Noise: the bare runs' CPU times have an interquartile range of "
                  f"{100 * (q3 - q1) / med(cpu['bare']):.1f}% of their median."]
    lines += ["", "<details><summary>all runs (wall s / CPU s)</summary>", ""]
    lines += [f"- {k}: " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(wall[k], cpu[k])) for k in wall]
    lines += ["", "</details>"]
    return lines


def conclusion(results):
    """The loop's cost per batch (from the probe) against each real workload's cost per batch."""
    probe = next((r for r in results if r["preloaded"]), None)
    if probe is None:
        return []
    med = statistics.median
    per_batch = {name: 1e6 * (med(probe["cpu"][name]) - med(probe["cpu"]["bare"])) / probe["steps"]
                 for name in ("fit", "fit+progress")}
    worst = max(per_batch.values())
    lines = [
        "## Reading",
        "",
        f"On the probe, where a step costs almost nothing, `fit` adds {per_batch['fit']:+.0f} µs per batch "
        f"(progress=False) and {per_batch['fit+progress']:+.0f} µs (with the bar), by medians: the cost of "
        "unpacking the batch, the device check and keeping the loss on the device. "
        f"At the larger of the two, {max(worst, 0):.0f} µs, the loop stays within 5% of a bare loop for any "
        f"workload whose steps take more than {max(worst, 0) / 0.05 / 1000:.2f} ms per batch.",
        "",
    ]
    for r in results:
        if r["preloaded"]:
            continue
        batch_us = 1e6 * med(r["cpu"]["bare"]) / r["steps"]
        measured = 100 * (med(r["cpu"]["fit"]) - med(r["cpu"]["bare"])) / med(r["cpu"]["bare"])
        q1, _, q3 = statistics.quantiles(r["cpu"]["bare"], n=4)
        noise = 100 * (q3 - q1) / med(r["cpu"]["bare"])
        verdict = "within" if abs(measured) <= max(noise, 1.0) else "outside"
        lines.append(f"- {r['model']} at {r['size']}x{r['size']}: {batch_us / 1000:.1f} ms per batch, so the "
                     f"expected overhead is {100 * max(worst, 0) / batch_us:.2f}%; the measured median difference, "
                     f"{measured:+.1f}%, is {verdict} the run-to-run noise ({noise:.1f}%).")
    lines += [
        "",
        "Numbers on a shared or busy machine scatter by several percent from run to run; the per-batch estimate "
        "from the probe is the robust figure. Rerun on an idle machine (and `--threads` equal to its cores) "
        "for cleaner medians.",
        "",
    ]
    return lines


def compile_comparison(model_name, size, n_train, n_val, mode, args):
    """Plain ``fit`` against ``fit(compile=mode)``: per-epoch seconds, steps per second and final losses."""
    device = torch.device(args.device)
    train_set, val_set = make_data(n_train, n_val, size)
    runs = {"plain": [], mode: []}
    for repeat in range(args.repeats):
        order = ["plain", mode] if repeat % 2 == 0 else [mode, "plain"]      # alternate who goes first
        for name in order:
            torch._dynamo.reset()                                            # every compiled run compiles afresh
            torch.manual_seed(0)
            model = build(model_name)
            model(train_set.tensors[0][:1])
            train_loader, val_loader = loaders(train_set, val_set, args.batch_size, 0)
            started = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                history = fit(model, train_loader, val_loader, loss="cross_entropy", lr=1e-3, epochs=args.epochs,
                              device=device, amp=args.amp, channels_last="auto", progress=False,
                              compile=None if name == "plain" else mode, seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs[name].append({"total_s": time.perf_counter() - started, "epoch_s": list(history.epoch_seconds),
                               "train_loss": history["train_loss"][-1], "val_loss": history["val_loss"][-1]})
    torch._dynamo.reset()
    steps = len(range(0, n_train, args.batch_size)) + len(range(0, n_val, args.batch_size))
    return {"model": model_name, "size": size, "n_train": n_train, "n_val": n_val, "mode": mode, "runs": runs,
            "steps_per_epoch": steps, "device": str(device)}


def compile_table(result, args):
    med = statistics.median
    lines = [f"### {result['model']} at {result['size']}x{result['size']}, {result['n_train']} training + "
             f"{result['n_val']} validation images, batch {args.batch_size}, {args.epochs} epochs, "
             f"{result['steps_per_epoch']} batches per epoch, on {result['device']} ({args.repeats} repeats)", "",
             "| fit | first epoch s (median) | later epochs s (median) | ms per batch, later epochs | "
             "whole run s (median) | final train loss | final val loss |", "|---|---:|---:|---:|---:|---:|---:|"]
    steady = {}
    for name, runs in result["runs"].items():
        first = med(r["epoch_s"][0] for r in runs)
        later = [s for r in runs for s in r["epoch_s"][1:]]
        steady[name] = med(later) if later else None
        label = "plain (eager)" if name == "plain" else f"compile={name!r}"
        lines.append(f"| {label} | {first:.2f} | {_f(steady[name], '.3f')} | "
                     f"{_f(steady[name] and 1000 * steady[name] / result['steps_per_epoch'], '.2f')} | "
                     f"{med(r['total_s'] for r in runs):.2f} | {med(r['train_loss'] for r in runs):.4f} | "
                     f"{med(r['val_loss'] for r in runs):.4f} |")
    plain, compiled = steady.get("plain"), steady.get(result["mode"])
    if plain and compiled:
        first_extra = (med(r["epoch_s"][0] for r in result["runs"][result["mode"]])
                       - med(r["epoch_s"][0] for r in result["runs"]["plain"]))
        gain = plain - compiled
        pays = (f"the compilation (about {first_extra:.0f} s more in the first epoch) is repaid after about "
                f"{first_extra / gain:.0f} more epochs like these" if gain > 0 else
                "compiling does not pay on this workload and device")
        lines += ["", f"Steady epochs: compiled {plain / compiled:.2f}× the speed of plain `fit`; {pays}."]
    return lines


def _f(value, spec):
    return "–" if value is None else format(value, spec)


def compare_main(args, workloads):
    results = []
    for workload in workloads:
        parts = workload.split(":")
        model_name, size, n_train, n_val = (parts + ["64", "320", "96"][len(parts) - 1:])[:4]
        results.append(compile_comparison(model_name, int(size), int(n_train), int(n_val), args.compile_compare, args))
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    lines = [f"# `fit` with and without `torch.compile(mode={args.compile_compare!r})`", "",
             "Command: `python benchmarks/train_overhead.py --compile-compare " + args.compile_compare + " "
             + " ".join(f"--workload {w}" for w in workloads)
             + f" --batch-size {args.batch_size} --epochs {args.epochs} --repeats {args.repeats} --device {args.device}"
             + f" --amp {args.amp} --threads {args.threads}`", "",
             f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {args.threads} torch thread(s), {gpu}",
             f"- software: Python {platform.python_version()}, torch {torch.__version__}",
             "- same model, data, seed and optimizer (AdamW, lr 1e-3); runs alternate (plain first, then compiled "
             "first); every compiled run traces the model afresh (`torch._dynamo.reset()`), though Inductor's on-disk "
             "cache can shorten the compilation after the first run on a machine; the first epoch (compilation, "
             "warm-up) is reported apart from the later ones",
             ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines.append("")
    for result in results:
        lines += compile_table(result, args) + [""]
    text = "\n".join(lines)
    print(text)
    output = args.output if args.output != RESULT else RESULT.with_name(f"fit_compile_{device.type}.md")
    if str(output) != "-":
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", metavar="MODEL:SIZE:TRAIN:VAL",
                        help="model name (a medlab classifier or 'linear'), image side, training and validation "
                             "images; repeatable; default small_cnn:64:320:96 and linear:16:6400:1600")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9, help="repeats of each real workload")
    parser.add_argument("--probe-repeats", type=int, default=41, help="repeats of the cheap 'linear' probe")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=RESULT, help="markdown file to write ('-' for none)")
    parser.add_argument("--compile-compare", metavar="MODE",
                        help="instead: plain fit against fit(compile=MODE) (default, reduce-overhead, max-autotune, "
                             "...); --repeats sets the repeats; writes results/fit_compile_<device>.md")
    parser.add_argument("--device", default="cpu", help="device for --compile-compare (cpu, cuda)")
    parser.add_argument("--amp", default="auto", help="fit's amp for --compile-compare (auto: bf16 on CUDA, off on CPU)")
    parser.add_argument("--note", default="", help="a line added to the --compile-compare report (e.g. machine load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile_compare:
        from medlab.train import resolve_compile

        resolve_compile(args.compile_compare, args.device)       # a bad mode stops here, before any work
        return compare_main(args, args.workload or ["small_cnn:64:320:96"])
    workloads = args.workload or ["small_cnn:64:320:96", "linear:16:6400:1600"]
    results = []
    for workload in workloads:
        parts = workload.split(":")
        model_name, size, n_train, n_val = (parts + ["64", "320", "96"][len(parts) - 1:])[:4]
        results.append(measure(model_name, int(size), int(n_train), int(n_val), args))

    lines = [
        "# Training-loop overhead: `medlab.train.fit` vs a bare PyTorch loop",
        "",
        "Command: `python benchmarks/train_overhead.py "
        + " ".join(f"--workload {w}" for w in workloads)
        + f" --batch-size {args.batch_size} --epochs {args.epochs} "
        f"--repeats {args.repeats} --probe-repeats {args.probe_repeats} --threads {args.threads}`",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {args.threads} torch thread(s), no GPU",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}",
        f"- batch {args.batch_size}, {args.epochs} epochs, "
        "AdamW (lr 1e-3, weight decay 0.01), validation loss every epoch, in-memory data, no workers",
        "- repeats interleaved (bare, fit, fit+progress; order rotated each repeat); wall-clock time and CPU "
        "time of the benchmark process; median and minimum over repeats (the minimum is the estimate least "
        "disturbed by other processes on a shared machine)",
        "",
    ]
    for result in results:
        lines += table(result) + [""]
    lines += conclusion(results)
    text = "\n".join(lines)
    print(text)
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
