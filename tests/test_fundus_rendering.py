"""Fundus phantoms rendered with torch: the NumPy renderer's images, on any device.

The torch renderer draws the same random numbers as the NumPy renderer it replaced, in the same order, so on the
CPU its images are those images up to float rounding (a pixel at a threshold may flip). The fingerprints below
were computed with the NumPy renderer: labels, image means, pixels of the vessel, disc and findings labels, and
the recorded peak contrast of the referable findings, per image.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from medlab.data.phantoms import _torch, fundus
from medlab.errors import ParameterError
from rendering_support import assert_same_pixels, assert_tensors_equal_arrays, force_device_noise, on_threads

F = importlib.import_module("medlab.data.phantoms.fundus")  # the module (the package exports the function)

BEFORE = {
    "default": (dict(n=8, size=64, seed=0), slice(None),
                [2, 4, 3, 1, 0, 0, 1, 2],
                [0.1618, 0.2283, 0.2939, 0.2635, 0.2708, 0.2839, 0.1895, 0.3244],
                [275, 280, 225, 303, 263, 308, 305, 323],
                [30, 16, 30, 42, 36, 48, 68, 29],
                [105, 40, 353, 16, 0, 0, 16, 53],
                [0.95, 0.4912, 0.95, 0.0, 0.0, 0.0, 0.0, 0.9471]),
    "B_knobs": (dict(n=8, size=48, seed=3, domain="B", lesion_contrast=0.6, lesion_size=1.5, variation=1.5),
                slice(None),
                [1, 2, 2, 1, 4, 0, 3, 0],
                [0.329, 0.071, 0.1016, 0.2244, 0.1896, 0.1563, 0.133, 0.3316],
                [139, 131, 140, 115, 122, 174, 63, 165],
                [28, 29, 23, 34, 19, 21, 0, 19],
                [8, 225, 55, 9, 160, 0, 792, 0],
                [0.0, 0.6851, 0.1079, 0.0, 0.5139, 0.0, 0.7788, 0.0]),
    "C_still": (dict(n=8, size=40, seed=1, domain="C", variation=0.0, noise=0.05), slice(None),
                [0, 0, 1, 4, 2, 1, 3, 2],
                [0.3155, 0.3255, 0.3102, 0.2918, 0.331, 0.3067, 0.285, 0.2835],
                [155, 143, 128, 111, 120, 133, 87, 143],
                [21, 15, 15, 5, 14, 17, 16, 20],
                [0, 0, 3, 251, 23, 5, 257, 26],
                [0.0, 0.0, 0.0, 0.95, 0.5555, 0.0, 0.95, 0.9134]),
    # the second rendering chunk (16 images at 64 px), whose noise comes after the first chunk's in the stream
    "second_chunk": (dict(n=24, size=64, seed=9), slice(16, 24),
                     [2, 2, 0, 3, 1, 4, 0, 1],
                     [0.1736, 0.1577, 0.2754, 0.2192, 0.2647, 0.1982, 0.273, 0.2454],
                     [220, 316, 329, 285, 318, 163, 303, 326],
                     [33, 31, 59, 30, 37, 15, 38, 32],
                     [102, 29, 0, 470, 16, 644, 0, 6],
                     [0.369, 0.7387, 0.0, 0.95, 0.0, 0.95, 0.0, 0.0]),
}


@pytest.mark.parametrize("case", BEFORE)
def test_fundus_renders_the_numpy_renderers_images(case):
    kwargs, rows, labels, means, vessel, disc, findings, signal = BEFORE[case]
    batch = fundus(**kwargs)
    mask = batch.masks["findings"][rows]
    assert batch.labels[rows].tolist() == labels
    np.testing.assert_allclose(batch.images[rows].mean(axis=(1, 2, 3)), means, atol=1e-4)
    np.testing.assert_allclose((mask == 1).sum(axis=(1, 2)), vessel, atol=2)  # a pixel at a threshold may flip
    np.testing.assert_allclose((mask == 2).sum(axis=(1, 2)), disc, atol=2)
    np.testing.assert_allclose((mask >= 3).sum(axis=(1, 2)), findings, atol=2)
    np.testing.assert_allclose(batch.attrs["referable_signal"][rows], signal, atol=1e-4)
    assert batch.images.dtype == np.float32 and mask.dtype == np.int64


def test_threads_do_not_change_the_images():
    """One torch thread or two (each operation shared between them): the same bytes."""
    one, two = (on_threads(k, lambda: fundus(40, size=48, seed=2, domain="B")) for k in (1, 2))
    assert_same_pixels(one, two)


def test_as_tensors_returns_the_same_phantoms_as_tensors():
    arrays = fundus(12, size=32, seed=5)
    tensors = fundus(12, size=32, seed=5, device="cpu", as_tensors=True)
    assert tensors.images.shape == (12, 3, 32, 32)
    assert_tensors_equal_arrays(tensors, arrays)


def test_device_noise_stream_keeps_parameters_and_is_reproducible(monkeypatch):
    """On a GPU the pixel noise comes from a torch generator: exercised here on the CPU by forcing that branch."""
    reference = fundus(16, size=32, seed=7)
    force_device_noise(monkeypatch)
    first, second = fundus(16, size=32, seed=7), fundus(16, size=32, seed=7)
    np.testing.assert_array_equal(first.images, second.images)          # same seed and device, same images
    np.testing.assert_array_equal(first.labels, reference.labels)        # per-image draws do not depend on it
    for k in reference.attrs:
        if k != "lesion_area":  # the findings' footprints move with the deformation field
            np.testing.assert_array_equal(first.attrs[k], reference.attrs[k])
    assert not np.array_equal(first.images, reference.images)           # the pixel noise does
    other = fundus(16, size=32, seed=8)
    assert not np.array_equal(first.images, other.images)


def test_device_argument_is_checked():
    with pytest.raises(ParameterError, match="device"):
        fundus(4, size=32, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            fundus(4, size=32, device="cuda")


# ---------------------------------------------------------------------------------------------------------------
# the primitives against the NumPy helpers they replace


def _numpy_blur_per_image(img, sigmas):
    """The NumPy renderer's per-image blur: kernels reaching ceil(3 max sigma), edges replicated."""
    m, c, h, w = img.shape
    radius = int(np.ceil(3 * max(float(np.max(sigmas)), 1e-3)))
    if np.max(sigmas) < 0.05:
        return img
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t[None] / np.maximum(sigmas, 1e-3)[:, None]) ** 2).astype(np.float32)
    k /= k.sum(axis=1, keepdims=True)
    x = np.pad(img.astype(np.float64), ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = sum(k[:, i, None, None, None] * x[:, :, i:i + h] for i in range(2 * radius + 1))
    return sum(k[:, i, None, None, None] * rows[:, :, :, i:i + w] for i in range(2 * radius + 1))


def _numpy_lines(py, px, weight, sigma_px, size):
    """The NumPy renderer's lines: bilinear splat (bincount), blur per image, times sigma."""
    m = py.shape[0]
    fy, fx = (py + 1.0) * (size / 2.0) - 0.5, (px + 1.0) * (size / 2.0) - 0.5
    y0, x0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = fy - y0, fx - x0
    image = np.repeat(np.arange(m), py.shape[1]).reshape(m, -1) * (size * size)
    total = np.zeros(m * size * size)
    for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        total += np.bincount((image + yy * size + xx)[ok], (weight * w)[ok], minlength=m * size * size)
    sigma = np.maximum(np.broadcast_to(np.asarray(sigma_px, np.float64), (m,)), 0.3)
    dens = _numpy_blur_per_image(total.reshape(m, 1, size, size).astype(np.float32), sigma)
    return dens[:, 0] * sigma[:, None, None]


@pytest.mark.parametrize("sigmas", [[0.0, 0.01, 0.02], [0.0, 0.3, 0.8], [0.5, 1.0, 2.5]])
def test_blur_per_image_equals_the_numpy_blur(sigmas):
    img = np.random.default_rng(1).uniform(0, 1, (3, 3, 21, 21)).astype(np.float32)
    got = F._blur_per_image(torch.from_numpy(img.copy()), np.asarray(sigmas)).numpy()
    np.testing.assert_allclose(got, _numpy_blur_per_image(img, np.asarray(sigmas)), atol=1e-6)


def test_lines_equal_the_numpy_splat_and_blur():
    """Several parts (each with its own blur reach) in groups, points on and off the edges of the image."""
    rng = np.random.default_rng(4)
    m, size = 3, 24
    parts = []
    for n_points, sigma in ((30, rng.uniform(0.5, 1.5, m)), (20, rng.uniform(0.1, 0.4, m)), (25, 2.2)):
        py, px = rng.uniform(-1.2, 1.2, (m, n_points)), rng.uniform(-1.2, 1.2, (m, n_points))
        parts.append((py, px, rng.uniform(0.2, 2.0, (m, n_points)), sigma))
    got = F._lines([parts[:2], parts[2:]], size, torch.device("cpu"))
    want = [_numpy_lines(*parts[0], size) + _numpy_lines(*parts[1], size), _numpy_lines(*parts[2], size)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-5)


def test_splat_equals_the_gaussian_formula():
    rng = np.random.default_rng(2)
    m, size, L = 2, 20, 5
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yc, xc = rng.uniform(-1, 1, (m, L)), rng.uniform(-1, 1, (m, L))
    sy, sx = rng.uniform(0.01, 0.3, (m, L)), rng.uniform(0.01, 0.3, (m, L))
    amps = rng.uniform(0, 1, (m, L)), (rng.uniform(size=(m, L)) < 0.5) * 1.0
    grid = torch.from_numpy(c.astype(np.float32))
    got = F._splat(grid, grid, yc, xc, sy, sx, *amps)
    gy = np.exp(-0.5 * ((c[None, None, :] - yc[..., None]) / sy[..., None]) ** 2)  # (m, L, H)
    gx = np.exp(-0.5 * ((c[None, None, :] - xc[..., None]) / sx[..., None]) ** 2)  # (m, L, W)
    for g, amp in zip(got, amps):
        want = (amp[:, :, None, None] * gy[..., :, None] * gx[..., None, :]).sum(1)
        np.testing.assert_allclose(g.numpy(), want, atol=1e-6)
    a = torch.tensor([0.0, -1.0, -29.0, -31.0, -200.0, -5000.0])
    np.testing.assert_allclose(F._exp_neg(a.clone()).numpy(), np.exp(a.numpy()), atol=1e-13, rtol=1e-6)


def test_deformation_moves_images_and_labels_together():
    """The deformation samples the image bilinearly and the label map at the nearest pixel of the same grid, as
    the NumPy renderer did (its grid: pixel centres plus the two smooth fields times the amplitude)."""
    from medlab.data.phantoms import _common
    size, m = 32, 3
    noise = _torch.PixelNoise(np.random.default_rng(6), 6, torch.device("cpu"))
    fields = (_torch.field_cells(noise, m, 4), _torch.field_cells(noise, m, 4))
    rng = np.random.default_rng(6)
    amplitude = np.array([0.0, 0.02, 0.05])
    dy = _common.smooth_field(rng, m, size, cells=4) * amplitude[:, None, None]
    dx = _common.smooth_field(rng, m, size, cells=4) * amplitude[:, None, None]
    yy, xx = _common.grid(size)
    g = torch.from_numpy(np.stack([np.broadcast_to(xx, dx.shape) + dx, np.broadcast_to(yy, dy.shape) + dy],
                                  -1).astype(np.float32))
    img = torch.from_numpy(np.random.default_rng(7).uniform(0, 1, (m, 3, size, size)).astype(np.float32))
    mask = torch.from_numpy(np.random.default_rng(8).integers(0, 7, (m, size, size)))
    got_img, got_mask = F._deform(img, mask, fields, amplitude, _torch.Canvas(size, torch.device("cpu")))
    want_img = torch.nn.functional.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=False)
    want_mask = torch.nn.functional.grid_sample(mask[:, None].float(), g, mode="nearest", padding_mode="border",
                                                align_corners=False)[:, 0].long()
    np.testing.assert_allclose(got_img.numpy(), want_img.numpy(), atol=1e-5)
    assert (got_mask != want_mask).sum() <= 2  # a grid point at half a pixel may round the other way
    assert torch.equal(got_mask[0], mask[0])  # no displacement: the labels stay


def test_stream_and_bench_draw_fundus_phantoms():
    from medlab import bench
    from medlab.data import PhantomStream
    from medlab.data.stream import STREAM_KINDS

    assert "fundus" in STREAM_KINDS
    stream = PhantomStream("fundus", n=10, batch_size=4, size=32, seed=0, device="cpu", block=8)
    batches = list(stream)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert stream.class_names == list(F.FUNDUS_CLASSES)
    again = list(PhantomStream("fundus", n=10, batch_size=4, size=32, seed=0, device="cpu", block=8))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, again))
    masks = PhantomStream("fundus", n=4, batch_size=4, size=32, seed=0, device="cpu", target="mask")
    _, mask = next(iter(masks))
    assert mask.shape == (4, 32, 32) and masks.class_names == list(F.FUNDUS_MASK_CLASSES)
    row = bench.measure_phantoms("fundus", size=32, n=8, repeats=1)
    assert row["status"] == "ok" and row["images_per_s"] > 0
