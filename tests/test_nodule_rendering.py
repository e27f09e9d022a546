"""The ultrasound nodule phantom rendered with torch: the NumPy renderer's images, on any device.

The torch renderer draws the same random numbers as the NumPy renderer it replaced, in the same order, so on the
CPU its images are those images up to float rounding. The fingerprints below were computed with the NumPy
renderer: labels, image means, nodule pixel counts and TI-RADS-like levels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab.data import phantoms as P
from medlab.errors import ParameterError
from rendering_support import assert_same_pixels, assert_tensors_equal_arrays, force_device_noise, on_threads

BEFORE = {
    "thyroid": (dict(n=8, size=64, seed=0),
                [0, 0, 1, 0, 1, 0, 1, 1],
                [0.2893, 0.3353, 0.2634, 0.2609, 0.2946, 0.3679, 0.3467, 0.3262],
                [196, 211, 142, 189, 202, 116, 303, 220],
                [4, 5, 5, 4, 5, 3, 5, 5]),
    "breast_B": (dict(n=8, size=48, seed=3, organ="breast", domain="B", count=2.0),
                 [0, 1, 0, 1, 0, 1, 1, 0],
                 [0.4052, 0.3816, 0.4011, 0.3737, 0.3982, 0.4408, 0.3925, 0.3989],
                 [123, 112, 120, 150, 126, 109, 117, 133],
                 [2, 5, 4, 5, 2, 4, 5, 5]),
    "C_knobs": (dict(n=6, size=40, seed=1, domain="C", lesion_contrast=0.5, lesion_size=1.5, overlap=0.8),
                [0, 0, 0, 1, 1, 1],
                [0.3585, 0.3607, 0.4270, 0.3058, 0.2811, 0.3677],
                [117, 110, 165, 215, 135, 209],
                [4, 4, 4, 3, 5, 4]),
}


@pytest.mark.parametrize("case", BEFORE)
def test_renders_the_numpy_renderers_nodules(case):
    kwargs, labels, means, pixels, levels = BEFORE[case]
    batch = P.us_nodule(**kwargs)
    assert batch.labels.tolist() == labels and batch.attrs["severity"].tolist() == levels
    np.testing.assert_allclose(batch.images.mean(axis=(1, 2, 3)), means, atol=1e-4)
    np.testing.assert_array_equal(batch.masks["nodule"].sum(axis=(1, 2)), pixels)
    assert batch.images.dtype == np.float32 and batch.masks["nodule"].dtype == np.int64


def test_chunks_read_the_random_stream_as_the_numpy_renderer_did():
    """The last 8 of 72 nodules at 64 px (seed 9), from the NumPy renderer: the second rendering chunk."""
    batch = P.us_nodule(72, size=64, seed=9)
    assert batch.labels[64:].tolist() == [0, 1, 1, 1, 0, 0, 0, 1]
    np.testing.assert_allclose(batch.images[64:].mean(axis=(1, 2, 3)),
                               [0.3405, 0.3680, 0.3016, 0.3323, 0.3926, 0.3443, 0.3098, 0.3227], atol=1e-4)
    np.testing.assert_array_equal(batch.masks["nodule"][64:].sum(axis=(1, 2)), [183, 112, 251, 211, 172, 242, 130, 249])


def test_threads_do_not_change_the_images():
    """One torch thread or two (each operation shared between them): the same bytes."""
    def make():
        return [P.us_nodule(300, size=32, seed=2), P.us_nodule(40, size=48, seed=2, organ="breast", domain="C")]
    one, two = on_threads(1, make), on_threads(2, make)
    for a, b in zip(one, two):
        assert_same_pixels(a, b)


def test_as_tensors_returns_the_same_phantoms_as_tensors():
    arrays = P.us_nodule(12, size=32, seed=5, organ="breast")
    tensors = P.us_nodule(12, size=32, seed=5, organ="breast", device="cpu", as_tensors=True)
    assert tensors.images.shape == (12, 1, 32, 32)
    assert_tensors_equal_arrays(tensors, arrays)


def test_device_noise_stream_keeps_parameters_and_is_reproducible(monkeypatch):
    """On a GPU the pixel noise comes from a torch generator: exercised here on the CPU by forcing that branch."""
    reference = P.us_nodule(16, size=32, seed=7)
    force_device_noise(monkeypatch)
    first, second = P.us_nodule(16, size=32, seed=7), P.us_nodule(16, size=32, seed=7)
    np.testing.assert_array_equal(first.images, second.images)          # same seed and device, same images
    np.testing.assert_array_equal(first.labels, reference.labels)        # per-image draws do not depend on it
    np.testing.assert_array_equal(first.masks["nodule"], reference.masks["nodule"])  # the mask has no noise
    for k in reference.attrs:
        np.testing.assert_array_equal(first.attrs[k], reference.attrs[k])
    assert not np.array_equal(first.images, reference.images)           # the pixel noise does
    assert not np.array_equal(first.images, P.us_nodule(16, size=32, seed=8).images)


def test_device_argument_is_checked():
    with pytest.raises(ParameterError, match="device"):
        P.us_nodule(4, size=32, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            P.us_nodule(4, size=32, device="cuda")


def test_empty_batch():
    batch = P.us_nodule(0, size=32)
    assert batch.images.shape == (0, 1, 32, 32) and batch.masks["nodule"].shape == (0, 32, 32)


def test_stream_draws_nodules_with_their_masks():
    from medlab.data import PhantomStream

    stream = PhantomStream("us_nodule", n=6, batch_size=4, size=32, seed=1, device="cpu", target="mask", organ="breast")
    (images, masks), (rest, _) = list(stream)
    assert images.shape == (4, 1, 32, 32) and masks.shape == (4, 32, 32) and masks.dtype == torch.int64
    assert len(rest) == 2 and stream.class_names == ["background", "nodule"]
