"""Why medlab's U-Net seemed stuck for its first steps: batch norm's running statistics, measured in steps.

Run from the repository root (about two minutes per seed and momentum on one CPU thread)::

    python benchmarks/norm_momentum.py                       # seeds 0-2, momentum 0.1 and 0.3, 50 steps
    python benchmarks/norm_momentum.py --seeds 0 --steps 30 --markdown -

The task and data are those of ``benchmarks/vs_monai.py`` (400 training and 100 validation CT phantoms at
128 px, lesion against background, batch 16), and so is medlab's recipe (``medlab.models.UNet(1, 2)``,
``DiceCELoss``, AdamW 1e-3). Every ``--every`` steps the pooled validation Dice is measured twice: in evaluation
mode (batch norm uses its running statistics: what any evaluation of the model gets) and in training mode
(batch norm uses each validation batch's own statistics: what the weights have learnt, whatever the running
statistics say). Training itself does not depend on the momentum (training mode always normalises with the
batch's statistics), so the training-mode column is the same for every momentum of a seed, and the gap between the
two columns is the running statistics' lag. Counted in steps, not seconds, so a busy machine does not change it.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import vs_monai  # noqa: E402
from medlab.losses import DiceCELoss  # noqa: E402
from medlab.models import UNet  # noqa: E402

RESULT_MD = ROOT / "benchmarks" / "results" / "norm_momentum.md"


def dice_now(model, x, y, training_mode: bool) -> float:
    """Pooled validation Dice of ``model`` with batch norm in training (batch statistics) or evaluation mode."""
    model.train(training_mode)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 50]).argmax(1) for i in range(0, len(x), 50)])
    model.train()
    return vs_monai.pooled_dice(pred, y)


def run(data, seed: int, momentum: float, steps: int, every: int) -> list[tuple[int, float, float]]:
    """``(step, Dice in evaluation mode, Dice in training mode)`` every ``every`` steps of one training run."""
    torch.manual_seed(seed)
    model = UNet(1, 2)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    loss_fn, (x, y), (xv, yv) = DiceCELoss(), data["train"], data["val"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    order = vs_monai.batch_order(len(x), 16, 1 + steps * 16 // len(x), seed)
    curve = []
    for step, index in enumerate(order[:steps + 1]):
        if step % every == 0:
            curve.append((step, dice_now(model, xv, yv, False), dice_now(model, xv, yv, True)))
            print(f"seed {seed} momentum {momentum}: step {step:3d}, Dice {curve[-1][1]:.3f} (evaluation mode), "
                  f"{curve[-1][2]:.3f} (training mode)", flush=True)
        if step == steps:
            break
        optimizer.zero_grad()
        loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()
    return curve


def markdown(curves: dict, args) -> str:
    """One table: a row per step, a column pair per seed and momentum."""
    momenta, seeds = args.momentum, args.seeds
    head = ["step"] + [f"seed {s}, momentum {m}" for s in seeds for m in momenta] + [f"seed {s}, training mode"
                                                                                     for s in seeds]
    lines = ["# Batch norm's running statistics and a U-Net's first steps", "",
             f"`python benchmarks/norm_momentum.py {' '.join(sys.argv[1:])}`; {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} thread(s). Pooled validation Dice "
             "of medlab's U-Net on the task of `benchmarks/vs_monai.py`, in evaluation mode for each batch-norm "
             "momentum, and in training mode (the same for every momentum: see the script's docstring).", "",
             "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, (step, _, _) in enumerate(curves[seeds[0], momenta[0]]):
        cells = [str(step)] + [f"{curves[s, m][i][1]:.3f}" for s in seeds for m in momenta] + \
                [f"{curves[s, momenta[0]][i][2]:.3f}" for s in seeds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--momentum", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", default=str(RESULT_MD), help="file to write ('-': print only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = vs_monai.make_data(400, 100, 128, seed=0)
    curves = {(s, m): run(data, s, m, args.steps, args.every) for s in args.seeds for m in args.momentum}
    text = markdown(curves, args)
    print(text)
    if args.markdown != "-":
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
