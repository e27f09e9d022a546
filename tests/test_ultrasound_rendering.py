"""The lung ultrasound phantom rendered with torch: the NumPy renderer's frames and clips, on any device.

The torch renderer draws the same random numbers as the NumPy renderer it replaced, in the same order, so on the
CPU its images are those images up to float rounding. The fingerprints below were computed with the NumPy
renderer: labels, image means, pixels of the findings map that are not background, and frame (clip) scores.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d

from medlab.data import phantoms as P
from medlab.data.phantoms import _torch, ultrasound
from medlab.errors import ParameterError
from rendering_support import assert_same_pixels, assert_tensors_equal_arrays, force_device_noise, on_threads

BEFORE = {
    "frames_mixed": (P.lung_ultrasound, dict(n=8, size=64, seed=0, probe="mixed"),
                     [2, 0, 3, 2, 1, 0, 1, 3],
                     [0.1798, 0.2973, 0.2679, 0.3645, 0.3777, 0.2096, 0.3326, 0.3556],
                     [304, 658, 1252, 490, 588, 636, 703, 1223],
                     [2, 0, 3, 2, 1, 0, 1, 3]),
    "frames_B_variation": (P.lung_ultrasound, dict(n=8, size=48, seed=3, domain="B", pose=1.0, fade=0.5,
                                                   intensity_mixture=1.0, bias=0.5, blur_jitter=1.5),
                           [2, 3, 2, 1, 0, 1, 3, 0],
                           [0.2210, 0.1222, 0.0992, 0.0982, 0.2070, 0.1805, 0.1549, 0.1591],
                           [283, 541, 298, 137, 157, 161, 303, 276],
                           [2, 3, 2, 1, 0, 1, 3, 0]),
    "clips_C": (P.lung_ultrasound_clips, dict(n=4, frames=4, size=32, seed=1, domain="C", probe="mixed"),
                [0, 1, 2, 3],
                [0.2049, 0.2039, 0.2778, 0.4276],
                [640, 800, 939, 1928],
                [0, 1, 2, 3]),
}


def _fingerprint(batch, rows=slice(None)):
    images, findings = batch.images[rows], batch.masks["findings"][rows]
    return (batch.labels[rows].tolist(), images.mean(axis=tuple(range(1, images.ndim))),
            (findings > 0).sum(axis=tuple(range(1, findings.ndim))), np.asarray(batch.attrs["score"])[rows].tolist())


@pytest.mark.parametrize("case", BEFORE)
def test_renders_the_numpy_renderers_frames_and_clips(case):
    generator, kwargs, labels, means, findings, scores = BEFORE[case]
    batch = generator(**kwargs)
    got_labels, got_means, got_findings, got_scores = _fingerprint(batch)
    assert got_labels == labels and got_scores == scores
    np.testing.assert_allclose(got_means, means, atol=1e-4)
    np.testing.assert_array_equal(got_findings, findings)
    assert batch.images.dtype == np.float32 and batch.masks["findings"].dtype == np.int64
    assert batch.masks["sector"].dtype == np.int64 and batch.masks["consolidation"].dtype == np.int64


#: The last 8 of 40 frames at 64 px and the last 2 of 6 clips of 8 frames (seed 9), from the NumPy renderer: the
#: second rendering chunk, whose noise comes after the first chunk's in the random stream.
SECOND_CHUNK = {
    "frames": (lambda: P.lung_ultrasound(40, size=64, seed=9), slice(32, 40),
               [0, 1, 1, 3, 0, 0, 2, 1],
               [0.1624, 0.1245, 0.1650, 0.2343, 0.1205, 0.1536, 0.1392, 0.1186],
               [422, 414, 445, 1172, 299, 416, 420, 418]),
    "clips": (lambda: P.lung_ultrasound_clips(6, frames=8, size=64, seed=9), slice(4, 6),
              [0, 1], [0.1539, 0.1718], [2724, 4957]),
}


@pytest.mark.parametrize("kind", SECOND_CHUNK)
def test_chunks_read_the_random_stream_as_the_numpy_renderer_did(kind):
    make, rows, labels, means, findings = SECOND_CHUNK[kind]
    got_labels, got_means, got_findings, got_scores = _fingerprint(make(), rows)
    assert got_labels == labels and got_scores == labels
    np.testing.assert_allclose(got_means, means, atol=1e-4)
    np.testing.assert_array_equal(got_findings, findings)


def test_threads_do_not_change_the_images():
    """One torch thread or two (each operation shared between them): the same bytes."""
    def make():
        return [P.lung_ultrasound(150, size=32, seed=2, probe="mixed", pose=1.0, bias=0.3, blur_jitter=1.0),
                P.lung_ultrasound_clips(10, frames=5, size=32, seed=2, domain="B")]
    one, two = on_threads(1, make), on_threads(2, make)
    for a, b in zip(one, two):
        assert_same_pixels(a, b)


@pytest.mark.parametrize("clips", [False, True])
def test_as_tensors_returns_the_same_phantoms_as_tensors(clips):
    make = (lambda **kw: P.lung_ultrasound_clips(4, frames=3, size=32, seed=5, probe="mixed", **kw)) if clips \
        else (lambda **kw: P.lung_ultrasound(12, size=32, seed=5, probe="mixed", fade=0.5, **kw))
    arrays, tensors = make(), make(device="cpu", as_tensors=True)
    assert_tensors_equal_arrays(tensors, arrays)


@pytest.mark.parametrize("clips", [False, True])
def test_device_noise_stream_keeps_parameters_and_is_reproducible(clips, monkeypatch):
    """On a GPU the pixel noise comes from a torch generator: exercised here on the CPU by forcing that branch."""
    make = (lambda seed: P.lung_ultrasound_clips(4, frames=3, size=32, seed=seed, probe="mixed")) if clips \
        else (lambda seed: P.lung_ultrasound(16, size=32, seed=seed, probe="mixed", pose=1.0))
    reference = make(7)
    force_device_noise(monkeypatch)
    first, second = make(7), make(7)
    np.testing.assert_array_equal(first.images, second.images)          # same seed and device, same images
    for k in first.masks:
        np.testing.assert_array_equal(first.masks[k], second.masks[k])
    np.testing.assert_array_equal(first.labels, reference.labels)        # per-image draws do not depend on it
    for k in ("pleural_depth", "probe"):
        np.testing.assert_array_equal(first.attrs[k], reference.attrs[k])
    np.testing.assert_array_equal(first.masks["sector"], reference.masks["sector"])
    assert not np.array_equal(first.images, reference.images)           # the pixel noise does
    assert not np.array_equal(first.images, make(8).images)


def test_device_argument_is_checked():
    with pytest.raises(ParameterError, match="device"):
        P.lung_ultrasound(4, size=32, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            P.lung_ultrasound_clips(4, frames=2, size=32, device="cuda")


def test_empty_batch():
    batch = P.lung_ultrasound(0, size=32)
    assert batch.images.shape == (0, 1, 32, 32) and batch.masks["findings"].shape == (0, 32, 32)
    assert len(batch.attrs["score"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# the torch primitives against the NumPy helpers they replace


def _numpy_binomial(x: np.ndarray, axis: int) -> np.ndarray:
    """The NumPy renderer's [1, 2, 1] / 4 pass along ``axis`` (edges repeated), as it was before the port."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    out[..., 1:-1] = x[..., :-2] + x[..., 2:]
    out[..., 1:-1] += 2.0 * x[..., 1:-1]
    out[..., 0] = 3.0 * x[..., 0] + x[..., 1]
    out[..., -1] = 3.0 * x[..., -1] + x[..., -2]
    out *= 0.25
    return np.moveaxis(out, -1, axis)


def _numpy_speckle_field(rng: np.random.Generator, shape, lateral_passes: int = 2) -> np.ndarray:
    """The NumPy renderer's speckle (``ultrasound.speckle_field`` before the port)."""
    re = rng.standard_normal(shape, dtype=np.float32)
    im = rng.standard_normal(shape, dtype=np.float32)
    for arr in (re, im):
        arr[...] = _numpy_binomial(arr, -2)
        for _ in range(lateral_passes):
            arr[...] = _numpy_binomial(arr, -1)
    env = np.sqrt(re * re + im * im)
    env /= env.mean(axis=(-2, -1), keepdims=True)
    return env


def test_numpy_reference_speckle_is_the_pre_port_field():
    """Fingerprint of the pre-port ``speckle_field(default_rng(4), (3, 16, 24), 2)``: the reference is that code."""
    s = _numpy_speckle_field(np.random.default_rng(4), (3, 16, 24), 2)
    assert abs(float(s.std()) - 0.5373491) < 1e-6 and abs(float(s[0, 3, 5]) - 1.2511891) < 1e-6

@pytest.mark.parametrize("passes", [1, 2])
def test_speckle_equals_the_numpy_speckle(passes):
    shape = (3, 17, 26)
    want = _numpy_speckle_field(np.random.default_rng(4), shape, lateral_passes=passes)
    noise = _torch.PixelNoise(np.random.default_rng(4), 4, torch.device("cpu"))
    got = _torch.speckle(noise, shape, lateral_passes=passes).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), 1.0, atol=1e-5)


def test_binomial_is_the_numpy_pass_bit_for_bit():
    x = np.random.default_rng(0).standard_normal((2, 9, 11)).astype(np.float32)
    for axis in (-2, -1):
        np.testing.assert_array_equal(_torch.binomial(torch.from_numpy(x), axis).numpy(),
                                      _numpy_binomial(x, axis))


@pytest.mark.parametrize("sigma", [0.7, 2.5, [0.0, 0.6, 1.3, 3.0]])
def test_blur1d_equals_scipy(sigma):
    x = np.random.default_rng(1).standard_normal((4, 13, 29)).astype(np.float32)
    sigmas = np.broadcast_to(np.asarray(sigma, float), (4,))
    for dim, axis in ((-1, -1), (-2, -2), (1, -2)):
        got = _torch.blur1d(torch.from_numpy(x), sigma, dim=dim).numpy()
        want = np.stack([gaussian_filter1d(x[i], s, axis=axis, mode="nearest", truncate=3.0) if s > 0 else x[i]
                         for i, s in enumerate(sigmas)])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_fan_conversion_equals_bilinear_sampling():
    """The scan conversion against a NumPy bilinear interpolation (zeros outside, pixel centres) of the fan grid."""
    size = 24
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, (3, size, size)).astype(np.float32)
    findings = rng.integers(0, 5, (3, size, size)).astype(np.uint8)
    out, lab, sector = ultrasound._to_fan(torch.from_numpy(img), torch.from_numpy(findings), size)
    grid, inside = ultrasound._fan_grid(size)
    x = (grid[..., 0].astype(np.float64) + 1) * size / 2 - 0.5  # column coordinate of each output pixel
    y = (grid[..., 1].astype(np.float64) + 1) * size / 2 - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    want = np.zeros_like(img, dtype=np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            w = (1 - np.abs(y - yy)) * (1 - np.abs(x - xx))
            ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
            want += np.where(ok, img[:, yy.clip(0, size - 1), xx.clip(0, size - 1)] * w, 0.0)
    np.testing.assert_allclose(out.numpy(), want * inside, atol=1e-5)
    g = torch.from_numpy(grid)[None].expand(3, -1, -1, -1)
    near = F.grid_sample(torch.from_numpy(findings).float()[:, None], g, mode="nearest", align_corners=False)[:, 0].numpy()
    np.testing.assert_array_equal(lab.numpy(), near * inside)
    np.testing.assert_array_equal(sector.numpy(), np.broadcast_to(inside, (3, size, size)))
    assert set(np.unique(lab.numpy())) <= set(range(5))


def test_gain_field_equals_the_wave_formula():
    rng = np.random.default_rng(3)
    params = ultrasound._draw_waves(rng, 4, 0.7)
    d = (torch.arange(20, dtype=torch.float32) + 0.5).div(20).view(1, -1, 1)
    lat = torch.linspace(-1, 1, 20).view(1, 1, -1)
    dn, ln = d.numpy().astype(np.float64), lat.numpy().astype(np.float64)
    want = sum(params[:, j, 0, None, None] * np.sin(params[:, j, 1, None, None] * dn + params[:, j, 2, None, None] * ln
                                                      + params[:, j, 3, None, None]) for j in range(3))
    np.testing.assert_allclose(ultrasound._waves(params, d, lat).numpy(), want, atol=1e-5)


def test_stream_draws_lung_ultrasound_frames():
    from medlab.data import PhantomStream

    stream = PhantomStream("lung_ultrasound", n=10, batch_size=4, size=32, seed=1, device="cpu", target="mask",
                           fade=0.5)
    batches = list(stream)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    images, masks = batches[0]
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.int64 and int(masks.max()) <= 4
    assert stream.class_names == list(ultrasound.FINDINGS)
    labels = next(iter(PhantomStream("lung_ultrasound", n=8, batch_size=8, size=32, device="cpu")))[1]
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2, 3}
