"""A stand-in GPU for a machine without one: tensors that compute on the CPU but live, they say, on another device.

:func:`fake_cuda` is a context in which

* the renderers accept ``device=FAKE`` (``phantom_device`` is patched to pass it through), and a torch call given
  that device (a factory such as ``torch.empty``/``torch.arange``/``torch.as_tensor``, ``Tensor.to``) makes its
  tensor on the CPU and wraps it in a :class:`FakeCudaTensor`, whose ``.device`` is ``FAKE``. ``FAKE`` is the
  ``meta`` device, not ``cuda``: torch would start CUDA's device guard for a tensor that says ``cuda``. Its type
  is not ``"cpu"``, so the renderers take their GPU branches (``dev.type != "cpu"``: GPU chunk sizes, torch
  sort, ``index_put_`` accumulation, the torch-generator pixel noise);
* every operation that meets a :class:`FakeCudaTensor` checks its tensor arguments as CUDA would: a CPU tensor
  with one or more dimensions among them (a ``torch.from_numpy`` not moved ``.to(dev)``, a lookup table, an
  index, a kernel made without ``device=``) raises :class:`DeviceMismatch` naming the operation. 0-dim CPU
  tensors and Python scalars pass (CUDA takes them in elementwise operations) except in index writes, gathers
  and matrix products; CPU index tensors in a read (``t[cpu_index]``) pass, as does either side of ``copy_``;
* an operation whose CUDA kernel adds with atomics in any order (``index_add_``, ``scatter_add_``, ...) raises
  :class:`AtomicOnDevice`: same seed and device would not give the same bits;
* ``.numpy()`` (and ``np.asarray``) on a :class:`FakeCudaTensor` fails as on CUDA; ``.cpu()``, ``.item()``,
  ``float()`` and ``.tolist()`` work.

The PixelNoise generator is a CPU ``torch.Generator`` (a real one on ``cuda`` cannot be made here), so the
generator's own device is not checked. Nothing about speed, memory, streams or ``non_blocking`` timing is.
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from medlab.data.phantoms import _torch

FAKE = torch.device("meta")  # reported by the wrapped tensors: a "cuda" one would start CUDA's device guard
CPU = torch.device("cpu")
_READ_INDEX_OPS = {"aten.index.Tensor"}  # t[cpu_index] reads fine on CUDA
_CROSS_DEVICE_OPS = {"aten.copy_.default", "aten._to_copy.default", "aten.lift_fresh.default",
                     "aten.lift_fresh_copy.default"}


#: ops that take no CPU tensor at all, not even a 0-dim one, beside a CUDA tensor (indices, matrix products)
_STRICT_PREFIXES = ("aten.index_put", "aten.index_add", "aten.index_copy", "aten.index_select", "aten.scatter",
                    "aten.gather", "aten.take", "aten.put", "aten.mm", "aten.bmm", "aten.addmm", "aten.baddbmm",
                    "aten.convolution", "aten.grid_sampler", "aten.embedding")
#: ops whose CUDA kernels add with atomics, in any order (different bits from run to run, and an error or a
#: warning under ``torch.use_deterministic_algorithms``): ``index_put_(..., accumulate=True)`` sorts instead
_ATOMIC_PREFIXES = ("aten.index_add", "aten.scatter_add", "aten.scatter_reduce", "aten.put", "aten.histc",
                    "aten.bincount", "aten.index_reduce")


class DeviceMismatch(RuntimeError):
    """A CPU tensor met a (fake) CUDA tensor in an operation that CUDA would refuse."""


class AtomicOnDevice(RuntimeError):
    """An operation that adds in any order on a GPU (not reproducible) ran on the device."""


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor (``.inner``) that reports ``FAKE`` as its device."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        assert not isinstance(inner, FakeCudaTensor) and inner.device.type == "cpu"
        r = torch.Tensor._make_wrapper_subclass(cls, inner.size(), strides=inner.stride(),
                                                storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                device=FAKE, requires_grad=False)
        r.inner = inner
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self):
        return f"FakeCudaTensor({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name == "aten._to_copy.default" and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu":  # .cpu(): a real CPU tensor comes out
            kw = dict(kwargs)
            return func(args[0].inner, *args[1:], **kw)
        if name.startswith(_ATOMIC_PREFIXES):
            raise AtomicOnDevice(f"{name} on the device: its CUDA kernel adds in any order (same seed, other "
                                 f"bits); use index_put_(..., accumulate=True)")
        if name not in _CROSS_DEVICE_OPS:
            _check(name, args, kwargs, allow_cpu_index=name in _READ_INDEX_OPS,
                   strict=name.startswith(_STRICT_PREFIXES))
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if name == "aten._to_copy.default" and "device" not in kwargs and not isinstance(args[0], FakeCudaTensor):
            return out  # a CPU tensor's dtype change stays on the CPU
        return tree_map(lambda t: FakeCudaTensor(t) if isinstance(t, torch.Tensor) and t.device.type == "cpu"
                        else t, out)

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")


def _unwrap(t):
    return t.inner if isinstance(t, FakeCudaTensor) else t


def _check(name, args, kwargs, allow_cpu_index=False, strict=False) -> None:
    """Raise :class:`DeviceMismatch` if a CPU tensor of one or more dimensions (any CPU tensor, when ``strict``)
    is among the arguments (the fake device's own tensors and 0-dim CPU tensors pass; with ``allow_cpu_index``,
    all but the first)."""
    for t in tree_flatten((args, kwargs))[0]:
        if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor) and (t.dim() > 0 or strict):
            if allow_cpu_index and t is not args[0]:
                continue
            raise DeviceMismatch(f"{name}: a CPU tensor {tuple(t.shape)} {t.dtype} meets a tensor on the device "
                                 f"(on a GPU: 'Expected all tensors to be on the same device')")


def _is_fake(device) -> bool:
    try:
        return device is not None and not isinstance(device, torch.dtype) and torch.device(device).type == FAKE.type
    except (RuntimeError, TypeError):
        return False


class _FakeCudaMode(TorchFunctionMode):
    """Routes ``device="cuda"`` to the CPU and wraps what comes out in :class:`FakeCudaTensor`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "cuda":  # Tensor.cuda()
            self_ = args[0]
            return self_ if isinstance(self_, FakeCudaTensor) else FakeCudaTensor(self_.clone())
        if name == "numpy" and args and isinstance(args[0], FakeCudaTensor):
            return args[0].numpy()
        if any(isinstance(t, FakeCudaTensor) for t in tree_flatten((args, kwargs))[0]) \
                and (kwargs.get("out") is not None or name in ("tolist", "where")):
            # handled here, on the CPU tensors inside: composite ops such as matmul(out=) would see the
            # wrappers' shared empty storage as overlapping, tolist() refuses subclasses, and where() with a
            # Python number makes that number a tensor on the wrapper's device before dispatch
            _check(name, args, kwargs)
            out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
            return out if name == "tolist" else tree_map(
                lambda t: FakeCudaTensor(t) if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor)
                else t, out)
        fake = False
        if _is_fake(kwargs.get("device")):
            kwargs["device"], fake = CPU, True
        if name == "to":
            args = list(args)
            for i in range(1, len(args)):
                if _is_fake(args[i]):
                    args[i], fake = CPU, True
            if fake and isinstance(args[0], FakeCudaTensor):  # already there: only a dtype change, if any
                kwargs.pop("device", None)
                args = [a for a in args if not (isinstance(a, torch.device) and a == CPU)]
                kwargs.pop("non_blocking", None)
                return func(*args, **kwargs) if len(args) > 1 or kwargs else args[0]
        out = func(*args, **kwargs)
        if fake:
            out = tree_map(lambda t: FakeCudaTensor(t.clone() if name in ("to", "as_tensor") else t)
                           if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor) else t, out)
        return out


@contextlib.contextmanager
def fake_cuda(monkeypatch):
    """Render with ``device=FAKE`` inside: see the module docstring. PixelNoise draws from a CPU generator."""
    original = _torch.PixelNoise.__init__

    def init(self, rng, seed, device, key=()):
        original(self, rng, seed, CPU, key=key)  # a real cuda Generator cannot be made here
        self.device = device
        if device.type != "cpu":
            self.gen = torch.Generator().manual_seed(_torch.device_seed(seed, key))

    monkeypatch.setattr(_torch.PixelNoise, "__init__", init)
    resolve = _torch.phantom_device
    for module in list(sys.modules.values()):  # the renderers' own bindings too
        if getattr(module, "__name__", "").startswith("medlab.") and getattr(module, "phantom_device", None) is resolve:
            monkeypatch.setattr(module, "phantom_device", lambda d: FAKE if d == FAKE else resolve(d))
    # torch's deterministic mode (which medlab.setup turns on, and an earlier test may have left on) sends
    # F.interpolate on a CUDA tensor through a Python decomposition whose index tensors are made on the input's
    # device: real CUDA ones on a GPU, but plain meta tensors here, which the checks would take for CPU tensors.
    # Inside, the mode is off; the placement it would check is torch's own.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        with _FakeCudaMode():
            yield FAKE
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
