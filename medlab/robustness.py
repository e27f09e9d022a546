"""Adversarial examples: FGSM and PGD, written out so that a lesson can read them.

An adversarial example is an input changed by an amount too small to matter to
a person that changes a model's answer (Szegedy et al., 2013). Two classic
ways to find one, both bounded in the L-infinity norm (no pixel moves by more
than ``epsilon``):

FGSM (fast gradient sign method; Goodfellow, Shlens, Szegedy, ICLR 2015)
    one step: ``x_adv = clip(x + epsilon * sign(grad_x loss(model(x), y)))``.
PGD (projected gradient descent; Madry et al., ICLR 2018)
    start at a random point of the epsilon-ball around ``x``, then ``steps``
    times: move by ``alpha * sign(grad)``, project back into the ball, clip to
    the valid range. It is FGSM iterated, and at least as strong.

Conventions:

* Inputs are images in their **valid range** (``bounds``, ``(0, 1)`` by
  default): the attacked image is clipped to it, as a real image must be.
  That is why the model should normalise inside itself
  (:class:`NormalisedModel`): epsilon is then measured in image units, not in
  units of a data set's standard deviation.
* The loss is cross-entropy with the **true** label (untargeted): the attack
  pushes every case away from its own class. A model with one output logit
  gets binary cross-entropy.
* The model is put in eval mode during the attack (batch-norm statistics are
  not touched) and left in the mode it was in; gradients are taken with
  respect to the input only, so no ``.grad`` is left on the parameters.

Finlayson et al. (Science 2019) showed that such attacks transfer to medical
classifiers (fundus, chest X-ray, dermoscopy) with perturbations invisible to
a clinician.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError

__all__ = ["NormalisedModel", "fgsm", "pgd", "attack", "ATTACKS", "robustness_curve", "plot_robustness_curve"]


class NormalisedModel(nn.Module):
    """A classifier that normalises its own input: ``model((x - mean) / std)``.

    With the normalisation inside the model, everything outside it (data,
    attacks, explanations) works with images in their valid range, and an
    attack's epsilon is in image units.

    Args:
        model: the classifier proper (kept as ``.model``).
        mean, std: a number or one value per channel.
    """

    def __init__(self, model: nn.Module, mean=0.0, std=1.0):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if torch.any(std_t <= 0):
            raise ParameterError(f"std must be positive, got {std}")
        self.model = model
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def _check(images, labels, epsilon, bounds):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ParameterError("images must be a float tensor of shape (N, C, H, W)")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ParameterError(f"labels must be a 1D tensor with one class per image ({images.shape[0]}), "
                             f"got shape {tuple(labels.shape)}")
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise ParameterError(f"epsilon must be a number, got {epsilon!r}") from None
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ParameterError(f"epsilon must be a finite number >= 0 (in image units), got {epsilon}")
    if bounds is not None:
        low, high = bounds
        if not low < high:
            raise ParameterError(f"bounds must be (low, high) with low < high, got {bounds}")
    return labels, epsilon


def _model_device(model):
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _loss(logits, labels):
    if logits.ndim == 2 and logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")


def _input_gradient(model, x, labels):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = _loss(model(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _clip(x, bounds):
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def fgsm(model: nn.Module, images: torch.Tensor, labels, epsilon: float,
         bounds: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``epsilon`` up the loss.

    Args:
        model: a classifier returning logits ``(N, classes)`` (or ``(N, 1)``).
        images: ``(N, C, H, W)`` inputs in their valid range.
        labels: the true classes ``(N,)``.
        epsilon: the L-infinity budget, in image units (0.01 is 2.55 grey
            levels of an 8-bit image).
        bounds: the valid range the result is clipped to; None: no clipping.

    Returns:
        The adversarial images (a new tensor on the model's device) with
        ``|x_adv - x| <= epsilon`` everywhere, exactly ``epsilon *
        sign(gradient)`` where no clipping applies.
    """
    labels, epsilon = _check(images, labels, epsilon, bounds)
    device = _model_device(model)
    x = images.detach().to(device)
    labels = labels.to(device)
    if epsilon == 0:
        return x.clone()
    was_training = model.training
    model.eval()
    try:
        grad = _input_gradient(model, x, labels)
    finally:
        model.train(was_training)
    return _clip(x + epsilon * grad.sign(), bounds).detach()


def pgd(model: nn.Module, images: torch.Tensor, labels, epsilon: float, steps: int = 10,
        alpha: float | None = None, random_start: bool = True,
        bounds: tuple[float, float] | None = (0.0, 1.0), seed: int | None = 0) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball (Madry et al.).

    Args:
        model, images, labels, epsilon, bounds: as in :func:`fgsm`.
        steps: gradient-sign steps.
        alpha: step size; default ``2.5 * epsilon / steps`` (Madry et al.), so
            that the walk can cross the ball.
        random_start: start from a uniformly random point of the ball (as
            Madry et al.); False starts at the image itself.
        seed: seed of the random start (the same seed gives the same attack);
            None draws from torch's global generator.

    Returns:
        The adversarial images, within ``epsilon`` of ``images`` and inside
        ``bounds``.
    """
    labels, epsilon = _check(images, labels, epsilon, bounds)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ParameterError(f"steps must be a whole number >= 1, got {steps!r}")
    alpha = 2.5 * epsilon / steps if alpha is None else float(alpha)
    if alpha < 0:
        raise ParameterError(f"alpha must be >= 0, got {alpha}")
    device = _model_device(model)
    x0 = images.detach().to(device)
    labels = labels.to(device)
    if epsilon == 0:
        return x0.clone()
    x = x0.clone()
    if random_start:
        generator = None
        if seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype) * 2 - 1
        x = _clip(x0 + epsilon * noise.to(device), bounds)
    was_training = model.training
    model.eval()
    try:
        for _ in range(int(steps)):
            grad = _input_gradient(model, x, labels)
            x = x + alpha * grad.sign()
            x = torch.max(torch.min(x, x0 + epsilon), x0 - epsilon)
            x = _clip(x, bounds).detach()
    finally:
        model.train(was_training)
    return x


#: The attacks :func:`attack` and :func:`robustness_curve` know.
ATTACKS: dict[str, Callable] = {"fgsm": fgsm, "pgd": pgd}


def attack(model: nn.Module, images, labels, epsilon: float, method: str = "pgd", batch_size: int = 128,
           **options) -> tuple[torch.Tensor, np.ndarray]:
    """Attack a whole set of images in batches; return the attacked images and the model's probabilities on them.

    Args:
        images: ``(N, C, H, W)`` tensor or array in the valid range.
        labels: ``(N,)`` true classes.
        method: ``"fgsm"`` or ``"pgd"``.
        batch_size: images per batch.
        **options: passed to the attack (``steps``, ``alpha``, ``bounds``,
            ``seed``, ...). A PGD seed is offset by the batch index, so every
            batch gets its own random start.

    Returns:
        ``(adversarial images on the CPU, probabilities (N, classes))``;
        probabilities are the softmax of the logits (sigmoid for one logit).
    """
    if method not in ATTACKS:
        raise ParameterError(f"unknown attack {method!r}; choose one of {sorted(ATTACKS)}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    x_all = torch.as_tensor(images, dtype=torch.float32)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    adversarial, probabilities = [], []
    was_training = model.training
    model.eval()
    try:
        for i, start in enumerate(range(0, len(x_all), batch_size)):
            x, y = x_all[start:start + batch_size], y_all[start:start + batch_size]
            opts = dict(options)
            if method == "pgd" and opts.get("seed", 0) is not None:
                opts["seed"] = int(opts.get("seed", 0)) + i
            adv = ATTACKS[method](model, x, y, epsilon, **opts)
            with torch.inference_mode():
                logits = model(adv).float()
            prob = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            adversarial.append(adv.cpu())
            probabilities.append(prob.cpu())
    finally:
        model.train(was_training)
    return torch.cat(adversarial), torch.cat(probabilities).numpy()


def _accuracy(y, prob):
    pred = (prob[:, 0] > 0.5).astype(int) if prob.shape[1] == 1 else prob.argmax(1)
    return float(np.mean(pred == y))


def robustness_curve(model: nn.Module, images, labels, epsilons: Sequence[float],
                     methods: Sequence[str] = ("fgsm", "pgd"), batch_size: int = 128, progress: bool = True,
                     **options) -> dict:
    """Accuracy and AUROC of ``model`` under each attack at each epsilon.

    Args:
        images, labels: the test set (tensor or array, valid range).
        epsilons: the budgets to try (0 gives the clean numbers).
        methods: attack names from :data:`ATTACKS`.
        progress: a tqdm bar over (method, epsilon) pairs.
        **options: passed to the attacks (e.g. ``steps=10`` reaches PGD only).

    Returns:
        ``{"epsilons": [...], "<method>": {"accuracy": [...], "auroc": [...]}}``
        with one value per epsilon. AUROC is binary (class 1's probability) or
        macro one-vs-rest; it is nan where the test set has one class only.
    """
    from tqdm.auto import tqdm

    from . import metrics

    epsilons = [float(e) for e in epsilons]
    y = np.asarray(labels).astype(int)
    out: dict = {"epsilons": epsilons}
    pairs = [(m, e) for m in methods for e in epsilons]
    bar = tqdm(pairs, desc="attacks", disable=not progress, leave=True)
    for method in methods:
        out[method] = {"accuracy": [], "auroc": []}
    for method, eps in bar:
        bar.set_postfix_str(f"{method} eps={eps:g}")
        opts = {k: v for k, v in options.items() if method == "pgd" or k not in ("steps", "alpha", "random_start",
                                                                               "seed")}
        _, prob = attack(model, images, labels, eps, method=method, batch_size=batch_size, **opts)
        out[method]["accuracy"].append(_accuracy(y, prob))
        try:
            score = prob[:, 0] if prob.shape[1] == 1 else prob
            out[method]["auroc"].append(float(metrics.auroc(y, score)))
        except ParameterError:
            out[method]["auroc"].append(float("nan"))
    return out


def plot_robustness_curve(curve: dict, marker_epsilon: float | None = None, pixel_levels: int | None = 255):
    """Accuracy (left) and AUROC (right) against epsilon for each attack in ``curve``.

    Args:
        curve: the result of :func:`robustness_curve`.
        marker_epsilon: draw a vertical line there (the epsilon the lesson records).
        pixel_levels: label the top axis in grey levels of an image with this
            many levels above black (255 for 8 bits); None: no second axis.
    """
    from matplotlib.figure import Figure

    eps = np.asarray(curve["epsilons"], dtype=float)
    methods = [k for k in curve if k != "epsilons"]
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("accuracy", "auroc"), ("accuracy", "AUROC")):
        for i, method in enumerate(methods):
            ax.plot(eps, curve[method][key], "o-", color=f"C{i}", label=method.upper())
        ax.axhline(0.5, color="0.6", ls=":", lw=0.8, label="chance (balanced)")
        if marker_epsilon is not None:
            ax.axvline(marker_epsilon, color="0.3", ls="--", lw=0.8)
        ax.set(xlabel="epsilon (L-inf, image units)", ylabel=label, ylim=(-0.02, 1.02))
        if pixel_levels:
            top = ax.secondary_xaxis("top", functions=(lambda e: e * pixel_levels, lambda g: g / pixel_levels))
            top.set_xlabel("grey levels (of 255)")
    axes[0].legend(fontsize=8)
    return fig
