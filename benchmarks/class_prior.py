"""A U-Net's first steps with and without its output bias at the class prior, counted in steps.

Run from the repository root (about two minutes per seed and variant on one CPU thread)::

    python benchmarks/class_prior.py                          # seeds 0-2, 120 steps, Dice every 5 steps
    python benchmarks/class_prior.py --seeds 0 1 2 3 4 5 --markdown -

The task, data and recipe are those of ``benchmarks/vs_monai.py`` and ``benchmarks/norm_momentum.py``
(``medlab.models.UNet(1, 2)``, ``DiceCELoss``, AdamW 1e-3, batch 16, 400 training and 100 validation CT phantoms at
128 px, 2.3 % of the pixels lesion). Two variants per seed, with the same initial weights and batches: PyTorch's
initialisation of the output layer ("default"), and its bias started at the log of the training pixels' class
shares (``UNet(..., class_prior=pixel_shares(train_masks, 2))``: "prior"). Every ``--every`` steps the pooled
validation Dice is measured in evaluation mode. A run *collapses* when its Dice falls below 0.05 after it has
passed 0.2. Counted in steps, so a busy machine does not change the figures.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import vs_monai  # noqa: E402
from norm_momentum import dice_now  # noqa: E402
from medlab.losses import DiceCELoss  # noqa: E402
from medlab.models import UNet, pixel_shares  # noqa: E402

RESULT_MD = ROOT / "benchmarks" / "results" / "class_prior.md"
VARIANTS = ("default", "prior")


def run(data, seed: int, prior, steps: int, every: int) -> list[tuple[int, float]]:
    """``(step, pooled validation Dice in evaluation mode)`` every ``every`` steps of one training run."""
    torch.manual_seed(seed)
    model = UNet(1, 2, class_prior=prior)    # the prior sets the output bias only: same weights, same draws
    loss_fn, (x, y), (xv, yv) = DiceCELoss(), data["train"], data["val"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    order = vs_monai.batch_order(len(x), 16, 1 + steps * 16 // len(x), seed)
    curve = []
    for step, index in enumerate(order[:steps + 1]):
        if step % every == 0:
            curve.append((step, dice_now(model, xv, yv, False)))
            print(f"seed {seed} {'prior' if prior else 'default'}: step {step:3d}, Dice {curve[-1][1]:.3f}", flush=True)
        if step == steps:
            break
        optimizer.zero_grad()
        loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()
    return curve


def collapsed(curve) -> bool:
    """Whether the Dice fell below 0.05 after having passed 0.2."""
    passed = False
    for _, dice in curve:
        passed = passed or dice > 0.2
        if passed and dice < 0.05:
            return True
    return False


def markdown(curves: dict, args) -> str:
    """A summary (collapses, median Dice at a few steps) and the curves."""
    seeds = args.seeds
    marks = [s for s in (15, 30, 60, 90, 120) if s <= args.steps and s % args.every == 0]
    lines = ["# A U-Net's first steps with its output bias at the class prior", "",
             f"`python benchmarks/class_prior.py {' '.join(sys.argv[1:])}`; {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} thread(s). Pooled validation Dice "
             "(evaluation mode) of medlab's U-Net on the task of `benchmarks/vs_monai.py`; see the script's "
             "docstring.", "",
             "| variant | collapsed runs | " + " | ".join(f"median Dice, step {s}" for s in marks) + " |",
             "|---|---:|" + "---:|" * len(marks)]
    for variant in VARIANTS:
        runs = [dict(curves[s, variant]) for s in seeds]
        count = sum(collapsed(curves[s, variant]) for s in seeds)
        lines.append(f"| {variant} | {count} of {len(seeds)} | "
                     + " | ".join(f"{statistics.median(r[m] for r in runs):.3f}" for m in marks) + " |")
    head = ["step"] + [f"seed {s}, {v}" for s in seeds for v in VARIANTS]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, (step, _) in enumerate(curves[seeds[0], VARIANTS[0]]):
        lines.append("| " + " | ".join([str(step)] + [f"{curves[s, v][i][1]:.3f}" for s in seeds for v in VARIANTS])
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", default=str(RESULT_MD), help="file to write ('-': print only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = vs_monai.make_data(400, 100, 128, seed=0)
    prior = pixel_shares(data["train"][1], 2)
    curves = {(s, v): run(data, s, prior if v == "prior" else None, args.steps, args.every)
              for s in args.seeds for v in VARIANTS}
    text = markdown(curves, args)
    print(text)
    if args.markdown != "-":
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
