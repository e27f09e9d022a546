"""How long the ``gpu`` profile's training should take on one H100/H200-class GPU: an estimate to size it by.

Run from the repository root (a minute on a laptop CPU; no GPU needed)::

    python benchmarks/gpu_plan.py                      # the gpu profile as it is
    python benchmarks/gpu_plan.py --markdown benchmarks/results/gpu_plan.md

A lesson's budget in the ``gpu`` profile is 90 s on one H100/H200-class GPU, and 10 minutes for the suite. Its
training loops are most of that, and on such a GPU the small networks of the lessons are bound by kernel launches,
not arithmetic: a ResNet-18 training step at 64 px took 7 to 10 ms at batch 32 and at batch 128 alike on one H200
(``medlab bench --grid gpu``, torch 2.11, no ``torch.compile``), and mixed precision was no faster there. So this
script counts the gradient steps each lesson's ``gpu`` knobs ask for, mirroring the lessons' training cells
(:data:`LESSONS`; update it when a lesson's training changes), and prices each step at::

    seconds per step = max(LAUNCH_S, FLOPs of the step / SUSTAINED_FLOPS)

with the FLOPs of one training step counted by ``FlopCounterMode`` on the CPU (forward, loss and backward, 2 per
multiply-add, as :mod:`medlab.compute` counts them). Evaluation passes are priced the same way with a third of the
launch floor and a third of the FLOPs. What it leaves out, and what the budget leaves room for: generating the
phantoms, the logistic-regression baselines on the CPU, Grad-CAM and attack loops written in the lessons, plotting,
and the kernel's start (lesson 00, which trains nothing, took 31 s on the H200).

This is a model, not a measurement. ``benchmarks/gpu_check.py`` measures the real times on a GPU; where the two
disagree, the measurement wins and the constants here should be refitted to it.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medlab import models, profiles  # noqa: E402

#: One launch-bound training step of a small network on an H100/H200-class GPU, seconds: the middle of the
#: 7-10 ms measured for ResNet-18 at batch 32 and 128 on one H200 (medlab bench --grid gpu, no compile).
LAUNCH_S = 8.5e-3
#: FLOP/s a lesson's training sustains there when it is not launch-bound, with bfloat16 autocast (``amp="auto"``):
#: the best training row of the same bench run, ResNet-18 at 224 px, batch 256, reached 12,381 images/s, about
#: 68 TFLOP/s at 5.5 GFLOPs per image; the lessons' smaller batches and images reach less.
SUSTAINED_FLOPS = 50e12
#: Per-lesson budget of the gpu profile (seconds), and the share of it this plan lets training take: the rest is
#: for the kernel's start, phantom generation, baselines, figures and the lesson's own loops.
BUDGET_S, TRAINING_SHARE = 90.0, 0.55


@dataclass(frozen=True)
class Loop:
    """``steps`` gradient steps (or attack steps) of ``model`` on batches of ``batch``, plus ``eval_images``
    images evaluated (forward only) along the way; ``count`` such loops."""

    what: str
    model: tuple  # a key for flops_per_image: (kind, *arguments)
    steps: int
    batch: int
    eval_images: int = 0
    count: int = 1


def _steps(epochs, n, batch, samples_per_epoch=0):
    """Gradient steps of ``epochs`` passes over ``max(n, samples_per_epoch)`` samples in batches of ``batch``."""
    return epochs * math.ceil(max(n, samples_per_epoch) / batch)


def lesson_01(P, K):
    s, bs = sorted(K["sizes"]), P.batch_size
    net = ("classifier", P.classifier, 1, 2, P.image_size, K["width"])
    grid = [Loop(f"5 arms at {n} images x {P.seeds} seeds", net, _steps(K["epochs"], n, bs, K["samples_per_epoch"]),
                 bs, P.n_test, count=5 * P.seeds) for n in s]
    return [Loop("pretraining", ("classifier", P.classifier, 1, 3, P.image_size, K["width"]), K["pretrain_steps"], bs,
                 P.n_val),
            Loop("autoencoder", ("autoencoder", P.image_size), K["ae_steps"], bs),
            Loop("plain loop and fit, smallest size", net, _steps(K["epochs"], s[0], bs, K["samples_per_epoch"]), bs,
                 P.n_test, count=2), *grid]


def _segmentation(P, K, classes, count):
    return [Loop("U-Net", ("unet", 1, classes, K["base_channels"], K["depth"], P.image_size, 2),
                 _steps(K["epochs"], K["n_train"], K["batch_size"]), K["batch_size"], K["epochs"] * K["n_val"],
                 count=count)]


def lesson_03(P, K):
    net = ("classifier", P.classifier, 1, 3, P.image_size, K["width"])
    return [Loop("main model", net, _steps(K["epochs"], P.n_train, P.batch_size), P.batch_size, K["epochs"] * P.n_val),
            Loop("shortcut models", net, _steps(K["shortcut_epochs"], P.n_train, P.batch_size), P.batch_size,
                 K["shortcut_epochs"] * P.n_val, count=2)]


def lesson_05(P, K):
    net = ("classifier", P.classifier, 1, 4, P.image_size, 16)
    return [Loop("CORAL and cross-entropy frame models", net, _steps(P.epochs, P.n_train, P.batch_size), P.batch_size,
                 P.epochs * P.n_val, count=2)]


def lesson_06(P, K):
    seg_epochs = max(1, round(K["seg_epochs_fraction"] * P.epochs))
    loops = [Loop("stage-1 U-Net", ("unet", 1, 2, K["seg_base"], K["seg_depth"], P.image_size, 2),
                  _steps(seg_epochs, K["seg_train"], P.batch_size), P.batch_size, seg_epochs * P.n_val)]
    for what, channels, side in (("whole image", 1, P.image_size), ("crop", 1, K["crop_size"]),
                                 ("crop + mask", 2, K["crop_size"])):
        loops.append(Loop(f"classifier, {what}", ("classifier", P.classifier, channels, 2, side, 16),
                          _steps(P.epochs, P.n_train, P.batch_size), P.batch_size, P.epochs * P.n_val))
    return loops


def lesson_07(P, K):
    net = ("classifier", P.classifier, 1, 2, P.image_size, 16)
    attacked = K["n_attack"] or P.n_test
    budgets = sum(1 for e in K["epsilons"] if e > 0)
    return [Loop("classifier", net, _steps(P.epochs, P.n_train, P.batch_size), P.batch_size, P.epochs * P.n_val),
            Loop(f"PGD, {budgets} budgets x {K['pgd_steps']} steps", net,
                 budgets * K["pgd_steps"] * math.ceil(attacked / K["attack_batch"]), K["attack_batch"])]


def lesson_09(P, K):
    steps = K["epochs"] * (K["patches"] // K["batch_size"])
    shape = _volume_shape(K["cls_voxel_mm"])
    return [Loop("3D U-Net", ("unet", 3, 2, K["base_channels"], K["depth"], K["patch"], 3), steps, K["batch_size"],
                 K["epochs"] * K["val_patches"]),
            Loop("2D U-Nets (slice-wise, tri-planar)", ("unet", 3, 2, K["base_channels"], K["depth"], K["patch"], 2),
                 steps, K["slice_batch"], K["epochs"] * K["val_patches"], count=2),
            Loop("3D CNN classifier", ("cnn3d", 1, 2, K["cls_width"], shape),
                 _steps(K["cls_epochs"], K["cls_n_train"], K["cls_batch_size"]), K["cls_batch_size"],
                 K["cls_epochs"] * K["cls_n_val"])]


def lesson_10(P, K):
    return [Loop("grading CNN", ("classifier", P.classifier, 3, 5, P.image_size, K["width"]),
                 _steps(K["epochs"], K["n_train"], K["batch_size"]), K["batch_size"], K["epochs"] * K["n_val"])]


def lesson_11(P, K):
    return [Loop("image CNN", ("classifier", P.classifier, 1, 2, P.image_size, K["width"]),
                 _steps(K["epochs"], K["n_train"], P.batch_size), P.batch_size, K["epochs"] * K["n_val"]),
            Loop("joint head", ("autoencoder", 8), _steps(K["head_epochs"], K["n_train"], P.batch_size), P.batch_size)]


#: Each lesson's training loops in a profile, from its knobs (lessons 00 and 08 train nothing of their own size).
LESSONS = {
    "01_transfer_learning": lesson_01,
    "02_segmentation": lambda P, K: _segmentation(P, K, 2, 3),
    "03_covid_cxr_classification": lesson_03,
    "04_covid_ct_lesion_segmentation": lambda P, K: _segmentation(P, K, 3, 1),
    "05_lung_ultrasound_severity": lesson_05,
    "06_cascade_segment_then_classify": lesson_06,
    "07_trust_and_robustness": lesson_07,
    "09_volumes_3d": lesson_09,
    "10_retinal_screening": lesson_10,
    "11_images_and_clinical_data": lesson_11,
}


def _volume_shape(voxel_mm):
    """The brain phantom's volume shape at ``voxel_mm`` (about 184 x 216 x 184 mm)."""
    return tuple(int(round(extent / voxel_mm)) for extent in (184, 216, 184))


def _network(key):
    kind, *args = key
    if kind == "classifier":
        arch, channels, classes, side, width = args
        net = models.build_classifier(models.classifier_name(arch), num_classes=classes, in_channels=channels,
                                      width=width)
        return net, (channels, side, side)
    if kind == "unet":
        channels, classes, base, depth, side, dims = args
        return (models.UNet(in_channels=channels, num_classes=classes, base_channels=base, depth=depth,
                            spatial_dims=dims), (channels, *(side,) * dims))
    if kind == "cnn3d":
        channels, classes, width, shape = args
        return models.SmallCNN(in_channels=channels, num_classes=classes, width=width, depth=3, spatial_dims=3), \
            (channels, *shape)
    return None, None  # a network too small to matter: launch-bound


_FLOPS: dict = {}


def flops_per_image(key) -> float:
    """FLOPs of one training step per image (forward, a mean loss and backward), counted on the CPU at batch 2."""
    if key not in _FLOPS:
        net, shape = _network(key)
        if net is None:
            _FLOPS[key] = 0.0
        else:
            from torch.utils.flop_counter import FlopCounterMode

            x = torch.randn(2, *shape)
            with FlopCounterMode(display=False) as counter:
                net(x).float().mean().backward()
            _FLOPS[key] = counter.get_total_flops() / 2
    return _FLOPS[key]


def price(loop: Loop) -> dict:
    """Estimated seconds of ``loop`` (all ``count`` of them) on the GPU, and whether launches or arithmetic bound it."""
    step_flops = flops_per_image(loop.model) * loop.batch
    per_step = max(LAUNCH_S, step_flops / SUSTAINED_FLOPS)
    eval_batches = math.ceil(loop.eval_images / 256)
    eval_s = eval_batches * max(LAUNCH_S / 3, 256 * flops_per_image(loop.model) / 3 / SUSTAINED_FLOPS)
    return {"steps": loop.steps * loop.count, "seconds": loop.count * (loop.steps * per_step + eval_s),
            "bound": "launches" if per_step == LAUNCH_S else "arithmetic",
            "tflop": loop.count * (loop.steps * step_flops + loop.eval_images * flops_per_image(loop.model) / 3) / 1e12}


def plan(profile: str = "gpu") -> list[dict]:
    """One row per lesson: its loops priced, the total and whether it fits :data:`TRAINING_SHARE` of the budget."""
    P = profiles.resolve(profile)
    rows = []
    for lesson, loops_of in LESSONS.items():
        loops = [(loop, price(loop)) for loop in loops_of(P, P.knobs(lesson))]
        total = sum(p["seconds"] for _, p in loops)
        rows.append({"lesson": lesson, "loops": loops, "seconds": total,
                     "steps": sum(p["steps"] for _, p in loops), "fits": total <= TRAINING_SHARE * BUDGET_S})
    return rows


def markdown(rows: list[dict], profile: str) -> str:
    """The plan as Markdown: one table of lessons, then each lesson's loops."""
    limit = TRAINING_SHARE * BUDGET_S
    lines = [f"# Training time of the `{profile}` profile on one H100/H200-class GPU: an estimate", "",
             f"Written by `python benchmarks/gpu_plan.py` (torch {torch.__version__.split('+')[0]}). A model, not a "
             f"measurement: {LAUNCH_S * 1e3:.1f} ms per launch-bound step, {SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s "
             f"otherwise (see the script's docstring for where both come from). Training may take {limit:.0f} s of "
             f"a lesson's {BUDGET_S:.0f} s; the rest is for everything else a lesson does. Lessons 00 and 08 "
             "train nothing of the profile's size and are not listed. `benchmarks/gpu_check.py` measures the "
             "real times on a GPU.", "",
             "| lesson | gradient steps | TFLOP | estimated training (s) | within the plan |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        tflop = sum(p["tflop"] for _, p in r["loops"])
        lines.append(f"| {r['lesson']} | {r['steps']:,} | {tflop:,.1f} | {r['seconds']:.0f} | "
                     f"{'yes' if r['fits'] else '**no**'} |")
    total = sum(r["seconds"] for r in rows)
    lines += [f"| all of them | {sum(r['steps'] for r in rows):,} | | {total:.0f} | |", ""]
    for r in rows:
        lines += [f"## {r['lesson']}", "", "| loop | steps | batch | bound by | seconds |", "|---|---:|---:|---|---:|"]
        for loop, p in r["loops"]:
            lines.append(f"| {loop.what}{f' (x{loop.count})' if loop.count > 1 else ''} | {p['steps']:,} | "
                         f"{loop.batch} | {p['bound']} | {p['seconds']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu", help="profile to price (default: gpu)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = plan(args.profile)
    text = markdown(rows, args.profile)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
