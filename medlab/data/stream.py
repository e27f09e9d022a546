"""Training data drawn on the fly: fresh phantoms every epoch, rendered on the training device.

A fixed training set of phantoms is a data set like any other: a network can
memorise it. Drawing new images every epoch (as SynthSeg does for brain MRI)
gives the network an endless supply of examples from the same distribution,
so what it learns is the task, not the training set. The phantoms are rendered
with torch on the device the model trains on, so a GPU does not wait for a CPU.

:class:`PhantomStream` is an iterable of ``(images, targets)`` batches that
:func:`medlab.train.fit` takes in place of a DataLoader.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["PhantomStream", "STREAM_KINDS"]

#: Phantom kinds rendered with torch on the device (the others are drawn with NumPy on the CPU).
STREAM_KINDS = ("chest_xray", "ct_slice", "lung_ultrasound", "fundus", "us_nodule")


class PhantomStream:
    """Fresh phantoms every epoch, drawn in batches on ``device``: ``for images, targets in stream: ...``.

    Epoch ``e`` (counted from 0, one per ``iter``) draws its images from a seed derived from ``(seed, e)``, so
    two streams with the same arguments yield the same batches on the same device, epoch after epoch, and no
    two epochs repeat an image. Within an epoch the images are drawn ``block`` at a time (each block with its
    own derived seed), so memory stays bounded whatever ``n`` is.

    Args:
        kind: ``chest_xray``, ``ct_slice``, ``lung_ultrasound`` (frames), ``fundus`` (RGB) or ``us_nodule``
            (:data:`STREAM_KINDS`).
        n: images per epoch.
        batch_size: images per batch (the last batch of an epoch may be smaller).
        size: image side in pixels.
        seed: the stream's seed.
        target: ``"label"`` (image class), ``"mask"`` (the phantom's default mask) or a mask name.
        window: for CT (HU) phantoms, the display window that maps HU to ``[0, 1]`` (as
            :class:`medlab.data.PhantomDataset`; None keeps HU).
        device: where the images are rendered and returned (``"auto"``: the GPU when there is one).
        block: images rendered at once (default: 64 batches, at most 8192 images).
        **knobs: passed to the generator (difficulty, domain and variation knobs).

    Attributes:
        epoch: the epoch the next ``iter`` draws (set it to continue a stream where a resumed ``fit`` left off:
            a checkpoint holds the model and optimizer, not the stream).
        class_names: names of the target's values.
    """

    def __init__(self, kind: str, n: int, batch_size: int, size: int = 64, seed: int = 0, target: str = "label",
                 window="wide", device="auto", block: int | None = None, **knobs):
        from .phantoms import _torch
        from . import phantoms

        if kind not in STREAM_KINDS:
            raise ParameterError(f"PhantomStream draws {', '.join(STREAM_KINDS)} on the device, not {kind!r}; "
                                 f"for other kinds, draw a fixed set with medlab.data.make_splits")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"n (images per epoch) must be a positive integer, not {n!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.kind, self.n, self.batch_size, self.size, self.seed = kind, int(n), int(batch_size), int(size), int(seed)
        self.target, self.window, self.knobs = target, window, dict(knobs)
        self.device = _torch.phantom_device(device)
        self.block = int(block) if block else min(8192, 64 * self.batch_size)
        self.block = max(self.batch_size, self.block - self.block % self.batch_size)
        self.epoch = 0
        self._generator = getattr(phantoms, kind)
        probe = self._generator(2, size=self.size, seed=self.seed, **self.knobs)  # checks the knobs now, not mid-fit
        if target == "label":
            self.class_names = list(probe.class_names)
        else:
            name = probe.default_mask if target == "mask" else target
            probe.mask(name)
            self.class_names = list(probe.mask_classes.get(name, []))

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.n // self.batch_size)

    def __repr__(self) -> str:
        return (f"PhantomStream({self.kind!r}, n={self.n} per epoch, batch_size={self.batch_size}, size={self.size}, "
                f"target={self.target!r}, device={str(self.device)!r}, next epoch={self.epoch})")

    def epoch_seed(self, epoch: int, block: int = 0) -> int:
        """The generator seed of one block of one epoch (derived from ``seed``; never equal for two blocks)."""
        state = np.random.SeedSequence(self.seed, spawn_key=(1009, int(epoch), int(block))).generate_state(1)
        return int(state[0])

    def draw(self, n: int, seed: int):
        """``n`` phantoms from ``seed`` on the device: ``(images (n, C, H, W) float32, targets)`` tensors."""
        from .phantoms import window as _window

        batch = self._generator(n, size=self.size, seed=seed, device=self.device, as_tensors=True, **self.knobs)
        images = batch.images
        if batch.units == "HU" and self.window is not None:
            level, width = (self.window, None) if isinstance(self.window, str) else self.window
            images = _window(images, level, width)
        if self.target == "label":
            return images, batch.labels
        return images, batch.mask(None if self.target == "mask" else self.target)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        for b, start in enumerate(range(0, self.n, self.block)):
            images, targets = self.draw(min(self.block, self.n - start), self.epoch_seed(epoch, b))
            for i in range(0, len(images), self.batch_size):
                yield images[i:i + self.batch_size], targets[i:i + self.batch_size]
