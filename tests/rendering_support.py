"""Shared steps of the phantom-rendering tests: the GPU noise branch forced on the CPU, and a thread count."""
from __future__ import annotations

import numpy as np
import torch

from medlab.data.phantoms import _torch


def force_device_noise(monkeypatch) -> None:
    """Make every ``PixelNoise`` draw from a torch generator seeded as on a GPU, while rendering on the CPU."""
    original = _torch.PixelNoise.__init__

    def torch_stream(self, rng, seed, device, key=()):
        original(self, rng, seed, device, key=key)
        self.gen = torch.Generator().manual_seed(_torch.device_seed(seed, key))

    monkeypatch.setattr(_torch.PixelNoise, "__init__", torch_stream)


def on_threads(threads: int, make):
    """``make()`` with torch limited to ``threads`` CPU threads; the previous number is restored."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return make()
    finally:
        torch.set_num_threads(before)


def assert_same_pixels(one, two) -> None:
    """Two phantom batches with the same images and masks, byte for byte."""
    np.testing.assert_array_equal(one.images, two.images)
    assert set(one.masks) == set(two.masks)
    for k in one.masks:
        np.testing.assert_array_equal(one.masks[k], two.masks[k])


def assert_tensors_equal_arrays(tensors, arrays) -> None:
    """A batch made with ``as_tensors=True`` holds the same phantoms as one made without: images, labels and
    int64 masks as tensors, attrs as they are."""
    assert isinstance(tensors.images, torch.Tensor) and tuple(tensors.images.shape) == arrays.images.shape
    np.testing.assert_array_equal(tensors.images.numpy(), arrays.images)
    np.testing.assert_array_equal(tensors.labels.numpy(), arrays.labels)
    assert set(tensors.masks) == set(arrays.masks)
    for k in arrays.masks:
        assert tensors.masks[k].dtype == torch.int64
        np.testing.assert_array_equal(tensors.masks[k].numpy(), arrays.masks[k])
    for k in arrays.attrs:
        np.testing.assert_array_equal(np.asarray(tensors.attrs[k]), np.asarray(arrays.attrs[k]))
