"""Exercise 09.1 (sliding-window inference), the package reference and lesson 09's cells, against MONAI.

The check must pass the reference and fail the natural mistakes: no division by the summed weights, a last
window that is not moved back to the edge, a step of ``roi * overlap`` instead of ``roi * (1 - overlap)``, a
normaliser that counts windows instead of summing their weights. :func:`medlab.patches.sliding_window_predict`
and the lesson's own cells must give what ``monai.inferers.sliding_window_inference`` gives (constant and
Gaussian blending, uneven last windows, a volume smaller than the window for the package).
"""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
import scipy.ndimage
import torch

import notebook_cells
from medlab import checks, patches
from medlab.checks.sliding import WindowPredictor, sliding_window_predict

NOTEBOOK = "09_volumes_3d"
monai_inferers = pytest.importorskip("monai.inferers")

#: What lesson 09's set-up cell imports and its technique cells use.
NOTEBOOK_NAMESPACE = {"scipy": scipy, "pd": pd}


def _verdict(fn):
    return checks.run_cases(checks.exercises()["09.1"], fn)[1]


def _written(volume, predictor, roi, overlap=0.5, weights=None, normalise=True, move_last=True, step_from=None,
             count_windows=False):
    """A learner's loop with switches for the usual mistakes."""
    spatial = volume.shape[2:]
    weights = torch.ones(roi) if weights is None else weights
    def starts(size, r):
        fraction = overlap if step_from == "overlap" else 1 - overlap
        step = max(1, int(r * fraction)) if r < size else r
        found = list(range(0, size - r + 1, step))
        if move_last and found[-1] != size - r:
            found.append(size - r)
        return found
    out, norm = None, torch.zeros(spatial)
    for corner in itertools.product(*(starts(s, r) for s, r in zip(spatial, roi))):
        box = tuple(slice(c, c + r) for c, r in zip(corner, roi))
        pred = predictor(volume[(slice(None), slice(None), *box)])
        if out is None:
            out = torch.zeros((volume.shape[0], pred.shape[1], *spatial))
        out[(slice(None), slice(None), *box)] += pred * weights
        norm[box] += 1 if count_windows else weights
    return out / norm if normalise else out


def test_reference_and_a_written_loop_pass():
    assert _verdict(sliding_window_predict) is None
    assert _verdict(_written) is None


@pytest.mark.parametrize("wrong, why", [
    (lambda *a: _written(*a, normalise=False), "sums the windows without dividing by the weights"),
    (lambda *a: _written(*a, move_last=False), "the last window is not moved back: voxels left uncovered"),
    (lambda *a: _written(*a, step_from="overlap"), "step roi * overlap instead of roi * (1 - overlap)"),
    (lambda *a: _written(*a, count_windows=True), "normalises by the number of windows, not the weights"),
    (lambda volume, predictor, roi, overlap=0.5, weights=None: predictor(volume), "one window over the whole volume"),
])
def test_check_fails_known_wrong_versions(wrong, why):
    assert _verdict(wrong) is not None, why


SETTINGS = [((1, 2, 21, 30, 17), (8, 12, 9), 0.5, "gaussian"), ((2, 2, 20, 20, 20), (10, 10, 10), 0.0, "constant"),
            ((1, 2, 23, 19, 20), (8, 8, 8), 0.6, "constant"), ((1, 2, 16, 16, 16), (16, 16, 16), 0.5, "gaussian"),
            ((1, 2, 13, 15, 11), (6, 7, 5), 0.25, "gaussian")]


def _monai(volume, predictor, roi, overlap, mode):
    return monai_inferers.sliding_window_inference(volume, roi, 4, predictor, overlap=overlap, mode=mode)


@pytest.mark.parametrize("shape, roi, overlap, mode", SETTINGS)
def test_package_reference_equals_monai(shape, roi, overlap, mode):
    torch.manual_seed(0)
    volume, predictor = torch.randn(shape), WindowPredictor(shape[1], 3, seed=1)
    weights = patches.gaussian_weights(roi) if mode == "gaussian" else None
    ours = patches.sliding_window_predict(volume, predictor, roi, overlap, weights)
    torch.testing.assert_close(ours, _monai(volume, predictor, roi, overlap, mode), atol=1e-5, rtol=1e-5)


def test_package_reference_pads_a_volume_smaller_than_the_window_as_monai_does():
    torch.manual_seed(0)
    volume, predictor = torch.randn(1, 1, 7, 30, 17), WindowPredictor(1, 2, seed=2)
    ours = patches.sliding_window_predict(volume, predictor, (8, 12, 9), 0.25, patches.gaussian_weights((8, 12, 9)))
    torch.testing.assert_close(ours, _monai(volume, predictor, (8, 12, 9), 0.25, "gaussian"), atol=1e-5, rtol=1e-5)


def test_gaussian_weights_equal_monais_importance_map():
    from monai.data.utils import compute_importance_map

    for roi in [(8, 12, 9), (24, 24, 24), (5, 6)]:
        torch.testing.assert_close(patches.gaussian_weights(roi), compute_importance_map(roi, mode="gaussian"))


@pytest.fixture(scope="module")
def cells():
    return notebook_cells.run_tagged(NOTEBOOK, "technique", namespace=NOTEBOOK_NAMESPACE)


def test_the_notebooks_sliding_window_passes_the_check(cells):
    assert _verdict(cells["sliding_window_predict"]) is None


@pytest.mark.parametrize("shape, roi, overlap, mode", [s for s in SETTINGS])
def test_the_notebooks_cells_equal_monai(cells, shape, roi, overlap, mode):
    torch.manual_seed(0)
    volume, predictor = torch.randn(shape), WindowPredictor(shape[1], 3, seed=1)
    weights = cells["gaussian_weights"](roi) if mode == "gaussian" else None
    ours = cells["sliding_window_predict"](volume, predictor, roi, overlap, weights)
    torch.testing.assert_close(ours, _monai(volume, predictor, roi, overlap, mode), atol=1e-5, rtol=1e-5)


def test_the_notebooks_patch_sampler_equals_the_package(cells):
    import numpy as np

    rng = np.random.default_rng(0)
    image, mask = rng.random((2, 20, 22, 18)).astype(np.float32), rng.random((20, 22, 18)) < 0.01
    for foreground in (0.0, 0.5, 1.0):
        for seed in range(5):
            ours = cells["sample_patch"](image, mask, (8, 10, 6), foreground, np.random.default_rng(seed))
            theirs = patches.sample_patch(image, mask, (8, 10, 6), foreground, np.random.default_rng(seed))
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
            assert ours[0].shape == (2, 8, 10, 6) and ours[1].shape == (8, 10, 6)
    assert patches.sample_patch(image, mask, (8, 8, 8), 1.0, np.random.default_rng(1))[1].any()
