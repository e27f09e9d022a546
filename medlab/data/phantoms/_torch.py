"""Rendering primitives in torch, so that phantoms are drawn in batches on the training device.

A generator draws its per-image parameters (sizes, positions, intensities) with
NumPy from ``seed``, as before, and then renders the pixels with the tensors
and functions here on ``device``. The pieces:

* :class:`Canvas`: the pixel grid of one image size on one device, and the
  quadratic basis ``x0², x0·y0, y0², x0, y0, 1`` of its coordinates. An ellipse
  seen through a per-image rotation, scale and shift is a quadratic form of the
  pixel coordinates, so its squared radius for a whole batch is one small matrix
  product (:meth:`Canvas.quadric`) instead of a dozen passes over the images.
* :class:`Pose`: the per-image affine map from the pixel grid to the patient's
  coordinates, and the coefficients of ellipses and lines seen through it.
* :class:`PixelNoise`: the random numbers drawn per pixel. On the CPU they come
  from the generator's NumPy stream, in the order the NumPy renderer drew them,
  so that the images on the CPU are those the NumPy renderer made (up to float
  rounding); on other devices they come from a torch generator on the device,
  seeded from ``seed``, because drawing millions of numbers on the CPU and
  copying them would be the bottleneck. Same seed and device, same images.
* :func:`ramp_`, :func:`blur`, :func:`resize`, :func:`smooth_field`,
  :func:`apply_domain`: the torch versions of the NumPy helpers in ``_common``.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ParameterError

__all__ = ["phantom_device", "Canvas", "Scratch", "Pose", "shift", "ramp_", "ramp_coefficients", "PixelNoise",
           "device_seed", "blur", "resize", "upsample", "smooth_field", "apply_domain", "field_cells", "render_chunks",
           "chunk_images", "col", "to_numpy", "lerp_", "blur1d", "binomial", "speckle", "gauss_"]


def phantom_device(device) -> torch.device:
    """The device phantoms are rendered on: ``None`` or ``"cpu"`` is the CPU, ``"auto"`` the CUDA GPU when there is one.

    Apple's ``mps`` is refused (``"auto"`` never picks it): the renderers compute positions and noise in float64,
    which it lacks.
    """
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ParameterError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:0' or a torch.device, "
                                 f"not {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ParameterError(f"device={device!r}: phantoms render on the CPU or a CUDA GPU ({resolved.type} lacks "
                             f"the float64 arithmetic they use); use device='cpu' and move the images to "
                             f"{resolved.type} afterwards")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but torch sees no CUDA GPU here; use device='cpu' or 'auto'")
    return resolved


def chunk_images(size: int, device: torch.device, cpu_pixels: int = 2 ** 18) -> int:
    """Images per rendering chunk: about ``cpu_pixels`` pixels on a CPU, 2^24 on a GPU (at least 4 images).

    On the CPU the chunk is part of the random stream: each chunk draws its pixel noise in turn, so this size
    (that of medlab's NumPy renderer for the generator: 2^18 pixels for most, 2^17 for the lung ultrasound, 2^16
    for the fundus) is what keeps the CPU images equal to that renderer's. Do not change it.
    """
    pixels = cpu_pixels if device.type == "cpu" else 2 ** 24
    return max(4, pixels // (size * size))


def render_chunks(n: int, step: int, device: torch.device, draw, render) -> list:
    """Render ``n`` images ``step`` at a time: ``[render(start, stop, draw(start, stop)) for each chunk]``.

    ``draw`` takes a chunk's random numbers, in chunk order; ``render`` turns them into pixels. Each operation
    over a chunk uses torch's threads (``torch.set_num_threads``). Rendering chunks in parallel Python threads
    instead, one core each, was slower on a quiet 2-core machine (4,500-6,000 against 6,000-6,600 images/s at
    64 px), though it degrades less on a machine busy with other work.
    """
    return [render(s, min(n, s + step), draw(s, min(n, s + step))) for s in range(0, n, step)]


def col(values, device, dtype=torch.float32) -> torch.Tensor:
    """Per-image values (NumPy, list or tensor) as ``(N, 1, 1)`` on ``device`` for broadcasting against images."""
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device).reshape(-1, 1, 1)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor on any device as a NumPy array."""
    return t.detach().cpu().numpy()


class Canvas:
    """The pixel grid of ``size x size`` images on ``device``.

    Attributes:
        y0, x0: pixel-centre coordinates in ``[-1, 1]``, shapes ``(1, size, 1)`` and ``(1, 1, size)``.
        basis: ``(6, size * size)`` float32: ``x0², x0·y0, y0², x0, y0, 1`` at every pixel.
    """

    def __init__(self, size: int, device: torch.device):
        self.size, self.device = int(size), device
        c = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2.0 - 1.0
        self.y0, self.x0 = c.view(1, -1, 1), c.view(1, 1, -1)
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        self.basis = torch.stack([xx * xx, xx * yy, yy * yy, xx, yy, torch.ones_like(xx)]).reshape(6, -1)

    def quadric(self, coefs: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 6)`` coefficients on the basis -> ``(N, size, size)`` float32 values (one matrix product), in
        ``out`` when given (a contiguous float32 tensor of ``N · size²`` elements: reusing one saves the page
        faults of a fresh tensor on a CPU)."""
        c = torch.from_numpy(np.ascontiguousarray(coefs, np.float32)).to(self.device, non_blocking=True)
        if out is None:
            return (c @ self.basis).view(-1, self.size, self.size)
        return torch.mm(c, self.basis, out=out.view(len(c), -1)).view(-1, self.size, self.size)

    def ramp(self, coefs: np.ndarray, width: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """``ramp(q, width)`` of the quadric ``q`` with ``coefs``: the affine step folded into the product
        (into ``out`` when given, as :meth:`quadric`)."""
        return self.quadric(ramp_coefficients(coefs, width), out).clamp_(0.0, 1.0)


class Scratch:
    """Reusable float32 work tensors by name: ``scratch(name, *shape)`` is a contiguous view of the tensor kept
    under ``name``, grown when a larger shape is asked for (its contents are whatever was left in it).

    On a CPU a fresh tensor of a megabyte costs as much as several passes over it (the operating system maps
    and zeroes its pages on first touch); rendering chunk after chunk into the same tensors avoids that. One
    per thread: two threads must not share one.
    """

    def __init__(self, device: torch.device):
        self.device, self.store = device, {}

    def __call__(self, name: str, *shape: int) -> torch.Tensor:
        numel = math.prod(shape)
        t = self.store.get(name)
        if t is None or t.numel() < numel:
            t = self.store[name] = torch.empty(numel, device=self.device)
        return t[:numel].view(shape)


class Pose:
    """Per-image affine map from the pixel grid to patient coordinates: ``x = X · (x0, y0, 1)``, ``y = Y · (...)``.

    ``X`` and ``Y`` are float64 NumPy ``(N, 3)`` arrays (the coefficient arithmetic is tiny: NumPy does it faster
    than launching torch operations). :meth:`ellipse` and :meth:`line` give the coefficients, on the
    :class:`Canvas` basis, of an ellipse's squared radius and of a linear function in patient coordinates
    (``canvas.quadric(pose.line(a=1.0))`` is ``x`` at every pixel).
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray):
        self.X, self.Y = X, Y

    @classmethod
    def rotation(cls, angle, scale, tx, ty) -> "Pose":
        """The phantoms' pose: ``x = (cos a · x0 - sin a · y0 - tx) / s``, ``y = (sin a · x0 + cos a · y0 - ty) / s``."""
        a, s = np.asarray(angle, np.float64), np.asarray(scale, np.float64)
        ca, sa = np.cos(a) / s, np.sin(a) / s
        tx, ty = np.asarray(tx, np.float64), np.asarray(ty, np.float64)
        return cls(np.stack([ca, -sa, -tx / s], 1), np.stack([sa, ca, -ty / s], 1))

    def __getitem__(self, index) -> "Pose":
        return Pose(self.X[index], self.Y[index])

    def line(self, a=0.0, b=0.0, c=0.0) -> np.ndarray:
        """Coefficients of ``a·x + b·y + c`` (``a``, ``b``, ``c`` scalars or per-image arrays)."""
        L = _as_col(a) * self.X + _as_col(b) * self.Y
        out = np.zeros((len(L), 6))
        out[:, 3:] = L
        out[:, 5] += np.asarray(c, np.float64)
        return out

    def ellipse(self, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
        """Coefficients of the squared normalised radius of an ellipse (``< 1`` inside), as ``ellipse_r2``.

        ``cy``, ``cx``, ``ry``, ``rx`` and ``angle`` (radians) are scalars or per-image arrays.
        """
        dx, dy = self.X.copy(), self.Y.copy()
        dx[:, 2] -= np.asarray(cx, np.float64)
        dy[:, 2] -= np.asarray(cy, np.float64)
        if np.any(np.asarray(angle) != 0):
            c, s = _as_col(np.cos(angle)), _as_col(np.sin(angle))
            dx, dy = c * dx + s * dy, c * dy - s * dx
        p, q = dx / _as_col(rx), dy / _as_col(ry)
        return np.stack([p[:, 0] ** 2 + q[:, 0] ** 2, 2 * (p[:, 0] * p[:, 1] + q[:, 0] * q[:, 1]),
                         p[:, 1] ** 2 + q[:, 1] ** 2, 2 * (p[:, 0] * p[:, 2] + q[:, 0] * q[:, 2]),
                         2 * (p[:, 1] * p[:, 2] + q[:, 1] * q[:, 2]), p[:, 2] ** 2 + q[:, 2] ** 2], 1)


def ramp_coefficients(coefs: np.ndarray, width: float) -> np.ndarray:
    """Coefficients of ``0.5 - q / width`` for the quadric ``q``: clamped to ``[0, 1]``, that is ``ramp(q, width)``."""
    c = coefs * (-1.0 / width)
    c[:, 5] += 0.5
    return c


def shift(q: np.ndarray, c) -> np.ndarray:
    """Coefficients of the quadric ``q - c`` (``c`` a number or one per image)."""
    out = q.copy()
    out[:, 5] -= np.asarray(c, np.float64)
    return out


def _as_col(v):
    """A scalar, or per-image values as a float64 ``(N, 1)`` column for the coefficient arithmetic."""
    v = np.asarray(v, np.float64)
    return v.reshape(-1, 1) if v.ndim >= 1 else float(v)


def ramp_(d: torch.Tensor, width) -> torch.Tensor:
    """A linear 0-to-1 ramp (anti-aliased edge) in place: 1 where ``d <= -width/2``, 0 where ``d >= width/2``
    (``d`` is overwritten and returned; ``_common.ramp`` is the NumPy version). ``width``: a number, or a tensor
    that broadcasts against ``d`` (one width per image, ``(N, 1, 1)``)."""
    return d.mul_(-1.0 / width).add_(0.5).clamp_(0.0, 1.0)


def gauss_(u: torch.Tensor) -> torch.Tensor:
    """``exp(-u²)`` in place, ``u²`` clipped at 80 (below ``e^-80`` torch's CPU exp takes a slow path; 1.8e-35
    is 0 here)."""
    return u.square_().clamp_max_(80.0).neg_().exp_()


def device_seed(seed: int, key: tuple = ()) -> int:
    """The seed of :class:`PixelNoise`'s generator on a device other than the CPU (a stream of its own for each
    ``seed`` and ``key``, never that of ``default_rng(seed)``)."""
    spawn = (11,) + tuple(int(k) for k in key)
    state = np.random.SeedSequence(int(seed), spawn_key=spawn).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


class PixelNoise:
    """The random numbers of the pixel fields: the NumPy stream ``rng`` on the CPU, a torch generator elsewhere.

    On the CPU every draw is taken from ``rng`` in the order of the calls, exactly as the NumPy renderer drew
    them. On another device the draws come from a generator on that device seeded from ``seed`` (a stream of its
    own, not ``rng``'s), and ``rng`` is not touched. ``key``: extra integers that tell apart the device streams
    of one ``seed`` (the brain volumes give each case ``key=(i,)``); the default ``()`` is the 2D generators'
    stream.
    """

    def __init__(self, rng: np.random.Generator, seed: int, device: torch.device, key: tuple = ()):
        self.rng, self.device = rng, device
        self.gen = None
        if device.type != "cpu":
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(device_seed(seed, key))

    def standard_normal(self, shape) -> torch.Tensor:
        """float32 standard normal numbers (NumPy: ``rng.standard_normal(shape, dtype=float32)``)."""
        if self.gen is None:
            return torch.from_numpy(self.rng.standard_normal(shape, dtype=np.float32))
        return torch.randn(shape, generator=self.gen, device=self.device)

    def normal(self, loc, scale, shape) -> torch.Tensor:
        """float64 normal numbers (NumPy: ``rng.normal(loc, scale, shape)``)."""
        if self.gen is None:
            return torch.from_numpy(self.rng.normal(loc, scale, shape))
        return torch.randn(shape, generator=self.gen, device=self.device, dtype=torch.float64) * scale + loc

    def uniform(self, low, high, shape) -> torch.Tensor:
        """float64 uniform numbers in ``[low, high)`` (NumPy: ``rng.uniform(low, high, shape)``)."""
        if self.gen is None:
            return torch.from_numpy(self.rng.uniform(low, high, shape))
        return torch.rand(shape, generator=self.gen, device=self.device, dtype=torch.float64) * (high - low) + low


def resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """Resize a stack ``(N, h, w)`` to ``(N, size, size)`` (antialiased when it shrinks), float32."""
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if tuple(x.shape[-2:]) == shape:
        return x.float()
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(x.float()[:, None], size=shape, mode=mode,
                        antialias=mode in ("bilinear", "bicubic") and shape[0] < x.shape[-2], **kwargs)
    return out[:, 0]


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of ``(N, h, h)`` to ``(N, size, size)`` as :func:`resize` (``size >= h``), by two
    matrix products: several times faster than ``F.interpolate`` on a CPU, equal up to float rounding."""
    h = x.shape[-1]
    if h == size:
        return x
    if h > size:
        return resize(x, size)
    R = _upsample_matrix(h, size, x.device)
    return torch.matmul(torch.matmul(R, x), R.T)


@functools.lru_cache(maxsize=32)
def _upsample_matrix(n_in: int, n_out: int, device) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, ``align_corners=False``, edges clamped."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    w1 = src - i0
    R = torch.zeros(n_out, n_in, dtype=torch.float64)
    R.index_put_((torch.arange(n_out), i0), 1.0 - w1, accumulate=True)
    R.index_put_((torch.arange(n_out), i1), w1, accumulate=True)
    return R.to(device=device, dtype=torch.float32)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, 2 radius + 1)`` normalised Gaussian kernels (a zero sigma gives the identity)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigmas.device)
    s = sigmas.to(torch.float64).clamp_min(1e-12)[:, None]
    k = torch.exp(-0.5 * (t / s) ** 2)
    if radius:  # scipy's kernel reaches int(3 sigma + 0.5) pixels: zero the rest for smaller sigmas
        k = k * (t.abs()[None] <= (3.0 * s + 0.5).floor())
    return (k / k.sum(1, keepdim=True)).to(torch.float32)


def blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Gaussian blur of a stack ``(N, H, W)`` as scipy's ``gaussian_filter1d`` (mode ``nearest``, 3 sigma) along the
    rows, then the columns; float32, a new tensor.

    ``sigma`` in pixels: a number, or one per image (a tensor or array of length ``N``).
    """
    return blur1d(blur1d(x, sigma, dim=-2), sigma, dim=-1)


def field_cells(noise: PixelNoise, n: int, cells: int) -> torch.Tensor:
    """The random grid behind :func:`smooth_field`: ``(n, cells + 2, cells + 2)`` standard normal numbers."""
    return noise.normal(0.0, 1.0, (n, cells + 2, cells + 2)).to(device=noise.device, dtype=torch.float32)


def smooth_field(low: torch.Tensor, size: int, out: torch.Tensor | None = None,
                 scratch: "Scratch | None" = None) -> torch.Tensor:
    """Smooth random fields ``(N, size, size)``, zero mean and unit std per image (as ``_common.smooth_field``).

    ``low`` is the ``(N, cells + 2, cells + 2)`` grid of :func:`field_cells`, upsampled bilinearly: features
    about ``size / cells`` pixels across. ``out``: a contiguous ``(N, size, size)`` float32 tensor to write
    the field into (then only its window of the upsampling is computed: the same field up to float rounding);
    ``scratch``: a :class:`Scratch` for the temporaries.
    """
    cells = low.shape[-1] - 2
    n, n_up = len(low), size * (cells + 2) // cells
    m = (n_up - size) // 2
    if out is not None and low.shape[-1] < n_up:  # only the kept window: its rows of the upsampling matrix
        R = _upsample_matrix(low.shape[-1], n_up, low.device)[m:m + size]
        f = torch.matmul(torch.matmul(R, low), R.T, out=out)
        f.sub_(f.mean(dim=(1, 2), keepdim=True))
    else:
        f = upsample(low, n_up)[:, m:m + size, m:m + size]
        f = f - f.mean(dim=(1, 2), keepdim=True)
    sq = f.square() if scratch is None else torch.mul(f, f, out=scratch("smooth_field.square", n, size, size))
    return f.div_(sq.mean(dim=(1, 2), keepdim=True).sqrt_().add_(1e-6))


def apply_domain(clean: torch.Tensor, z: torch.Tensor, dom, sigma_noise: float, reference: float = 0.0,
                 offset_unit: float = 1.0, mid: float = 0.5) -> torch.Tensor:
    """Render a clean stack ``(N, H, W)`` through a scanner ``dom`` (as ``_common.apply_domain``), in place.

    ``z``: the stack's standard normal noise, ``(N, H, W)`` (``noise.standard_normal(shape)``, always drawn, so
    that a knob never changes the rest of the sample).
    """
    n, h, w = clean.shape
    out = clean
    if dom.resolution < 1.0:
        low = max(4, int(round(h * dom.resolution)))
        out = resize(resize(out, low), h)
    if dom.blur > 0:
        out = blur(out, dom.blur)
    if dom.intensity_scale != 1.0 or dom.intensity_offset != 0.0:
        out = (out - reference).mul_(dom.intensity_scale).add_(reference + dom.intensity_offset * offset_unit)
    sigma = sigma_noise * dom.noise_gain
    if sigma > 0:
        if dom.noise_texture == "correlated":
            z = blur(z, 1.0)
            z /= z.std(correction=0) + 1e-6
            out = out.add_(z, alpha=sigma)
        elif dom.noise_texture == "speckle":
            out = out.addcmul_(z, (out - reference).clamp_min_(0.0), value=sigma / (mid - reference))
        else:
            out = out.add_(z, alpha=sigma)
    return out


def lerp_(img: torch.Tensor, weight: torch.Tensor, value) -> torch.Tensor:
    """``img += weight * (value - img)`` in place (``value`` a number or a tensor)."""
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(float(value), dtype=img.dtype, device=img.device)
    return img.lerp_(value, weight)  # ``value`` broadcasts (a 0-d tensor is faster than an expanded one)


def blur1d(x: torch.Tensor, sigma, dim: int = -1, mode: str = "nearest") -> torch.Tensor:
    """Gaussian blur of a stack ``(N, ...)`` along one axis ``dim``, as scipy's ``gaussian_filter1d`` (3 sigma);
    float32, a new tensor.

    ``sigma`` in pixels: a number, or one per image (length ``N``; 0 leaves that image as it is). Two calls give
    an anisotropic blur (``_common.blur(x, (sy, sx))`` is ``blur1d(blur1d(x, sy, -2), sx, -1)``); one call per
    axis blurs volumes. ``mode``: the edges as scipy's ``mode``: ``"nearest"`` (the edge value repeated) or
    ``"reflect"`` (mirrored about the edge, the edge value included: ``d c b a | a b c d``; scipy's
    ``gaussian_filter`` default).
    """
    if mode not in ("nearest", "reflect"):
        raise ParameterError(f"blur mode must be 'nearest' or 'reflect', not {mode!r}")
    s = torch.as_tensor(np.asarray(sigma, np.float64) if not isinstance(sigma, torch.Tensor) else sigma,
                        device=x.device).reshape(-1)
    if len(x) == 0 or float(s.max()) <= 0:
        return x.float().clone()
    xt = x.float().movedim(dim, -1)
    n, length = xt.shape[0], xt.shape[-1]
    radius = int(3.0 * float(s.max()) + 0.5)
    k = _gaussian_kernels(s.expand(n) if len(s) == 1 else s, radius)  # (N, 2 radius + 1)
    rows = xt.numel() // max(1, n * length)
    t = xt.reshape(1, n * rows, length)
    if mode == "nearest":
        t = F.pad(t, (radius, radius), mode="replicate")
    else:  # half-sample symmetric, repeated with period 2 * length when the kernel is longer than the axis
        j = torch.arange(-radius, length + radius, device=x.device).remainder_(2 * length)
        t = t.index_select(-1, torch.where(j >= length, 2 * length - 1 - j, j))
    if len(s) == 1:  # one kernel: a weighted sum of shifted copies (faster than a grouped convolution on a CPU)
        w = k[0].tolist()
        out = t[..., 0:length] * w[0]
        for i in range(1, 2 * radius + 1):
            out.add_(t[..., i:i + length], alpha=w[i])
        return out.reshape(xt.shape).movedim(-1, dim)
    out = F.conv1d(t, k.repeat_interleave(rows, 0)[:, None], groups=n * rows)
    return out.reshape(xt.shape).movedim(-1, dim)


def binomial(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One ``[1, 2, 1] / 4`` smoothing pass along ``dim`` (edges repeated), a new tensor: the NumPy phantoms'
    pass, with the same float operations in the same order (so the same bits)."""
    x = x.movedim(dim, -1)
    out = torch.empty_like(x)
    torch.add(x[..., :-2], x[..., 2:], out=out[..., 1:-1])
    out[..., 1:-1].add_(x[..., 1:-1], alpha=2.0)
    out[..., 0] = x[..., 0] * 3.0 + x[..., 1]
    out[..., -1] = x[..., -1] * 3.0 + x[..., -2]
    return out.mul_(0.25).movedim(-1, dim)


def speckle(noise: PixelNoise, shape, lateral_passes: int = 2) -> torch.Tensor:
    """Fully developed ultrasound speckle ``shape`` (``(..., H, W)``) on ``noise.device``, mean 1 per image.

    The envelope of a complex Gaussian field (two standard normal fields drawn from ``noise``, real part first)
    smoothed by a point-spread function longer laterally than axially: one :func:`binomial` pass along the
    rows' axis (depth), ``lateral_passes`` along the columns. On the CPU with a NumPy stream, the field of the
    earlier NumPy renderer (its ``speckle_field(rng, shape, lateral_passes)``) up to float rounding.
    """
    re, im = noise.standard_normal(shape), noise.standard_normal(shape)
    re, im = re.to(noise.device), im.to(noise.device)
    re, im = binomial(re, -2), binomial(im, -2)
    for _ in range(lateral_passes):
        re, im = binomial(re, -1), binomial(im, -1)
    env = re.mul_(re).add_(im.mul_(im)).sqrt_()
    return env.div_(env.mean(dim=(-2, -1), keepdim=True))
