"""Device placement of the torch phantom renderers, checked on a machine without a GPU.

The renderers run under :func:`device_placement_support.fake_cuda`: the render device is a stand-in whose
tensors compute on the CPU but report another device, so every ``dev.type != "cpu"`` branch (GPU chunk sizes,
torch sort, ``index_put_`` accumulation, the torch-generator pixel noise) runs, and every operation that
meets one of them fails when a CPU tensor with one or more dimensions is among its arguments.

What it catches: a tensor made on the CPU and not moved to the device (``torch.from_numpy``/``torch.tensor``/
``torch.arange``/``torch.zeros`` without ``device=``, a cached lookup table, an index tensor or kernel) that
meets a device tensor in an operation (arithmetic, ``mm``/``bmm``/``matmul``, ``cat``, ``where``, indexing
writes such as ``index_put_``/``index_add_``/``scatter_``/``index_copy_``, ``gather``, ``grid_sample``,
``conv1d``); ``.numpy()`` on a device tensor (it must go through ``.cpu()``); an operation that adds with atomics
on a GPU (``index_add_``, ``scatter_add_``: other bits on every run of the same seed).

What it cannot catch: code paths the cases below do not reach; a CPU tensor the CPU itself uses alone (fine on
a GPU too, only slower); the device of the ``torch.Generator`` (a CPU one stands in for the GPU's); CUDA-only
limits (memory, kernel support for a dtype, atomics' order, ``non_blocking`` timing, streams); 0-dim CPU tensors
are let through as CUDA lets them through. A CPU index tensor in a read (``t[cpu_index]``) passes, as on CUDA.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from device_placement_support import FAKE, AtomicOnDevice, DeviceMismatch, FakeCudaTensor, fake_cuda
from medlab.data import phantoms as P
from medlab.data.phantoms import _torch
from medlab.data.stream import PhantomStream

CASES = {
    "ct_slice": lambda **kw: P.ct_slice(10, size=32, seed=3, count=4, domain="B", **kw),
    "ct_slice_domain_C": lambda **kw: P.ct_slice(6, size=32, seed=4, domain="C", noise_texture="speckle", **kw),
    "chest_xray": lambda **kw: P.chest_xray(12, size=32, seed=3, marker=True, **kw),
    "chest_xray_variation": lambda **kw: P.chest_xray(12, size=32, seed=5, marker=True, marker_correlation=0.8,
                                                      pose=1.0, deformation=1.0, intensity_mixture=1.0, bias=0.2,
                                                      blur_jitter=1.0, domain="C", **kw),
    "lung_ultrasound": lambda **kw: P.lung_ultrasound(12, size=32, seed=3, probe="mixed", **kw),
    "lung_ultrasound_variation": lambda **kw: P.lung_ultrasound(8, size=32, seed=6, probe="linear", pose=1.0,
                                                                intensity_mixture=1.0, bias=0.2, blur_jitter=1.0,
                                                                fade=0.5, domain="B", **kw),
    "lung_ultrasound_clips": lambda **kw: P.lung_ultrasound_clips(4, frames=4, size=32, seed=3, probe="mixed",
                                                                  pose=1.0, fade=0.5, **kw),
    "us_nodule": lambda **kw: P.us_nodule(10, size=32, seed=3, domain="B", **kw),
    "us_nodule_breast": lambda **kw: P.us_nodule(10, size=96, seed=4, organ="breast", **kw),
    "fundus": lambda **kw: P.fundus(10, size=32, seed=3, **kw),
    "fundus_domain_C": lambda **kw: P.fundus(5, size=48, seed=4, domain="C", **kw),
    "empty": lambda **kw: [P.ct_slice(0, **kw), P.chest_xray(0, **kw), P.lung_ultrasound(0, **kw),
                           P.lung_ultrasound_clips(0, frames=3, **kw), P.us_nodule(0, **kw), P.fundus(0, **kw)],
}


def _tensors(batch):
    return [batch.images, batch.labels, *batch.masks.values()]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("as_tensors", [False, True])
def test_renderers_keep_every_tensor_on_the_device(case, as_tensors, monkeypatch):
    with fake_cuda(monkeypatch) as dev:
        batches = CASES[case](device=dev, as_tensors=as_tensors)
    for batch in batches if isinstance(batches, list) else [batches]:
        _check_batch(batch, as_tensors)


def _check_batch(batch, as_tensors):
    for t in _tensors(batch):
        if as_tensors:
            assert isinstance(t, FakeCudaTensor) and t.device == FAKE
        else:
            assert isinstance(t, np.ndarray)
    for v in batch.attrs.values():
        assert not isinstance(v, torch.Tensor)
    images = batch.images.inner if as_tensors else batch.images
    assert np.isfinite(np.asarray(images)).all()


@pytest.mark.parametrize("case", ["ct_slice", "chest_xray_variation", "lung_ultrasound_clips", "us_nodule",
                                  "fundus"])
def test_the_device_branches_render_the_cpu_phantoms(case, monkeypatch):
    """The stand-in device computes what the CPU does: with the same torch noise (one chunk either way), its
    phantoms equal the CPU's up to float rounding (the GPU branches sort with torch and accumulate with
    ``index_put_``), so the wrapper neither loses an in-place write nor changes an operation."""
    with fake_cuda(monkeypatch) as dev:
        on_device = CASES[case](device=dev)
    noise_init = _torch.PixelNoise.__init__  # fake_cuda's: a CPU generator seeded as on a GPU, any device

    def cpu_with_device_noise(self, rng, seed, device):
        noise_init(self, rng, seed, torch.device("meta"))
        self.device = device

    monkeypatch.setattr(_torch.PixelNoise, "__init__", cpu_with_device_noise)
    on_cpu = CASES[case]()
    np.testing.assert_array_equal(on_device.labels, on_cpu.labels)
    np.testing.assert_allclose(on_device.images, on_cpu.images, atol=2e-3 * max(1.0, np.abs(on_cpu.images).max()))
    for k in on_cpu.masks:
        assert (on_device.masks[k] != on_cpu.masks[k]).mean() < 0.002, k


@pytest.mark.parametrize("kind", ["chest_xray", "ct_slice", "lung_ultrasound", "fundus", "us_nodule"])
@pytest.mark.parametrize("target", ["label", "mask"])
def test_phantom_stream_yields_device_batches(kind, target, monkeypatch):
    with fake_cuda(monkeypatch) as dev:
        stream = PhantomStream(kind, n=10, batch_size=4, size=32, seed=1, target=target, device=dev, block=8)
        batches = list(stream)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    for images, targets in batches:
        assert isinstance(images, FakeCudaTensor) and isinstance(targets, FakeCudaTensor)
        assert images.dtype == torch.float32 and targets.dtype == torch.int64


def test_checker_catches_a_cpu_tensor_meeting_the_device(monkeypatch):
    """The checker itself: a ``from_numpy`` not moved ``.to(dev)`` fails, and so does ``.numpy()`` on the device."""
    def quadric_left_on_cpu(self, coefs, out=None):
        c = torch.from_numpy(np.ascontiguousarray(coefs, np.float32))  # the planted bug: no .to(self.device)
        return (c @ self.basis).view(-1, self.size, self.size)

    with fake_cuda(monkeypatch) as dev:
        x = torch.zeros((2, 3), device=dev)
        with pytest.raises(DeviceMismatch):
            x + torch.from_numpy(np.ones((2, 3), np.float32))
        with pytest.raises(DeviceMismatch):
            x.index_put_((torch.tensor([0, 1]),), torch.ones(3, device=dev))
        with pytest.raises(DeviceMismatch):
            x.view(-1).index_put_((torch.tensor(0),), torch.ones((), device=dev))  # not even a 0-dim index
        with pytest.raises(AtomicOnDevice):
            x.view(-1).index_add_(0, torch.zeros(3, dtype=torch.int64, device=dev), torch.ones(3, device=dev))
        with pytest.raises(TypeError, match="cpu"):
            x.numpy()
        assert (x + torch.tensor(1.0)).device == FAKE  # a 0-dim CPU tensor is fine, as on CUDA
        assert x[torch.tensor([1])].device == FAKE  # and so is reading through a CPU index
        monkeypatch.setattr(_torch.Canvas, "quadric", quadric_left_on_cpu)
        with pytest.raises(DeviceMismatch, match="mm"):
            P.chest_xray(4, size=32, seed=0, device=dev)
