"""medlab against MONAI on the same task: binary lesion segmentation of 128x128 CT phantoms.

Run from the repository root (MONAI is a benchmark dependency, in the ``dev`` extra)::

    python benchmarks/vs_monai.py --quick     # 1 run per side, 60 s budget: proves the script works (minutes)
    python benchmarks/vs_monai.py             # 3 runs per side, 240 s budget: the figures for RESULTS.md
    python benchmarks/vs_monai.py --profile   # also profile 10 training steps of each side (torch.profiler)

The task
    ``medlab.data.make_splits("ct_slice", size=128, target="lesion")``: COVID-19
    CT phantoms (half of them with lesions) shown through the wide window,
    lesion classes (ground-glass, consolidation) merged into one foreground.
    Both sides get the same tensors, the same batches in the same order, the
    same seed, the same device and the same number of CPU threads; the data
    are in memory (no DataLoader) so only the recipes differ.

The two recipes
    (a) medlab's recipe: ``medlab.models.UNet(1, 2, class_prior=...)`` (4 levels, 16 channels
        at full resolution, batch norm; ``--medlab-base-channels`` changes the width; the output bias
        starts at the log of the training pixels' class shares, ``medlab.models.pixel_shares``, which
        ``--no-class-prior`` leaves out), ``medlab.losses.DiceCELoss``, AdamW at
        1e-3 (the default of ``medlab.train.fit``), trained by
        ``medlab.train.train_one_epoch`` (mixed precision and channels_last
        when the device is CUDA, as ``fit``'s ``"auto"`` does).
    (b) MONAI's standard 2D recipe (its ``2d_segmentation`` tutorials):
        ``monai.networks.nets.UNet(spatial_dims=2, in_channels=1,
        out_channels=1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
        num_res_units=2)``, ``monai.losses.DiceLoss(sigmoid=True)``, Adam at
        1e-3, the tutorials' plain float32 loop. (The tutorials train on
        random 96x96 crops with batch 4; here both sides see whole images in
        the same batches.)

What is measured
    Validation Dice (pooled over the validation set: all pixels of all cases,
    so normal slices count through their false positives) every
    ``--eval-every`` steps; the clock stops during validation. Per run: the
    training time to reach ``--target`` (0.85), the Dice reached when the
    training clock passes ``--budget`` seconds, and the Dice (and steps made)
    at each of ``--checkpoints`` seconds within the budget (15, 30, 60, 120 by
    default: the last validation at or before each, 0 before the first), so a
    short budget is compared as well as a long one. Reported: medians over
    ``--repeats`` runs (seeds 0, 1, 2, ...) and the ratios medlab / MONAI
    (time: below 1 means medlab is faster; Dice: above 1 means medlab is
    better), plus each network's size, FLOPs and step time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from medlab.data.dataset import make_splits  # noqa: E402
from medlab.runtime import cpu_model  # noqa: E402

RESULT_MD = ROOT / "benchmarks" / "results" / "vs_monai.md"


# ---------------------------------------------------------------------------------------------
# data


def make_data(n_train: int, n_val: int, size: int = 128, seed: int = 0):
    """Images (N,1,H,W) in [0,1] and binary lesion labels (N,H,W), for training and validation."""
    splits = make_splits("ct_slice", n_train, n_val, 0, size=size, seed=seed, target="lesion")
    out = {}
    for name in ("train", "val"):
        ds = splits[name]
        out[name] = (ds.images.float().contiguous(), (ds.targets > 0).long().contiguous())
    return out


def batch_order(n: int, batch_size: int, epochs: int, seed: int):
    """Index batches for ``epochs`` shuffled passes (the same for both sides)."""
    g = torch.Generator().manual_seed(1000 + seed)
    order = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        order += [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]  # full batches only
    return order


def pooled_dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """2|P∩T| / (|P| + |T|) over all pixels of all cases (1.0 if both are empty)."""
    p, t = pred.bool(), truth.bool()
    denom = p.sum().item() + t.sum().item()
    return 1.0 if denom == 0 else 2.0 * (p & t).sum().item() / denom


# ---------------------------------------------------------------------------------------------
# the two sides


class MedlabSide:
    """medlab's recipe: its UNet (output bias at the class prior), DiceCELoss, AdamW 1e-3, its training loop."""

    name = "medlab"

    base_channels = 16   # medlab.models.UNet's default; --medlab-base-channels changes it
    class_prior = None   # the training pixels' class shares (set in main; --no-class-prior leaves it None)

    def __init__(self, device):
        from medlab.losses import DiceCELoss
        from medlab.models import UNet
        from medlab.train import resolve_amp

        self.device = device
        self.model = UNet(1, 2, base_channels=self.base_channels, class_prior=self.class_prior).to(device)
        self.channels_last = device.type == "cuda"            # fit's channels_last="auto"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = resolve_amp("auto", device)           # fit's amp="auto"
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.loss = DiceCELoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.01)

    def train_steps(self, batches):
        from medlab.train import train_one_epoch

        return train_one_epoch(self.model, batches, self.loss, self.optimizer, self.device, self.amp_dtype,
                               self.scaler, self.channels_last)

    def batch(self, x, y):
        return x, y

    @torch.inference_mode()
    def predict(self, x):
        self.model.eval()
        out = []
        for i in range(0, len(x), 64):
            xb = x[i:i + 64].to(self.device)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out.append(self.model(xb).argmax(1).cpu())
        self.model.train()
        return torch.cat(out)


class MonaiSide:
    """MONAI's 2D tutorial recipe: its UNet with residual units, DiceLoss(sigmoid=True), Adam 1e-3."""

    name = "MONAI"

    def __init__(self, device):
        from monai.losses import DiceLoss
        from monai.networks.nets import UNet

        self.device = device
        self.model = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128, 256),
                          strides=(2, 2, 2, 2), num_res_units=2).to(device)
        self.loss = DiceLoss(sigmoid=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), 1e-3)

    def train_steps(self, batches):
        self.model.train()
        for inputs, labels in batches:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            outputs = self.model(inputs)
            loss = self.loss(outputs, labels)
            loss.backward()
            self.optimizer.step()

    def batch(self, x, y):
        return x, y[:, None].float()

    @torch.inference_mode()
    def predict(self, x):
        self.model.eval()
        out = [(torch.sigmoid(self.model(x[i:i + 64].to(self.device))) > 0.5)[:, 0].cpu()
               for i in range(0, len(x), 64)]
        self.model.train()
        return torch.cat(out)


SIDES = {"medlab": MedlabSide, "MONAI": MonaiSide}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(side_name, data, device, seed, budget, target, batch_size, eval_every, max_epochs=1000,
              milestones=(0.5, 0.7)):
    """One training run; returns its Dice curve against training seconds and the times to each Dice milestone."""
    torch.manual_seed(seed)
    side = SIDES[side_name](device)
    x, y = data["train"]
    xv, yv = data["val"]
    order = batch_order(len(x), batch_size, max_epochs, seed)
    clock, curve, step = 0.0, [], 0
    time_to_target = None
    reached = {}
    while step < len(order) and clock < budget:
        chunk = [side.batch(x[idx], y[idx]) for idx in order[step:step + eval_every]]
        _sync(device)
        start = time.perf_counter()
        side.train_steps(chunk)
        _sync(device)
        clock += time.perf_counter() - start
        step += len(chunk)
        dice = pooled_dice(side.predict(xv), yv)
        curve.append((clock, step, dice))
        if time_to_target is None and dice >= target:
            time_to_target = clock
        for m in milestones:
            if m not in reached and dice >= m:
                reached[m] = clock
    # Dice when the clock passed the budget (the last evaluation)
    return {"side": side_name, "seed": seed, "curve": curve, "time_to_target_s": time_to_target,
            "time_to_milestone_s": {str(m): reached.get(m) for m in milestones},
            "dice_at_budget": curve[-1][2] if curve else float("nan"), "steps": step, "train_s": clock,
            "best_dice": max(c[2] for c in curve) if curve else float("nan")}


# ---------------------------------------------------------------------------------------------
# what each network costs


def network_facts(device, batch_size, size=128, steps=5):
    """Parameters, forward FLOPs per image and the median training-step time of each side."""
    from torch.utils.flop_counter import FlopCounterMode

    facts = {}
    for name, cls in SIDES.items():
        torch.manual_seed(0)
        side = cls(device)
        x = torch.rand(batch_size, 1, size, size)
        y = (torch.rand(batch_size, size, size) > 0.9).long()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            side.model.eval()
            side.model(x[:1].to(device))
            side.model.train()
        batches = [side.batch(x, y)]
        side.train_steps(batches)  # warm-up
        times = []
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            side.train_steps(batches)
            _sync(device)
            times.append(time.perf_counter() - start)
        facts[name] = {"parameters": sum(p.numel() for p in side.model.parameters()),
                       "gflops_forward_per_image": counter.get_total_flops() / 1e9,
                       "step_ms": 1000 * statistics.median(times),
                       "images_per_s": batch_size / statistics.median(times)}
    return facts


def profile_sides(device, batch_size, size=128, steps=10, top=14):
    """torch.profiler tables of ``steps`` training steps of each side (self CPU time per operator)."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for name, cls in SIDES.items():
        torch.manual_seed(0)
        side = cls(device)
        x = torch.rand(batch_size, 1, size, size)
        y = (torch.rand(batch_size, size, size) > 0.9).long()
        batches = [side.batch(x, y)]
        side.train_steps(batches)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            side.train_steps(batches * steps)
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        tables[name] = prof.key_averages().table(sort_by=key, row_limit=top)
    return tables


# ---------------------------------------------------------------------------------------------
# report


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def dice_at(curve, seconds):
    """Dice of the last validation at or before ``seconds`` of training (0.0 if none came yet)."""
    done = [d for t, _, d in curve if t <= seconds]
    return done[-1] if done else 0.0


def steps_at(curve, seconds):
    """Training steps made by the last validation at or before ``seconds`` of training."""
    done = [s for t, s, _ in curve if t <= seconds]
    return done[-1] if done else 0


def summarise(runs, target, budget, repeats, checkpoints=()):
    out = {}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side]
        reached = [r["time_to_target_s"] for r in mine]
        milestones = {}
        for m in mine[0]["time_to_milestone_s"] if mine else {}:
            times = [r["time_to_milestone_s"][m] for r in mine]
            milestones[m] = median_or_none(times) if sum(t is not None for t in times) * 2 > len(times) else None
        out[side] = {"time_to_milestone_s": milestones,"time_to_target_s": median_or_none(reached) if sum(v is not None for v in reached) * 2 > len(reached)
                     else None,
                     "reached": sum(v is not None for v in reached), "runs": len(mine),
                     "dice_at_budget": statistics.median(r["dice_at_budget"] for r in mine),
                     "best_dice": statistics.median(r["best_dice"] for r in mine),
                     "steps_in_budget": statistics.median(r["steps"] for r in mine),
                     "dice_at_s": {str(t): statistics.median(dice_at(r["curve"], t) for r in mine) for t in checkpoints},
                     "steps_at_s": {str(t): statistics.median(steps_at(r["curve"], t) for r in mine)
                                    for t in checkpoints}}
    a, b = out["medlab"], out["MONAI"]
    out["ratio_time_to_target"] = (a["time_to_target_s"] / b["time_to_target_s"]
                                   if a["time_to_target_s"] and b["time_to_target_s"] else None)
    out["ratio_dice_at_budget"] = a["dice_at_budget"] / b["dice_at_budget"] if b["dice_at_budget"] else None
    return out


def _fmt(v, spec=".1f", none="not reached"):
    return none if v is None else format(v, spec)


def report(args, summary, facts, runs, tables, elapsed, device) -> str:
    lines = [
        "# medlab vs MONAI: binary lesion segmentation on 128x128 CT phantoms",
        "",
        f"Command: `python benchmarks/vs_monai.py {shlex.join(sys.argv[1:])}`".rstrip(),
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch thread(s), "
        f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ", no GPU"),
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"MONAI {__import__('monai').__version__}; written {time.strftime('%Y-%m-%d %H:%M')}",
        f"- data: {args.n_train} training and {args.n_val} validation phantoms (half with lesions), batch "
        f"{args.batch_size}, validation every {args.eval_every} steps (clock stopped), target pooled Dice "
        f"{args.target}, budget {args.budget:.0f} s of training, {args.repeats} run(s) per side (seeds "
        f"0..{args.repeats - 1}); whole benchmark {elapsed / 60:.1f} min",
    ]
    if args.quick or args.note:
        lines.append(f"- **{args.note or 'quick run'}**")
    lines += [
        "",
        "| | medlab | MONAI | medlab / MONAI |",
        "|---|---:|---:|---:|",
        f"| time to Dice {args.target} (s, median; the target) | {_fmt(summary['medlab']['time_to_target_s'])} | "
        f"{_fmt(summary['MONAI']['time_to_target_s'])} | {_fmt(summary['ratio_time_to_target'], '.2f', '–')} |",
        f"| runs that reached the target | {summary['medlab']['reached']}/{summary['medlab']['runs']} | "
        f"{summary['MONAI']['reached']}/{summary['MONAI']['runs']} | |",
        f"| Dice after {args.budget:.0f} s (median) | {summary['medlab']['dice_at_budget']:.3f} | "
        f"{summary['MONAI']['dice_at_budget']:.3f} | {_fmt(summary['ratio_dice_at_budget'], '.2f', '–')} |",
        f"| best Dice within the budget (median) | {summary['medlab']['best_dice']:.3f} | "
        f"{summary['MONAI']['best_dice']:.3f} | |",
        f"| training steps within the budget (median) | {summary['medlab']['steps_in_budget']:.0f} | "
        f"{summary['MONAI']['steps_in_budget']:.0f} | |",
    ]
    if facts:
        a, b = facts["medlab"], facts["MONAI"]
        lines += [
            f"| parameters | {a['parameters']:,} | {b['parameters']:,} | {a['parameters'] / b['parameters']:.2f} |",
            f"| forward GFLOPs per image | {a['gflops_forward_per_image']:.2f} | {b['gflops_forward_per_image']:.2f} | "
            f"{a['gflops_forward_per_image'] / b['gflops_forward_per_image']:.2f} |",
            f"| training step, batch {args.batch_size} (ms, median) | {a['step_ms']:.0f} | {b['step_ms']:.0f} | "
            f"{a['step_ms'] / b['step_ms']:.2f} |",
        ]
    at = lines.index(f"| best Dice within the budget (median) | {summary['medlab']['best_dice']:.3f} | "
                     f"{summary['MONAI']['best_dice']:.3f} | |")
    for t in reversed(list(summary["medlab"].get("dice_at_s", {}))):
        a, b = summary["medlab"]["dice_at_s"][t], summary["MONAI"]["dice_at_s"][t]
        sa, sb = summary["medlab"]["steps_at_s"][t], summary["MONAI"]["steps_at_s"][t]
        lines.insert(at, f"| Dice at {float(t):g} s of training (median; steps) | {a:.3f} ({sa:.0f}) | {b:.3f} ({sb:.0f}) | "
                         f"{_fmt(a / b if b else None, '.2f', '–')} |")
    for m in summary["medlab"]["time_to_milestone_s"]:
        a = summary["medlab"]["time_to_milestone_s"][m]
        b = summary["MONAI"]["time_to_milestone_s"][m]
        lines.insert(lines.index("| runs that reached the target | " + f"{summary['medlab']['reached']}/{summary['medlab']['runs']} | "
                                 f"{summary['MONAI']['reached']}/{summary['MONAI']['runs']} | |"),
                     f"| time to Dice {m} (s, median) | {_fmt(a)} | {_fmt(b)} | "
                     f"{_fmt(a / b if a and b else None, '.2f', '–')} |")
    lines += ["", "<details><summary>every run: (training s, steps, Dice) at each validation</summary>", ""]
    for r in runs:
        pts = ", ".join(f"({t:.0f}, {s}, {d:.3f})" for t, s, d in r["curve"])
        lines.append(f"- {r['side']} seed {r['seed']}: {pts}")
    lines += ["", "</details>", ""]
    for name, table in (tables or {}).items():
        lines += [f"### Profile of {args.profile_steps} training steps (batch {args.batch_size}): {name}", "",
                  "```", table, "```", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run per side, 60 s budget, 200 training images (overrides the defaults below)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of training per run")
    parser.add_argument("--target", type=float, default=0.85, help="validation Dice to reach")
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=10, help="training steps between validations")
    parser.add_argument("--checkpoints", default="15,30,60,120",
                        help="training seconds at which to report each side's Dice as well (those within --budget): "
                             "the last validation at or before each")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler tables of both sides")
    parser.add_argument("--profile-steps", type=int, default=10, help="training steps profiled per side")
    parser.add_argument("--medlab-base-channels", type=int, default=16,
                        help="width of medlab's U-Net (default 16, its default; 8 matches MONAI's FLOPs per image)")
    parser.add_argument("--no-class-prior", action="store_true",
                        help="medlab's U-Net without class_prior (its output bias at PyTorch's initialisation)")
    parser.add_argument("--note", default="", help="a line added to the report (e.g. 'machine shared')")
    parser.add_argument("--output", type=Path, default=RESULT_MD, help="markdown file ('-' for none); "
                        "the raw runs go to the same name with .json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.budget, args.n_train, args.profile_steps = 1, 60.0, 200, 3
        args.note = args.note or "quick run: one run per side, short budget; not the final figures"
    if args.threads:
        torch.set_num_threads(args.threads)
    MedlabSide.base_channels = args.medlab_base_channels
    from medlab.models import pixel_shares
    from medlab.runtime import choose_device

    device = choose_device(args.device)
    started = time.perf_counter()
    data = make_data(args.n_train, args.n_val)
    print(f"data: {len(data['train'][0])} training, {len(data['val'][0])} validation images; lesion pixels "
          f"{data['train'][1].float().mean():.3%}", flush=True)
    if not args.no_class_prior:
        MedlabSide.class_prior = pixel_shares(data["train"][1], 2)
    facts = network_facts(device, args.batch_size)
    for name, f in facts.items():
        print(f"{name}: {f['parameters']:,} parameters, {f['gflops_forward_per_image']:.2f} GFLOPs forward per image, "
              f"{f['step_ms']:.0f} ms per training step", flush=True)
    runs = []
    for seed in range(args.repeats):
        for side in (("medlab", "MONAI") if seed % 2 == 0 else ("MONAI", "medlab")):   # alternate who goes first
            run = train_run(side, data, device, seed, args.budget, args.target, args.batch_size, args.eval_every)
            runs.append(run)
            print(f"{side} seed {seed}: time to {args.target}: {_fmt(run['time_to_target_s'])} s; Dice after "
                  f"{run['train_s']:.0f} s: {run['dice_at_budget']:.3f} ({run['steps']} steps)", flush=True)
    checkpoints = [float(t) for t in args.checkpoints.split(",") if t.strip() and float(t) <= args.budget]
    summary = summarise(runs, args.target, args.budget, args.repeats, checkpoints)
    tables = profile_sides(device, args.batch_size, steps=args.profile_steps) if args.profile else None
    text = report(args, summary, facts, runs, tables, time.perf_counter() - started, device)
    print(text)
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(
            {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
             "summary": summary, "facts": facts, "runs": runs}, indent=1))
    return summary


if __name__ == "__main__":
    main()
