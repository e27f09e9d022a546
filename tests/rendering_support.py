"""Shared steps of the phantom-rendering tests: the GPU noise branch forced on the CPU, and a thread count."""
from __future__ import annotations

import numpy as np
import torch

from medlab.data.phantoms import _torch


def force_device_noise(monkeypatch) -> None:
    """Make every ``PixelNoise`` draw from a torch generator, as on a GPU, while rendering on the CPU."""
    original = _torch.PixelNoise.__init__

    def torch_stream(self, rng, seed, device):
        original(self, rng, seed, device)
        state = np.random.SeedSequence(int(seed), spawn_key=(11,)).generate_state(1)
        self.gen = torch.Generator().manual_seed(int(state[0]))

    monkeypatch.setattr(_torch.PixelNoise, "__init__", torch_stream)


def on_threads(threads: int, make):
    """``make()`` with torch limited to ``threads`` CPU threads; the previous number is restored."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return make()
    finally:
        torch.set_num_threads(before)
