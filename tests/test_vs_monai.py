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


def test_class_prior_benchmark_counts_a_collapse_and_summarises(monkeypatch):
    """benchmarks/class_prior.py: a collapse is Dice below 0.05 after passing 0.2; the table has each variant."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("class_prior", ROOT / "benchmarks" / "class_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.collapsed([(0, 0.04), (5, 0.25), (10, 0.01), (15, 0.6)])
    assert not module.collapsed([(0, 0.0), (5, 0.03), (10, 0.3)])       # low before it ever passed 0.2
    assert not module.collapsed([(0, 0.1), (5, 0.21), (10, 0.06)])
    curves = {(0, "default"): [(0, 0.04), (15, 0.3), (30, 0.0)], (0, "prior"): [(0, 0.0), (15, 0.5), (30, 0.7)]}
    args = type("Args", (), {"seeds": [0], "steps": 30, "every": 15})()
    monkeypatch.setattr(sys, "argv", ["class_prior.py"])
    text = module.markdown(curves, args)
    assert "| default | 1 of 1 | 0.300 | 0.000 |" in text and "| prior | 0 of 1 | 0.500 | 0.700 |" in text
