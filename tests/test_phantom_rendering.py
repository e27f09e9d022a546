"""Phantoms rendered with torch (CT, chest X-ray): the NumPy renderer's images, on any device, in parallel chunks.

The torch renderer draws the same random numbers as the NumPy renderer it replaced, in the same order, so on the
CPU its images are those images up to float rounding (a pixel at a threshold may flip). The fingerprints below
were computed with the NumPy renderer: labels, image means (HU), lesion and lung pixel counts per slice.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from medlab.data import PhantomStream
from medlab.data import phantoms as P
from medlab.data.phantoms import _common, _torch
from medlab.errors import ParameterError
from rendering_support import assert_same_pixels, assert_tensors_equal_arrays, force_device_noise, on_threads

BEFORE = {
    "default": (dict(n=10, size=64, seed=0),
                [0, 0, 0, 1, 1, 1, 1, 0, 0, 1],
                [-774.69, -718.82, -779.64, -706.56, -711.33, -841.28, -667.98, -832.32, -761.12, -807.66],
                [0, 0, 0, 58, 160, 115, 400, 0, 0, 73],
                [822, 963, 759, 972, 980, 557, 891, 590, 865, 649]),
    "B_small": (dict(n=8, size=48, seed=3, domain="B"),
                [0, 1, 0, 1, 0, 1, 1, 0],
                [-723.84, -687.12, -788.69, -652.00, -780.64, -726.01, -707.64, -720.92],
                [0, 138, 0, 136, 0, 94, 35, 0],
                [437, 460, 337, 539, 339, 400, 415, 411]),
    "C_knobs": (dict(n=8, size=40, seed=1, domain="C", lesion_contrast=0.5, lesion_size=1.5, count=6),
                [1, 0, 1, 0, 0, 0, 1, 1],
                [-765.28, -705.44, -763.09, -777.03, -795.74, -696.67, -732.93, -771.82],
                [16, 0, 97, 0, 0, 0, 140, 124],
                [287, 349, 282, 323, 221, 343, 296, 284]),
    "per_slice": (dict(n=6, size=48, seed=4, lesions=[1, 0, 1, 1, 0, 1], involvement=[0.05, 0.1, 0.3, 0.6, 0.2, 0.9],
                       consolidation_fraction=[0.0, 0.5, 0.2, 0.9, 0.1, 0.5]),
                  [1, 0, 1, 1, 0, 1],
                  [-754.04, -763.79, -701.35, -712.58, -677.25, -669.40],
                  [16, 0, 158, 206, 0, 356],
                  [448, 409, 554, 345, 538, 405]),
}


@pytest.mark.parametrize("case", BEFORE)
def test_ct_renders_the_numpy_renderers_slices(case):
    kwargs, labels, means, lesion, lung = BEFORE[case]
    batch = P.ct_slice(**kwargs)
    assert batch.labels.tolist() == labels
    np.testing.assert_allclose(batch.images.mean(axis=(1, 2, 3)), means, atol=3.0)  # a few flipped lesion pixels
    np.testing.assert_array_equal(batch.masks["lung"].sum(axis=(1, 2)), lung)
    np.testing.assert_allclose((batch.masks["lesion"] > 0).sum(axis=(1, 2)), lesion, atol=3)
    assert batch.images.dtype == np.float32 and batch.masks["lesion"].dtype == np.int64


#: The last ten of 80 phantoms at 64 px (seed 9), from the NumPy renderer: the second rendering chunk, whose
#: noise comes after the first chunk's in the random stream (labels, image means, lesion pixel counts).
SECOND_CHUNK = {
    "ct_slice": ([0, 0, 1, 1, 1, 1, 0, 0, 0, 1],
                 [-734.37, -751.26, -803.42, -723.47, -717.92, -767.49, -745.03, -827.22, -801.32, -763.20],
                 [0, 0, 26, 183, 213, 144, 0, 0, 0, 188], 3.0),
    "chest_xray": ([2, 0, 2, 2, 2, 0, 2, 2, 2, 0],
                   [0.3386, 0.4306, 0.4277, 0.3318, 0.5290, 0.3235, 0.5620, 0.3217, 0.4146, 0.2208],
                   [101, 0, 77, 84, 65, 0, 133, 99, 78, 0], 1e-3),
}


@pytest.mark.parametrize("kind", SECOND_CHUNK)
def test_chunks_read_the_random_stream_as_the_numpy_renderer_did(kind):
    labels, means, lesion, tolerance = SECOND_CHUNK[kind]
    batch = getattr(P, kind)(80, size=64, seed=9)
    assert batch.labels[70:].tolist() == labels
    np.testing.assert_allclose(batch.images[70:].mean(axis=(1, 2, 3)), means, atol=tolerance)
    np.testing.assert_allclose((batch.masks["lesion"][70:] > 0).sum(axis=(1, 2)), lesion, atol=3)


def test_threads_do_not_change_the_images():
    """One torch thread or two (each operation shared between them): the same bytes."""
    def make():
        return [P.ct_slice(300, size=32, seed=2), P.chest_xray(300, size=32, seed=2, pose=1.0, bias=0.1)]
    one, two = on_threads(1, make), on_threads(2, make)
    for a, b in zip(one, two):
        assert_same_pixels(a, b)


@pytest.mark.parametrize("generator", [P.ct_slice, P.chest_xray])
def test_as_tensors_returns_the_same_phantoms_as_tensors(generator):
    arrays = generator(12, size=32, seed=5)
    tensors = generator(12, size=32, seed=5, device="cpu", as_tensors=True)
    assert tensors.images.shape == (12, 1, 32, 32)
    assert_tensors_equal_arrays(tensors, arrays)


@pytest.mark.parametrize("generator", [P.ct_slice, P.chest_xray])
def test_device_noise_stream_keeps_parameters_and_is_reproducible(generator, monkeypatch):
    """On a GPU the pixel noise comes from a torch generator: exercised here on the CPU by forcing that branch."""
    reference = generator(16, size=32, seed=7)
    force_device_noise(monkeypatch)
    first, second = generator(16, size=32, seed=7), generator(16, size=32, seed=7)
    np.testing.assert_array_equal(first.images, second.images)          # same seed and device, same images
    np.testing.assert_array_equal(first.labels, reference.labels)        # per-image draws do not depend on it
    np.testing.assert_array_equal(first.masks["lung"], reference.masks["lung"])
    assert not np.array_equal(first.images, reference.images)           # the pixel noise does
    other = generator(16, size=32, seed=8)
    assert not np.array_equal(first.images, other.images)


def test_device_argument_is_checked():
    with pytest.raises(ParameterError, match="device"):
        P.ct_slice(4, size=32, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            P.ct_slice(4, size=32, device="cuda")
    for mps in ("mps", torch.device("mps")):      # no float64 there: refused by name, with the way out
        with pytest.raises(ParameterError, match="mps lacks the float64.*device='cpu'"):
            P.ct_slice(4, size=32, device=mps)


def test_auto_device_is_cuda_or_the_cpu_never_mps(monkeypatch):
    import medlab.runtime

    monkeypatch.setattr(medlab.runtime, "_mps_available", lambda: True)   # a Mac: choose_device would pick mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _torch.phantom_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _torch.phantom_device("auto") == torch.device("cuda")


def test_quadric_coefficients_equal_the_ellipse_formula():
    rng = np.random.default_rng(0)
    m, size = 5, 24
    angle, scale = rng.uniform(-0.3, 0.3, m), rng.uniform(0.8, 1.1, m)
    tx, ty = rng.uniform(-0.1, 0.1, m), rng.uniform(-0.1, 0.1, m)
    canvas = _torch.Canvas(size, torch.device("cpu"))
    pose = _torch.Pose.rotation(angle, scale, tx, ty)
    y0, x0 = _common.grid(size)
    col = _common.col
    ca, sa = np.cos(col(angle)) / col(scale), np.sin(col(angle)) / col(scale)
    x = ca * x0 - sa * y0 - col(tx) / col(scale)
    y = sa * x0 + ca * y0 - col(ty) / col(scale)
    ry, rx = rng.uniform(0.1, 0.5, m), rng.uniform(0.1, 0.5, m)
    got = canvas.quadric(pose.ellipse(0.1, -0.2, ry, rx, angle=0.4)).numpy()
    want = _common.ellipse_r2(y, x, 0.1, -0.2, col(ry), col(rx), 0.4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(canvas.quadric(pose.line(a=1.0)).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(canvas.quadric(pose.line(b=1.0)).numpy(), y, atol=1e-5)
    np.testing.assert_allclose(canvas.quadric(pose.line(a=2.0, b=-1.0, c=0.3)).numpy(), 2 * x - y + 0.3, atol=1e-5)
    np.testing.assert_allclose(canvas.ramp(_torch.shift(pose.ellipse(0.0, 0.0, ry, rx), 1.0), 0.2).numpy(),
                               _common.ramp(_common.ellipse_r2(y, x, 0.0, 0.0, col(ry), col(rx)) - 1.0, 0.2), atol=1e-4)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5, [0.0, 0.5, 1.0, 2.0]])
def test_blur_equals_scipy(sigma):
    x = np.random.default_rng(1).standard_normal((4, 21, 27)).astype(np.float32)

    def scipy_blur(a, s):
        if s <= 0:
            return a
        a = gaussian_filter1d(a, s, axis=-2, mode="nearest", truncate=3.0)
        return gaussian_filter1d(a, s, axis=-1, mode="nearest", truncate=3.0)

    got = _torch.blur(torch.from_numpy(x), sigma).numpy()
    sigmas = np.broadcast_to(np.asarray(sigma, float), (4,))
    want = np.stack([scipy_blur(x[i], s) for i, s in enumerate(sigmas)])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("texture", ["gaussian", "correlated", "speckle"])
def test_smooth_field_and_scanner_equal_the_numpy_helpers(texture):
    dom = _common.resolve_domain("C", noise_texture=texture, blur=0.8)
    noise = _torch.PixelNoise(np.random.default_rng(3), 3, torch.device("cpu"))
    field = _torch.smooth_field(_torch.field_cells(noise, 4, 6), 32)
    np.testing.assert_allclose(field.numpy(), _common.smooth_field(np.random.default_rng(3), 4, 32, cells=6), atol=1e-5)
    clean = np.random.default_rng(4).uniform(0, 1, (4, 32, 32)).astype(np.float32)
    z = _torch.PixelNoise(np.random.default_rng(5), 5, torch.device("cpu")).standard_normal((4, 32, 32))
    got = _torch.apply_domain(torch.from_numpy(clean.copy()), z, dom, 0.05).numpy()
    want = _common.apply_domain(clean, np.random.default_rng(5), dom, 0.05)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_scratch_outputs_equal_fresh_tensors():
    """``out=`` / :class:`Scratch` variants (reused memory, fewer page faults) give the same numbers."""
    from medlab.data.phantoms import ct
    rng = np.random.default_rng(2)
    m, size = 6, 40
    canvas, work = _torch.Canvas(size, torch.device("cpu")), _torch.Scratch(torch.device("cpu"))
    pose = _torch.Pose.rotation(rng.uniform(-0.2, 0.2, m), rng.uniform(0.8, 1.1, m), rng.uniform(-0.1, 0.1, m),
                                rng.uniform(-0.1, 0.1, m))
    q = _torch.shift(pose.ellipse(0.3, -0.1, 0.08, 0.12, angle=0.3), 1.0)
    assert torch.equal(canvas.ramp(q, 0.2, out=work("a", m, size, size)), canvas.ramp(q, 0.2))
    # a ramp on the window of the pixels it covers, and 0 outside it
    window, part = ct._ramp_window(canvas, q, 0.2, work("b", m, size, size))
    full = canvas.ramp(q, 0.2)
    assert torch.equal(full[window], part)
    outside = full.clone()
    outside[window] = 0.0
    assert float(outside.abs().max()) == 0.0 and part.shape[1] < size and part.shape[2] < size
    low = _torch.field_cells(_torch.PixelNoise(np.random.default_rng(3), 3, torch.device("cpu")), m, 6)
    np.testing.assert_allclose(_torch.smooth_field(low, size, out=work("c", m, size, size), scratch=work).numpy(),
                               _torch.smooth_field(low, size).numpy(), atol=1e-5)
    # points blurred by stamps: the blur of the image of points (edges replicated)
    iy, ix = torch.as_tensor(rng.integers(0, size, (m, 30))), torch.as_tensor(rng.integers(0, size, (m, 30)))
    iy[0, :4], ix[1, :4] = 0, size - 1  # on the edges
    amp = torch.as_tensor(rng.choice([1.0, 3.0], (m, 30)))
    for sigma in (0.6, 1.4):
        points = torch.zeros(m * size * size, dtype=torch.float64)
        rows = torch.arange(m)[:, None].expand_as(iy)
        points.index_put_((((rows * size + iy) * size + ix).reshape(-1),), amp.reshape(-1), accumulate=True)
        want = _torch.blur(points.view(m, size, size).float(), sigma).numpy() * 2.0
        np.testing.assert_allclose(ct._blur_points(iy, ix, amp, size, sigma, 2.0, work).numpy(), want, atol=1e-5)


def test_quantiles_in_mask_follow_the_sorted_values():
    """Both per-slice thresholds (the second inside the part of the mask above the first) from one sort."""
    from medlab.data.phantoms import ct
    rng = np.random.default_rng(5)
    values = torch.as_tensor(rng.standard_normal((5, 16, 16)), dtype=torch.float32)
    mask = torch.as_tensor(rng.uniform(size=(5, 16, 16)) < 0.5, dtype=torch.float32)
    mask[3] = 0.0  # an empty mask: no threshold
    q, q2 = np.array([0.6, 0.0, 0.95, 0.5, 0.3]), np.array([0.5, 0.2, 0.0, 0.5, 1.0])
    first, second = ct._quantile_in_mask(values, mask, q, q2)
    for i in range(5):
        v = values[i, ::2, ::2].reshape(-1)[mask[i, ::2, ::2].reshape(-1) > 0].sort().values
        if len(v) == 0:
            assert first[i] == np.inf and second[i] == np.inf
            continue
        assert first[i] == v[min(int(np.floor(q[i] * len(v))), len(v) - 1)]
        above = v[v > first[i]]
        want = above[min(int(np.floor(q2[i] * len(above))), len(above) - 1)] if len(above) else np.inf
        assert second[i] == want


# ---------------------------------------------------------------------------------------------------------------
# drawing on the fly

def test_stream_draws_fresh_reproducible_epochs():
    stream = PhantomStream("ct_slice", n=40, batch_size=16, size=32, seed=1, device="cpu", block=32)
    assert len(stream) == 3
    first = list(stream)
    assert [len(x) for x, _ in first] == [16, 16, 8]          # the 8 left over from the 32-image block, then 8
    assert stream.epoch == 1
    second = list(stream)
    assert not torch.equal(first[0][0], second[0][0])          # a new epoch draws new images
    again = list(PhantomStream("ct_slice", n=40, batch_size=16, size=32, seed=1, device="cpu", block=32))
    for (a, la), (b, lb) in zip(first, again):
        assert torch.equal(a, b) and torch.equal(la, lb)
    images, labels = first[0]
    assert images.dtype == torch.float32 and 0.0 <= float(images.min()) and float(images.max()) <= 1.0  # windowed
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}


def test_stream_masks_and_knobs():
    stream = PhantomStream("chest_xray", n=8, batch_size=4, size=32, seed=0, device="cpu", target="lung", pose=1.0)
    images, masks = next(iter(stream))
    assert images.shape == (4, 1, 32, 32) and masks.shape == (4, 32, 32) and masks.dtype == torch.int64
    assert stream.class_names == ["background", "lung"]
    with pytest.raises(ParameterError, match="lung_ultrasound_clips"):
        PhantomStream("lung_ultrasound_clips", n=8, batch_size=4)
    with pytest.raises(ParameterError, match="batch_size"):
        PhantomStream("ct_slice", n=8, batch_size=0)
    with pytest.raises(ParameterError):
        PhantomStream("ct_slice", n=8, batch_size=4, lesion_contrast=99.0)  # a bad knob stops it at once


def test_fit_trains_on_a_stream():
    from medlab.models import build_classifier
    from medlab.train import fit

    stream = PhantomStream("ct_slice", n=32, batch_size=16, size=32, seed=0, device="cpu")
    model = build_classifier("small_cnn", num_classes=2, in_channels=1)
    history = fit(model, stream, epochs=2, device="cpu", progress=False, seed=0)
    assert history.metrics["epoch"] == [1, 2] and stream.epoch == 2
    assert all(np.isfinite(history.metrics["train_loss"]))
