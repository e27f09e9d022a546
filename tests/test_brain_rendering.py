"""Brain MRI phantoms rendered with torch (medlab.data.phantoms.brain): the NumPy renderer's volumes, on any device.

The torch renderer draws the same random numbers as the NumPy renderer it replaced, in the same order (each case
from ``default_rng((seed, i))``), so on the CPU its volumes are those volumes up to float rounding. The
fingerprints below were computed with the NumPy renderer: per-channel image means, the voxel at the centre,
voxels per tissue class, the lesion table and the ventricle volume.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, gaussian_filter1d, grey_dilation

from medlab.data import load_volumes
from medlab.data.phantoms import _torch, brain_atrophy, brain_mri
from medlab.errors import ParameterError
from rendering_support import force_device_noise, on_threads

BEFORE = {
    "mri_default": (dict(n=2, seed=3, voxel_mm=8.0), {
        "means": [[0.151877, 0.135041, 0.132972], [0.176684, 0.161701, 0.147916]],
        "centre": [[0.484637, 0.553476, 0.620571], [0.302339, 0.867202, 0.346895]],
        "tissue": [[11093, 2172, 980, 38], [10621, 2409, 1199, 54]],
        "lesion_voxels": [1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 2, 1, 1, 2],
        "contrast": [0.936773, 0.338667, 0.91301, 0.623723, 0.500978, 0.914346, 0.372298, 0.745226, 0.495922,
                     0.606932, 0.71489, 0.540772, 0.664871, 0.595222, 0.591868, 0.842736, 0.700098, 0.611066,
                     0.397845, 0.31624, 0.728049, 0.462456],
        "rose": [7.1294, 0.8255, 20.5581, 7.1266, 1.1606, 4.0706, 3.5975, 5.7706, 3.2652, 2.9629, 1.1623, 1.6683,
                 8.1351, 1.5753, 4.8045, 1.9793, 12.7547, 1.497, 5.2127, 5.058, 5.3277, 7.882],
        "vent_ml": [17.6776, 25.8385]}),
    "mri_knobs": (dict(n=2, seed=5, voxel_mm=6.0, anisotropy=2.0, channels=("FLAIR", "PD"), blur=(1.0, 2.0),
                       lesion_load=(6, 10), deformation=4.0, bias=0.3, intensity_jitter=0.1), {
        "means": [[0.134896, 0.220558], [0.143513, 0.236406]],
        "centre": [[0.404283, 0.818602], [0.413164, 1.0]],
        "tissue": [[12690, 2709, 1223, 118], [12639, 2707, 1314, 80]],
        "lesion_voxels": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1],
        "contrast": [0.37217, 0.421219, 0.311884, 0.923854, 0.723633, 0.453638, 0.855828, 0.833064, 0.524347,
                     0.647708, 0.880925, 0.682596, 0.369162, 0.465488, 0.334742],
        "rose": [0.0035, 0.0214, 0.0372, 0.0238, 0.0516, 0.0218, 0.0313, 0.1531, 0.0358, 0.4427, 0.2138, 0.0377,
                 0.879, 0.8054, 0.0651],
        "vent_ml": [36.5183, 26.9728]}),
}

ATROPHY_BEFORE = {
    "labels": [0, 1, 1, 0], "means": [0.199293, 0.191082, 0.197191, 0.205266],
    "centre": [0.480348, 0.445273, 0.35935, 0.585809],
    "tissue": [[10406, 2556, 1228, 93], [10759, 2294, 1035, 195], [10501, 2473, 1124, 185], [10294, 2740, 1215, 34]],
    "vent_ml": [37.3132, 55.9533, 60.3497, 12.3868]}


def _centre(images):
    d, h, w = images.shape[-3:]
    return images[..., d // 2, h // 2, w // 2].astype(np.float64)


@pytest.mark.parametrize("case", BEFORE)
def test_brain_mri_renders_the_numpy_renderers_volumes(case):
    kwargs, want = BEFORE[case]
    kwargs = dict(kwargs)
    b = brain_mri(kwargs.pop("n"), **kwargs)
    np.testing.assert_allclose(b.images.mean(axis=(2, 3, 4), dtype=np.float64), want["means"], atol=2e-6)
    np.testing.assert_allclose(_centre(b.images), want["centre"], atol=1e-5)      # the voxel noise too
    assert [np.bincount(t.ravel(), minlength=4).tolist() for t in b.tissue] == want["tissue"]
    assert b.lesion_table.voxels.tolist() == want["lesion_voxels"]
    np.testing.assert_allclose(b.lesion_table.contrast, want["contrast"], atol=1e-6)
    np.testing.assert_allclose(b.lesion_table.rose, want["rose"], atol=1e-4)
    np.testing.assert_allclose(b.attrs["ventricle_ml"], want["vent_ml"], atol=1e-4)
    assert b.images.dtype == np.float32 and b.lesions.dtype == b.tissue.dtype == np.uint8


def test_brain_atrophy_renders_the_numpy_renderers_volumes():
    b = brain_atrophy(4, seed=1, voxel_mm=8.0)
    assert b.labels.tolist() == ATROPHY_BEFORE["labels"]
    np.testing.assert_allclose(b.images.mean(axis=(1, 2, 3, 4), dtype=np.float64), ATROPHY_BEFORE["means"],
                               atol=2e-6)
    np.testing.assert_allclose(_centre(b.images[:, 0]), ATROPHY_BEFORE["centre"], atol=1e-5)
    assert [np.bincount(t.ravel(), minlength=4).tolist() for t in b.tissue] == ATROPHY_BEFORE["tissue"]
    np.testing.assert_allclose(b.attrs["ventricle_ml"], ATROPHY_BEFORE["vent_ml"], atol=1e-4)


def test_threads_do_not_change_the_volumes():
    """One torch thread or two: the same bytes (reductions are split the same way whatever the thread count)."""
    def make():
        return (brain_mri(1, seed=2, voxel_mm=4.0, channels=("T1",), lesion_load=(5, 8), blur=(0.4, 0.8)),
                brain_atrophy(1, seed=2, voxel_mm=4.0))
    one, two = on_threads(1, make), on_threads(2, make)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.tissue, b.tissue)
        np.testing.assert_array_equal(a.attrs["ventricle_ml"], b.attrs["ventricle_ml"])
    np.testing.assert_array_equal(one[0].lesions, two[0].lesions)
    assert one[0].lesion_table.equals(two[0].lesion_table)


def test_as_tensors_returns_the_same_volumes_as_tensors():
    arrays = brain_mri(2, seed=4, voxel_mm=8.0, channels=("T2", "FLAIR"))
    tensors = brain_mri(2, seed=4, voxel_mm=8.0, channels=("T2", "FLAIR"), device="cpu", as_tensors=True)
    for name in ("images", "lesions", "tissue"):
        t, a = getattr(tensors, name), getattr(arrays, name)
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
        np.testing.assert_array_equal(t.numpy(), a)
    assert tensors.lesion_table.equals(arrays.lesion_table) and len(tensors) == 2
    arrays = brain_atrophy(3, seed=4, voxel_mm=8.0)
    tensors = brain_atrophy(3, seed=4, voxel_mm=8.0, as_tensors=True)
    for name in ("images", "labels", "tissue"):
        np.testing.assert_array_equal(getattr(tensors, name).numpy(), getattr(arrays, name))
    np.testing.assert_array_equal(tensors.age, arrays.age)
    assert "control=" in repr(tensors) and len(tensors) == 3


def test_device_noise_stream_keeps_parameters_and_is_reproducible(monkeypatch):
    """On a GPU the voxel noise comes from a torch generator: exercised here on the CPU by forcing that branch."""
    kwargs = dict(seed=6, voxel_mm=8.0, lesion_load=(3, 6))
    reference = brain_mri(2, **kwargs)
    force_device_noise(monkeypatch)
    first, second = brain_mri(2, **kwargs), brain_mri(2, **kwargs)
    np.testing.assert_array_equal(first.images, second.images)       # same seed and device, same volumes
    np.testing.assert_array_equal(first.tissue, reference.tissue)     # per-case draws do not depend on it
    np.testing.assert_array_equal(first.lesions, reference.lesions)
    assert first.lesion_table.equals(reference.lesion_table)         # the CNR is measured before the noise
    for k in reference.attrs:
        np.testing.assert_array_equal(first.attrs[k], reference.attrs[k])
    assert not np.array_equal(first.images, reference.images)        # the voxel noise does
    alone = brain_mri(1, **kwargs)                                    # case i's stream does not depend on n
    np.testing.assert_array_equal(alone.images[0], first.images[0])
    other = brain_mri(2, **{**kwargs, "seed": 7})
    assert not np.array_equal(other.images, first.images)
    atrophy = brain_atrophy(2, seed=6, voxel_mm=8.0)
    monkeypatch.undo()
    np.testing.assert_array_equal(atrophy.tissue, brain_atrophy(2, seed=6, voxel_mm=8.0).tissue)


def test_pixel_noise_keys_the_device_stream_and_keeps_the_2d_stream(monkeypatch):
    """``key=()`` seeds the device generator as before (the 2D generators' streams); each key another stream."""
    seeds = []

    class Recorder:
        def __init__(self, device=None):
            pass

        def manual_seed(self, value):
            seeds.append(value)
            return self

    monkeypatch.setattr(_torch.torch, "Generator", Recorder)
    rng, meta = np.random.default_rng(0), torch.device("meta")
    for key in [(), (0,), (1,)]:
        _torch.PixelNoise(rng, 7, meta, **({"key": key} if key else {}))
    # the first value was the device seed of seed 7 before ``key`` existed
    assert seeds == [5854886135820751653, 2050506467769570321, 6332766002996696864]


def test_device_argument_is_checked():
    with pytest.raises(ParameterError, match="device"):
        brain_mri(1, voxel_mm=8.0, device="tpu:7")
    with pytest.raises(ParameterError, match="device"):
        brain_atrophy(1, voxel_mm=8.0, device="tpu:7")
    with pytest.raises(ParameterError, match="device"):
        load_volumes("phantom", n_train=1, n_val=0, n_test=0, voxel_mm=8.0, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            brain_mri(1, voxel_mm=8.0, device="cuda")


def test_load_volumes_renders_the_phantoms_on_the_device_given():
    kw = dict(n_train=1, n_val=1, n_test=0, voxel_mm=8.0, lesion_load=(2, 4))
    plain, on_cpu = load_volumes("phantom", **kw), load_volumes("phantom", device="cpu", **kw)
    np.testing.assert_array_equal(plain.train[0], on_cpu.train[0])
    assert isinstance(on_cpu.train[0], np.ndarray)


@pytest.mark.parametrize("sigma", [0.3, 0.8, 1.7, 4.0])
def test_blur1d_reflect_equals_scipy_gaussian_filter_on_volumes(sigma):
    """Along each axis in turn, as scipy's gaussian_filter (mode 'reflect', 3 sigma), short axes included (the
    kernel longer than the axis: the mirror repeats)."""
    x = np.random.default_rng(1).random((5, 9, 3)).astype(np.float32)
    got = torch.from_numpy(x)[None]
    for dim in (1, 2, 3):
        got = _torch.blur1d(got, sigma, dim=dim, mode="reflect")
    want = gaussian_filter(x, sigma, truncate=3.0)
    np.testing.assert_allclose(got[0].numpy(), want, atol=2e-6)
    one = _torch.blur1d(torch.from_numpy(x)[None], sigma, dim=2, mode="reflect")[0].numpy()
    np.testing.assert_allclose(one, gaussian_filter1d(x, sigma, axis=1, mode="reflect", truncate=3.0), atol=2e-6)
    nearest = _torch.blur1d(torch.from_numpy(x)[None], sigma, dim=2)[0].numpy()   # the default is unchanged
    np.testing.assert_allclose(nearest, gaussian_filter1d(x, sigma, axis=1, mode="nearest", truncate=3.0),
                               atol=2e-6)
    with pytest.raises(ParameterError, match="mode"):
        _torch.blur1d(torch.from_numpy(x)[None], sigma, mode="wrap")


def test_max_pool_is_grey_dilation_at_the_borders():
    """The lesion contrast is spread over its border by a 3x3x3 max pool: scipy's grey_dilation(size=3),
    edges included."""
    x = np.zeros((6, 7, 5), np.float32)
    x[0, 0, 0], x[5, 3, 4], x[2, 6, 2], x[3, 3, 3] = 0.7, 0.4, 1.3, 0.2
    got = F.max_pool3d(torch.from_numpy(x)[None, None], 3, stride=1, padding=1)[0, 0].numpy()
    np.testing.assert_array_equal(got, grey_dilation(x, size=(3, 3, 3)))


@pytest.mark.parametrize("as_tensors", [False, True])
def test_brain_volumes_keep_every_tensor_on_the_device(as_tensors, monkeypatch):
    """Under the stand-in GPU of ``device_placement_support`` (tensors on the CPU that say they are elsewhere and
    refuse CPU tensors): every branch of the device path, and the same volumes as the CPU with that noise."""
    from device_placement_support import FakeCudaTensor, fake_cuda

    kwargs = dict(seed=8, voxel_mm=8.0, lesion_load=(3, 6), blur=(0.5, 1.0))
    with fake_cuda(monkeypatch) as dev:
        b = brain_mri(2, device=dev, as_tensors=as_tensors, **kwargs)
        a = brain_atrophy(2, seed=8, voxel_mm=8.0, device=dev, as_tensors=as_tensors)
    for t in (b.images, b.lesions, b.tissue, a.images, a.tissue, a.labels):
        assert isinstance(t, FakeCudaTensor if as_tensors else np.ndarray)
    if not as_tensors:
        force_device_noise(monkeypatch)
        on_cpu = brain_mri(2, **kwargs)
        np.testing.assert_allclose(b.images, on_cpu.images, atol=1e-5)
        np.testing.assert_array_equal(b.tissue, on_cpu.tissue)
        np.testing.assert_array_equal(b.lesions, on_cpu.lesions)
        assert b.lesion_table.equals(on_cpu.lesion_table)


def test_load_volumes_keeps_numpy_splits():
    with pytest.raises(ParameterError, match="as_tensors"):
        load_volumes("phantom", n_train=1, n_val=0, n_test=0, voxel_mm=8.0, as_tensors=True)
