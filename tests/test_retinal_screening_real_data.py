"""Lesson 10 on real data: the `DATA = "medmnist:retinamnist"` path runs on a small file in RetinaMNIST's exact layout.

The file is made here (random photographs, grades 0-4), with the keys, dtypes and shapes of the real
``retinamnist.npz`` (28x28 RGB uint8 images, labels ``(N, 1)``), so the test needs no download.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlab import runner

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _fake_retinamnist(folder, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 80), ("val", 50), ("test", 70)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).astype(np.uint8)[:, None]
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "retinamnist.npz", **arrays)


@pytest.mark.notebooks
def test_lesson_10_runs_on_retinamnist_files(tmp_path, monkeypatch):
    _fake_retinamnist(tmp_path / "data" / "medmnist")
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    results = runner.run_notebooks(["10"], profile="smoke", params={"DATA": "medmnist:retinamnist", "DEVICE": "cpu"},
                                   out=out, folder=NOTEBOOKS, timeout=600)
    assert results[0].status == "passed", results[0].error
    recorded = json.loads((out / "10_retinal_screening" / "metrics.json").read_text())
    assert recorded["params"]["DATA"] == "medmnist:retinamnist"
    assert 0.0 <= recorded["metrics"]["auroc_cnn"] <= 1.0
    assert "sensitivity_least_evidence" not in recorded["metrics"]   # no recorded findings on real data
