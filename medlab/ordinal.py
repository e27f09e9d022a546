"""Ordinal severity grades and frame-to-clip aggregation (lesson 05, lung ultrasound).

A lung ultrasound frame is scored 0 to 3 (ICLUS: 0 normal A-lines, 1 a few
B-lines, 2 broken pleura with small consolidations, 3 white lung). The grades
are *ordered*: calling a score-3 frame "2" is a smaller mistake than calling it
"0". Two ways of training a network on such grades:

``nominal``
    ``K`` logits and cross-entropy: the grades are treated as unrelated
    classes, so every mistake costs the same.
``ordinal``
    ``K - 1`` logits, one per threshold: logit ``k`` says "the grade is above
    ``k``" and is trained with binary cross-entropy against ``[y > k]``
    (the cumulative-link or "extended binary" formulation of Frank and Hall
    2001 and CORAL, Cao et al. 2020). A score-3 frame predicted "0" gets all
    three thresholds wrong; predicted "2", only one.

Both give class probabilities ``(N, K)`` through :func:`class_probabilities`,
so every metric and aggregation below takes the same input.

A *clip* (a few seconds of video at one lung zone) is scored by the worst
frame it shows (ICLUS video scoring). :func:`aggregate_clips` turns the frame
probabilities of each clip into a clip grade by ``max`` (the worst frame's
predicted grade), ``mean`` (the rounded mean expected grade) or a
:class:`LearnedAggregator` (a multinomial logistic regression on summary
statistics of the frames, fitted on clips with known grades).

Real data (``pocus``) has nominal classes (COVID-19, bacterial pneumonia,
healthy); :func:`pocus_arrays` reads it into arrays with one group (video or
image file) per frame, and the same aggregation works on those groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError

__all__ = [
    "MODES", "AGGREGATIONS", "PROFILE_KNOBS", "knobs", "cumulative_targets", "OrdinalLoss", "output_size",
    "class_probabilities", "expected_grade", "predict_grades", "severity_metrics", "clip_features",
    "aggregate_clips", "LearnedAggregator", "predict_probabilities", "cam_targets", "cam_fraction_in_mask",
    "pocus_arrays", "group_clips", "POCUS_LESSON_CLASSES", "SeverityData", "load_severity_data",
    "train_frame_model", "clip_sets", "plot_frame_comparison", "published_table",
]

MODES = ("ordinal", "nominal")
AGGREGATIONS = ("max", "mean", "learned")

#: Lesson 05's own sizes per profile: ``clip_frames`` frames per phantom clip, ``cam_examples``
#: frames shown with Grad-CAM, ``pocus_frames`` frames sampled from each real video. (The numbers
#: of clips follow the profile's ``n_val`` and ``n_test``: see :func:`clip_sets`.)
PROFILE_KNOBS = {
    "smoke": {"clip_frames": 4, "cam_examples": 4, "pocus_frames": 2},
    "cpu": {"clip_frames": 10, "cam_examples": 8, "pocus_frames": 5},
    "gpu": {"clip_frames": 16, "cam_examples": 8, "pocus_frames": 10},
}


def knobs(profile) -> dict:
    """Lesson 05's knobs for ``profile`` (a :class:`~medlab.profiles.Profile` or its name).

    A profile not in :data:`PROFILE_KNOBS` (a custom one) gets the ``cpu`` knobs.
    """
    name = getattr(profile, "name", profile)
    return dict(PROFILE_KNOBS.get(str(name), PROFILE_KNOBS["cpu"]))


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, not {mode!r}")
    return mode


def _check_k(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ParameterError(f"num_classes must be a whole number of grades, at least 2, not {num_classes!r}")
    return int(num_classes)


def output_size(num_classes: int, mode: str = "ordinal") -> int:
    """Number of network outputs: ``K - 1`` thresholds (ordinal) or ``K`` logits (nominal)."""
    k = _check_k(num_classes)
    return k - 1 if _check_mode(mode) == "ordinal" else k


# ======================================================================================
# training targets and loss
# ======================================================================================
def cumulative_targets(labels, num_classes: int) -> torch.Tensor:
    """Binary threshold targets ``[y > k]`` for ``k = 0 .. K-2``, float tensor ``(N, K-1)``.

    Grade 0 gives all zeros, grade ``K-1`` all ones, grade 2 of 4 gives ``[1, 1, 0]``.
    """
    k = _check_k(num_classes)
    y = torch.as_tensor(labels).long().reshape(-1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ParameterError(f"grades must lie in 0 .. {k - 1}, found {int(y.min())} .. {int(y.max())}")
    thresholds = torch.arange(k - 1, device=y.device)
    return (y[:, None] > thresholds[None, :]).float()


class OrdinalLoss(nn.Module):
    """Binary cross-entropy of ``K - 1`` threshold logits against ``[y > k]``, averaged.

    Args:
        num_classes: the number of grades ``K``.

    ``forward(logits (N, K-1), target (N,))`` returns a scalar; usable as
    ``loss=`` in :func:`medlab.train.fit`.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = _check_k(num_classes)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes - 1:
            raise ParameterError(f"ordinal logits must have shape (N, {self.num_classes - 1}), got "
                                 f"{tuple(logits.shape)}; build the model with output_size(K, 'ordinal') outputs")
        return F.binary_cross_entropy_with_logits(logits.float(), cumulative_targets(target, self.num_classes))


# ======================================================================================
# from outputs to probabilities and grades
# ======================================================================================
def class_probabilities(outputs, mode: str = "ordinal") -> np.ndarray:
    """Class probabilities ``(N, K)`` from raw network outputs (logits).

    ``nominal``: softmax over ``K`` logits. ``ordinal``: ``P(y > k)`` is the
    sigmoid of threshold logit ``k``, made non-increasing in ``k`` (a running
    minimum, so that the probabilities below are never negative), and
    ``P(y = k) = P(y > k-1) - P(y > k)`` with ``P(y > -1) = 1`` and
    ``P(y > K-1) = 0``. Rows sum to 1.
    """
    _check_mode(mode)
    z = torch.as_tensor(np.asarray(outputs.detach().cpu() if hasattr(outputs, "detach") else outputs,
                                   dtype=np.float32))
    if z.dim() != 2:
        raise ParameterError(f"outputs must have shape (N, outputs), got {tuple(z.shape)}")
    if mode == "nominal":
        return torch.softmax(z, dim=1).numpy()
    above = torch.sigmoid(z).numpy()
    above = np.minimum.accumulate(above, axis=1)
    n = above.shape[0]
    upper = np.concatenate([np.ones((n, 1), np.float32), above], axis=1)
    lower = np.concatenate([above, np.zeros((n, 1), np.float32)], axis=1)
    return upper - lower


def expected_grade(probs) -> np.ndarray:
    """Expected grade ``sum_k k P(y = k)`` of each row of ``probs`` ``(N, K)``: a continuous severity."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ParameterError(f"probs must have shape (N, K), got {p.shape}")
    return p @ np.arange(p.shape[1])


def predict_grades(probs, mode: str = "ordinal") -> np.ndarray:
    """Predicted grade per row of ``probs`` ``(N, K)``.

    ``ordinal``: the number of thresholds passed with probability at least
    0.5 (the median of the predicted distribution); ``nominal``: the most
    probable class.
    """
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ParameterError(f"probs must have shape (N, K), got {p.shape}")
    if _check_mode(mode) == "nominal":
        return p.argmax(axis=1)
    above = 1.0 - np.cumsum(p, axis=1)[:, :-1]  # P(y > k)
    return (above >= 0.5 - 1e-9).sum(axis=1)


def severity_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, macro F1 and quadratic weighted kappa of predicted grades.

    Macro F1 averages the per-class F1 over the classes present in ``y_true``
    or ``y_pred`` (a class never seen nor predicted has no F1). Kappa is
    :func:`medlab.metrics.quadratic_weighted_kappa` (1 perfect, 0 chance
    agreement; mistakes weighted by the squared grade distance).
    """
    from . import metrics

    k = _check_k(num_classes)
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ParameterError(f"y_true and y_pred must be non-empty and of equal length, got {t.size} and {p.size}")
    f1 = metrics.f1(t, p, average=None, num_classes=k)
    return {"accuracy": float(np.mean(t == p)), "macro_f1": float(np.nanmean(f1)),
            "qwk": metrics.quadratic_weighted_kappa(t, p, num_classes=k)}


# ======================================================================================
# clips
# ======================================================================================
def _as_clips(frame_probs) -> list[np.ndarray]:
    if isinstance(frame_probs, np.ndarray) and frame_probs.ndim == 3:
        clips = list(frame_probs)
    elif isinstance(frame_probs, (list, tuple)):
        clips = [np.asarray(c, dtype=float) for c in frame_probs]
    else:
        raise ParameterError("frame_probs must be an array (clips, frames, K) or a list of (frames, K) arrays")
    if not clips:
        raise ParameterError("no clips given")
    k = clips[0].shape[-1]
    for c in clips:
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] != k:
            raise ParameterError(f"every clip must be a non-empty (frames, {k}) array, got {c.shape}")
    return clips


def clip_features(probs, mode: str = "ordinal") -> np.ndarray:
    """Summary statistics of one clip's frame probabilities ``(T, K)``, for the learned aggregate.

    The mean and the maximum over frames of each class probability; for
    ordinal grades also the mean, maximum and upper quartile of the expected
    grade and the fraction of frames at each predicted grade. Independent of
    the number of frames, so clips of any length can be compared.
    """
    p = np.asarray(probs, dtype=float)
    parts = [p.mean(axis=0), p.max(axis=0)]
    if _check_mode(mode) == "ordinal":
        e = expected_grade(p)
        grades = predict_grades(p, mode)
        upper_quartile = np.quantile(e, 0.75, method="inverted_cdf")  # a frame's value: same for repeated clips
        parts += [[e.mean(), e.max(), upper_quartile], np.bincount(grades, minlength=p.shape[1]) / len(p)]
    return np.concatenate([np.ravel(x) for x in parts])


class LearnedAggregator:
    """A clip grade from frame probabilities, learned: logistic regression on :func:`clip_features`.

    Args:
        mode: ``ordinal`` or ``nominal`` (which features :func:`clip_features` computes).
        C: inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``.

    Fit it on clips the frame model was *not* trained on (the validation
    clips), so that it learns how the frame model errs on new data.
    """

    def __init__(self, mode: str = "ordinal", C: float = 1.0):
        self.mode = _check_mode(mode)
        self.C = float(C)
        self.model = None
        self.num_classes = None

    def fit(self, frame_probs, clip_labels) -> "LearnedAggregator":
        """Fit on clips (``(clips, T, K)`` array or list of ``(T_i, K)`` arrays) and their grades; returns self."""
        from sklearn.linear_model import LogisticRegression

        clips = _as_clips(frame_probs)
        y = np.asarray(clip_labels).ravel()
        if len(y) != len(clips):
            raise ParameterError(f"{len(clips)} clips but {len(y)} clip labels")
        if len(np.unique(y)) < 2:
            raise ParameterError("the learned aggregate needs clips of at least two grades to fit")
        self.num_classes = clips[0].shape[1]
        x = np.stack([clip_features(c, self.mode) for c in clips])
        self.model = LogisticRegression(C=self.C, max_iter=2000).fit(x, y)
        return self

    def predict(self, frame_probs) -> np.ndarray:
        """Clip grades of new clips."""
        if self.model is None:
            raise ParameterError("fit the LearnedAggregator on validation clips before predicting")
        clips = _as_clips(frame_probs)
        if clips[0].shape[1] != self.num_classes:
            raise ParameterError(f"fitted on {self.num_classes} classes, got {clips[0].shape[1]}")
        x = np.stack([clip_features(c, self.mode) for c in clips])
        return self.model.predict(x).astype(np.int64)


def aggregate_clips(frame_probs, method: str = "max", mode: str = "ordinal",
                    aggregator: LearnedAggregator | None = None) -> np.ndarray:
    """One grade per clip from its frames' class probabilities.

    Args:
        frame_probs: ``(clips, T, K)`` array or a list of ``(T_i, K)`` arrays.
        method: ``max``: ordinal, the highest predicted frame grade (the
            ICLUS rule applied to the network's frame calls); nominal, the
            class with the highest probability in any frame. ``mean``:
            ordinal, the mean expected grade over frames, rounded; nominal,
            the most probable class of the mean probabilities. ``learned``:
            ``aggregator.predict`` (a fitted :class:`LearnedAggregator`).
        mode: ``ordinal`` or ``nominal``.
    """
    _check_mode(mode)
    if method not in AGGREGATIONS:
        raise ParameterError(f"method must be one of {AGGREGATIONS}, not {method!r}")
    clips = _as_clips(frame_probs)
    if method == "learned":
        if aggregator is None:
            raise ParameterError("method='learned' needs aggregator=LearnedAggregator(...).fit(val_probs, val_grades)")
        return aggregator.predict(clips)
    k = clips[0].shape[1]
    out = []
    for c in clips:
        if mode == "ordinal":
            value = predict_grades(c, mode).max() if method == "max" else np.rint(expected_grade(c).mean())
        else:
            value = c.max(axis=0).argmax() if method == "max" else c.mean(axis=0).argmax()
        out.append(int(np.clip(value, 0, k - 1)))
    return np.asarray(out, dtype=np.int64)


# ======================================================================================
# inference helpers
# ======================================================================================
def predict_probabilities(model, images, mode: str = "ordinal", batch_size: int = 64, device="auto") -> np.ndarray:
    """Class probabilities ``(N, K)`` of ``model`` on an image array ``(N, C, H, W)`` (or ``(N, T, C, H, W)``).

    For clips the frames are flattened, predicted, and returned as ``(N, T, K)``.
    """
    from .train import predict

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    clip_shape = None
    if x.dim() == 5:
        clip_shape = x.shape[:2]
        x = x.reshape(-1, *x.shape[2:])
    if x.dim() != 4:
        raise ParameterError(f"images must be (N, C, H, W) or (N, T, C, H, W), got {tuple(x.shape)}")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size)
    logits, _ = predict(model, loader, device=device, activation=None)
    probs = class_probabilities(logits, mode)
    return probs.reshape(*clip_shape, -1) if clip_shape is not None else probs


def cam_targets(probs, mode: str = "ordinal") -> list[int]:
    """Which output Grad-CAM should explain for each frame.

    Ordinal: the threshold the frame's predicted grade ``g`` passed last,
    ``g - 1`` ("why is this at least grade g"), or threshold 0 for a grade-0
    frame ("what would make it abnormal"). Nominal: the predicted class.
    """
    grades = predict_grades(probs, mode)
    if mode == "nominal":
        return [int(g) for g in grades]
    return [int(max(g - 1, 0)) for g in grades]


def cam_fraction_in_mask(cams, masks) -> np.ndarray:
    """Share of each heat map's total mass that falls inside its mask, one value per image.

    ``cams`` ``(N, H, W)`` non-negative, ``masks`` ``(N, H, W)`` boolean or
    0/1 (for example the pleural line, B-lines and consolidations). Compare
    with the mask's share of the image: a map that ignores the findings puts
    about that share inside by chance. A heat map of all zeros gives nan.
    """
    c = np.asarray(cams, dtype=float)
    m = np.asarray(masks).astype(bool)
    if c.shape != m.shape or c.ndim != 3:
        raise ParameterError(f"cams and masks must both be (N, H, W), got {c.shape} and {m.shape}")
    if (c < 0).any():
        raise ParameterError("heat maps must be non-negative (Grad-CAM maps are)")
    total = c.sum(axis=(1, 2))
    inside = (c * m).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


# ======================================================================================
# real data
# ======================================================================================
#: The three POCUS classes the lesson uses (as POCOVID-Net did: viral pneumonia has too few videos).
POCUS_LESSON_CLASSES = ["COVID-19", "bacterial pneumonia", "healthy"]


def pocus_arrays(split: str, size: int, seed: int = 0, frames_per_video: int = 5, limit: int | None = None,
                 root=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """POCUS frames of one split as arrays ``(images (N,1,S,S), labels (N,), groups (N,))``.

    Reads :func:`medlab.data.sources.load_source` ``("pocus", ...)`` and keeps
    the classes of :data:`POCUS_LESSON_CLASSES` (viral pneumonia is dropped).
    ``groups`` holds the source file of each frame (a video gives several
    frames, an image one): aggregate clips by it. Splits are by file, so no
    video spans two splits.

    Raises:
        DataNotFoundError: the data set is not on this machine (the message
            says where to get it and where to put it).
    """
    from .data.sources import load_source

    ds = load_source("pocus", root=root, split=split, size=size, channels=1, seed=seed,
                     frames_per_video=frames_per_video, limit=limit)
    keep = [i for i, item in enumerate(ds.items) if item[1] < len(POCUS_LESSON_CLASSES)]
    if not keep:
        raise ParameterError(f"pocus split {split!r} has no COVID-19, pneumonia or healthy frames")
    images = np.stack([ds[i][0].numpy() for i in keep]).astype(np.float32)
    labels = np.array([ds.items[i][1] for i in keep], dtype=np.int64)
    groups = np.array([str(ds.items[i][0]) for i in keep])
    return images, labels, groups


def group_clips(probs, labels, groups: Sequence) -> tuple[list[np.ndarray], np.ndarray]:
    """Gather frame probabilities ``(N, K)`` into clips by ``groups``; returns (clips, clip labels).

    A clip's label is its frames' label (every frame of a file shares it);
    clips come in order of first appearance.
    """
    p = np.asarray(probs)
    y = np.asarray(labels)
    g = np.asarray(groups)
    if not (len(p) == len(y) == len(g)):
        raise ParameterError("probs, labels and groups must have one entry per frame")
    order = list(dict.fromkeys(g.tolist()))
    clips = [p[g == key] for key in order]
    clip_labels = np.array([y[g == key][0] for key in order], dtype=np.int64)
    return clips, clip_labels



# ======================================================================================
# lesson 05 plumbing: data, training, clips, figures, the published numbers
# ======================================================================================
@dataclass
class SeverityData:
    """Frames for lesson 05, as arrays.

    Attributes:
        x, y: ``{"train"|"val"|"test": array}``: images ``(N, 1, S, S)`` and grades / classes ``(N,)``.
        groups: ``{"val"|"test": array}`` source file of each real frame (None for phantoms).
        findings: test masks of the phantoms' findings (pleural line, B-lines,
            consolidation) as boolean ``(N, S, S)``; None for real data.
        class_names: names of the grades / classes.
        mode: ``ordinal`` (phantom severity scores) or ``nominal`` (POCUS diagnoses).
        source: ``phantom`` or ``pocus``.
    """

    x: dict
    y: dict
    class_names: list
    mode: str
    source: str
    groups: dict | None = None
    findings: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """Number of grades or classes."""
        return len(self.class_names)


def load_severity_data(data: str, profile, seed: int = 0, **phantom_knobs) -> SeverityData:
    """Lesson 05's frames: ``phantom`` (ICLUS scores 0-3, ordinal) or ``pocus`` (three diagnoses, nominal).

    Sizes come from ``profile`` (``image_size``, ``n_train``, ``n_val``,
    ``n_test``); ``phantom_knobs`` go to :func:`medlab.data.phantoms.lung_ultrasound`
    (``probe``, ``lesion_contrast``, ...). For ``pocus`` the profile's sizes
    cap the number of frames per split.
    """
    from .data import make_splits

    name = str(data).strip().lower()
    if name in ("phantom", "phantom:lung_ultrasound", "phantom:lus"):
        sp = make_splits("lung_ultrasound", profile.n_train, profile.n_val, profile.n_test, size=profile.image_size,
                         seed=seed, **phantom_knobs)
        findings = sp["test"].batch.mask("findings")
        return SeverityData(x={k: v.images.numpy() for k, v in sp.items()}, y={k: v.labels for k, v in sp.items()},
                            class_names=list(sp["train"].class_names), mode="ordinal", source="phantom",
                            findings=np.isin(findings, (1, 3, 4)))
    if name == "pocus":
        frames = knobs(profile)["pocus_frames"]
        x, y, g = {}, {}, {}
        for split, n in (("train", profile.n_train), ("val", profile.n_val), ("test", profile.n_test)):
            x[split], y[split], g[split] = pocus_arrays(split, profile.image_size, seed, frames, limit=n)
        return SeverityData(x=x, y=y, class_names=list(POCUS_LESSON_CLASSES), mode="nominal", source="pocus",
                            groups=g)
    raise ParameterError(f"lesson 05 takes DATA='phantom' (lung ultrasound phantoms scored 0-3) or DATA='pocus' "
                         f"(the POCUS videos and images), not {data!r}")


def train_frame_model(data: SeverityData, mode: str, profile, device="auto", seed: int = 0, lr: float = 3e-3,
                      progress: bool = True):
    """Train the profile's classifier on the frames with the ordinal or the nominal loss.

    Returns ``(model, history)``: the weights of the best validation epoch
    (lowest validation loss), in eval mode. Same data, epochs, seed and
    architecture for both modes, so only the loss differs.
    """
    from .cascade import classifier_name
    from .models import build_classifier
    from .runtime import seed_everything
    from .train import fit

    _check_mode(mode)
    k = data.num_classes
    seed_everything(seed)  # the initial weights too, whatever ran before
    model = build_classifier(classifier_name(profile), output_size(k, mode), in_channels=data.x["train"].shape[1])
    gen = torch.Generator().manual_seed(int(seed))
    tds = torch.utils.data.TensorDataset(torch.as_tensor(data.x["train"]), torch.as_tensor(data.y["train"]))
    vds = torch.utils.data.TensorDataset(torch.as_tensor(data.x["val"]), torch.as_tensor(data.y["val"]))
    history = fit(model, torch.utils.data.DataLoader(tds, batch_size=profile.batch_size, shuffle=True, generator=gen),
                  torch.utils.data.DataLoader(vds, batch_size=2 * profile.batch_size),
                  loss=OrdinalLoss(k) if mode == "ordinal" else "cross_entropy", lr=lr, epochs=profile.epochs,
                  scheduler="cosine", restore_best=True, device=device, seed=seed, progress=progress)
    return model.eval(), history


def clip_sets(data: SeverityData, model, profile, seed: int = 0, device="auto", **phantom_knobs) -> dict:
    """Validation and test clips with their frame probabilities and clip grades.

    Phantoms: new clips from :func:`medlab.data.phantoms.lung_ultrasound_clips`
    (``clip_frames`` frames each from :func:`knobs`; ``n_val // 2`` and
    ``n_test // 2`` clips, at least 8; seeds apart from the frame splits).
    POCUS: the frames of each validation and test video grouped back into clips.

    Returns ``{"val": (clips, grades), "test": (clips, grades), "frames": T}``
    where ``clips`` is a list of ``(T_i, K)`` probability arrays.
    """
    from .data import phantoms
    from .data.dataset import split_seeds

    out = {}
    if data.source == "pocus":
        for split in ("val", "test"):
            probs = predict_probabilities(model, data.x[split], data.mode, device=device)
            out[split] = group_clips(probs, data.y[split], data.groups[split])
        out["frames"] = knobs(profile)["pocus_frames"]
        return out
    frames = knobs(profile)["clip_frames"]
    seeds = split_seeds(seed + 1000)  # clip seeds: independent of the frame splits
    for split, n in (("val", profile.n_val), ("test", profile.n_test)):
        batch = phantoms.lung_ultrasound_clips(max(8, n // 2), frames=frames, size=profile.image_size,
                                               seed=seeds[split], **phantom_knobs)
        probs = predict_probabilities(model, batch.images, data.mode, device=device)
        out[split] = (list(probs), batch.labels)
    out["frames"] = frames
    return out


def plot_frame_comparison(results: dict, title: str = "test frames"):
    """Bars of accuracy, macro F1 and quadratic weighted kappa per model or rule.

    ``results``: ``{label: severity_metrics(...)}``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    names = ("accuracy", "macro_f1", "qwk")
    width = 0.8 / max(len(results), 1)
    xs = np.arange(len(names))
    for j, (label, m) in enumerate(results.items()):
        values = [m[n] for n in names]
        bars = ax.bar(xs + (j - (len(results) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set(xticks=xs, xticklabels=["accuracy", "macro F1", "quadratic\nweighted kappa"], ylim=(0, 1.25),
           yticks=np.linspace(0, 1, 6), title=title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(results), frameon=False)
    return fig


def published_table(own: dict, source: str) -> str:
    """A markdown table setting this lesson's numbers beside published lung ultrasound results.

    ``own``: ``{"frame_macro_f1": .., "frame_accuracy": .., "clip_accuracy": .., "covid_sensitivity": ..}``
    (missing entries are shown as a dash).
    """
    def fmt(key):
        value = own.get(key)
        return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"

    data_label = "phantom frames, ICLUS 0-3" if source == "phantom" else "POCUS frames (3 classes)"
    rows = [
        "| work | data | task | reported |",
        "|---|---|---|---|",
        f"| this lesson | {data_label} | frame-level | accuracy {fmt('frame_accuracy')}, macro F1 "
        f"{fmt('frame_macro_f1')}" + (f", QWK {fmt('frame_qwk')} |" if source == "phantom" else " |"),
        f"| this lesson | {data_label} | clip-level (learned aggregate) | accuracy {fmt('clip_accuracy')} |",
        "| Roy et al. 2020 (IEEE TMI) | ICLUS-DB, clinical LUS videos, 4-level score | frame-level severity "
        "| F1 about 0.65 |",
        "| Born et al. 2021, POCOVID-Net (Appl Sci) | POCUS: COVID-19, pneumonia, healthy | frame-level diagnosis, "
        "5-fold cross-validation | accuracy 0.89, COVID-19 sensitivity 0.96 |",
    ]
    if source == "pocus":
        rows.insert(4, f"| this lesson | POCUS test split | COVID-19 sensitivity | {fmt('covid_sensitivity')} |")
    return "\n".join(rows)
