"""benchmarks/vs_monai.py's per-budget summary: the Dice at each checkpoint is the last validation at or before it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vs_monai():
    spec = importlib.util.spec_from_file_location("vs_monai", ROOT / "benchmarks" / "vs_monai.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(side, seed, curve):
    return {"side": side, "seed": seed, "curve": curve, "time_to_target_s": None,
            "time_to_milestone_s": {"0.5": None}, "dice_at_budget": curve[-1][2], "steps": curve[-1][1],
            "train_s": curve[-1][0], "best_dice": max(d for _, _, d in curve)}


def test_dice_at_takes_the_last_validation_before_the_checkpoint(vs_monai):
    curve = [(4.0, 10, 0.1), (9.0, 20, 0.3), (16.0, 30, 0.5)]
    assert vs_monai.dice_at(curve, 3.0) == 0.0 and vs_monai.steps_at(curve, 3.0) == 0   # nothing validated yet
    assert vs_monai.dice_at(curve, 9.0) == 0.3 and vs_monai.steps_at(curve, 9.0) == 20  # at the checkpoint counts
    assert vs_monai.dice_at(curve, 15.0) == 0.3                                        # 16 s is past 15 s
    assert vs_monai.dice_at(curve, 60.0) == 0.5


def test_summary_has_the_median_dice_and_steps_at_each_checkpoint(vs_monai):
    runs = [_run("medlab", 0, [(5.0, 10, 0.2), (12.0, 20, 0.6)]), _run("medlab", 1, [(6.0, 10, 0.4), (13.0, 20, 0.8)]),
            _run("MONAI", 0, [(2.0, 10, 0.1), (11.0, 60, 0.3)]), _run("MONAI", 1, [(3.0, 10, 0.3), (11.0, 60, 0.5)])]
    summary = vs_monai.summarise(runs, 0.85, 15.0, 2, checkpoints=[10.0, 15.0])
    assert summary["medlab"]["dice_at_s"] == {"10.0": pytest.approx(0.3), "15.0": pytest.approx(0.7)}
    assert summary["MONAI"]["dice_at_s"] == {"10.0": pytest.approx(0.2), "15.0": pytest.approx(0.4)}
    assert summary["MONAI"]["steps_at_s"] == {"10.0": 10, "15.0": 60}
