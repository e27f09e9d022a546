"""Transfer learning for lesson 01: where pretrained weights come from, and the three arms.

The lesson asks: with few labelled images, does pretraining help, and how many
images does a network trained from scratch need to catch up? It compares

``scratch``
    random initialisation, every weight trained on the target task;
``linear_probe``
    pretrained features frozen; only a linear classifier on top of them is
    trained (here a logistic regression on the features, computed once,
    because a frozen backbone gives the same features at every step);
``finetune``
    pretrained weights as the starting point, every weight trained further.

across training-set sizes and seeds (:func:`learning_curve`).

Pretraining sources (:func:`resolve_pretraining`):

``"imagenet"``
    torchvision's ImageNet weights for a torchvision architecture
    (``resnet18``, ...). Needs the internet once (or the file in torch's
    cache); offline it fails with :class:`medlab.models.WeightsNotFoundError`
    saying which file to fetch.
``"phantom"``
    offline: pretrain on a larger, *different* phantom task
    (:data:`PRETRAIN_TASKS`), and cache the weights under
    ``MEDLAB_DATA_DIR/pretrained/`` keyed by a hash of the whole
    configuration (task, sizes, steps, architecture, seed, medlab version), so
    the second run of a lesson reuses them.
a path
    a ``state_dict`` or medlab checkpoint of the same architecture, read with
    ``torch.load(..., weights_only=True)``.

Lesson-specific sizes per profile are in :data:`LESSON_KNOBS`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import ParameterError

__all__ = [
    "ARMS", "ARM_LABELS", "LESSON_KNOBS", "PRETRAIN_TASKS", "TARGET_TASK", "lesson_knobs", "classifier_name",
    "build_model", "pretraining_config", "cache_path", "Pretrained", "resolve_pretraining", "pretrain",
    "target_data", "stratified_subset", "train_arm", "extract_features", "CurveResult", "learning_curve",
    "summarize", "plot_learning_curve", "plot_roc_arms", "misclassified_figure",
]

#: The arms, in the order the lesson shows them.
ARMS = ("scratch", "linear_probe", "finetune")
ARM_LABELS = {"scratch": "from scratch", "linear_probe": "linear probe (frozen features)",
              "finetune": "fine-tuned"}
_ARM_COLOURS = {"scratch": "C3", "linear_probe": "C2", "finetune": "C0"}

#: The target task on phantoms: normal against bacterial pneumonia on the chest X-ray phantom, with the
#: consolidation fainter than the generator's default so that a few dozen images are not enough to learn it.
TARGET_TASK = {"kind": "chest_xray", "classes": ["normal", "bacterial_pneumonia"], "lesion_contrast": 1.0,
               "lesion_size": 1.3, "exposure": 0.3, "rotation": 4.0}

#: Pretraining tasks on phantoms: larger and different from the target task.
#: ``cxr_covid``: normal against COVID-19 ground-glass on chest X-ray phantoms (same modality, other disease:
#: the analogue of pretraining on a large public chest X-ray collection);
#: ``ct_findings``: normal against COVID-19 lesions on CT slice phantoms (another modality: the analogue of
#: ImageNet, whose photographs are not X-rays either).
PRETRAIN_TASKS = {
    "cxr_covid": {"kind": "chest_xray", "classes": ["normal", "covid19"], "lesion_contrast": 1.0, "exposure": 0.3,
                  "rotation": 4.0},
    "ct_findings": {"kind": "ct_slice", "lesion_contrast": 1.0},
}

#: Lesson-01 knobs per profile.
#: ``sizes``: training-set sizes of the learning curve (capped at the profile's ``n_train``);
#: ``steps``: gradient steps per fit, the same at every size so that each arm and size sees the same amount of
#: optimisation; ``lr`` / ``lr_finetune``: AdamW learning rates from scratch and for fine-tuning;
#: ``width``: channels of the small CNN's first block (ignored for torchvision architectures);
#: ``pretrain_task``, ``pretrain_n``, ``pretrain_steps``, ``pretrain_lr``: the phantom pretraining.
LESSON_KNOBS = {
    "smoke": dict(sizes=(16, 48), steps=3, lr=1e-2, lr_finetune=3e-3, width=4, pretrain_task="cxr_covid",
                  pretrain_n=64, pretrain_steps=3, pretrain_lr=1e-2),
    "cpu": dict(sizes=(24, 120, 600), steps=60, lr=1e-2, lr_finetune=3e-3, width=8, pretrain_task="cxr_covid",
                pretrain_n=2000, pretrain_steps=250, pretrain_lr=1e-2),
    "gpu": dict(sizes=(25, 100, 400, 1000, 4000), steps=400, lr=1e-3, lr_finetune=3e-4, width=32,
                pretrain_task="cxr_covid", pretrain_n=20000, pretrain_steps=4000, pretrain_lr=1e-3),
}


def lesson_knobs(profile) -> dict:
    """The lesson-01 knobs of ``profile`` (a :class:`~medlab.profiles.Profile` or its name).

    The knobs follow the profile's fields, so a profile with changed fields (for example
    ``MEDLAB_PROFILE_OVERRIDES``) shrinks the lesson with it: ``steps`` and ``pretrain_steps``
    scale with ``epochs`` and with ``n_train`` (when smaller), ``pretrain_n`` with ``n_train``
    (all relative to the named profile's defaults); sizes larger than ``n_train`` are dropped and ``n_train`` itself is
    always the last size ("all").
    """
    from .profiles import PROFILES, resolve

    prof = resolve(profile)
    base = LESSON_KNOBS.get(prof.name)
    if base is None:
        raise ParameterError(f"no lesson knobs for profile {prof.name!r}; known: {sorted(LESSON_KNOBS)}")
    default = PROFILES[prof.name]
    knobs = dict(base)
    scale = prof.epochs / max(default.epochs, 1) * min(1.0, prof.n_train / max(default.n_train, 1))
    knobs["steps"] = max(2, round(base["steps"] * scale))
    knobs["pretrain_steps"] = max(2, round(base["pretrain_steps"] * scale))
    knobs["pretrain_n"] = max(64, round(base["pretrain_n"] * prof.n_train / max(default.n_train, 1)))
    sizes = sorted({int(s) for s in base["sizes"] if s < prof.n_train} | {int(prof.n_train)})
    knobs["sizes"] = tuple(sizes)
    return knobs


def classifier_name(name: str) -> str:
    """Normalise an architecture name (``smallcnn`` -> ``small_cnn``) and check it is known."""
    from .models import CLASSIFIERS

    key = str(name).strip().lower().replace("-", "_")
    key = {"smallcnn": "small_cnn", "small": "small_cnn"}.get(key, key)
    if key not in CLASSIFIERS:
        raise ParameterError(f"unknown architecture {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    return key


def build_model(arch: str, num_classes: int = 2, in_channels: int = 1, width: int = 16, weights=None,
                progress: bool = False) -> nn.Module:
    """A classifier for the lesson: :class:`~medlab.models.SmallCNN` of ``width`` or a torchvision network.

    Args:
        arch: ``small_cnn`` (alias ``smallcnn``) or a torchvision name from
            :data:`medlab.models.CLASSIFIERS`.
        num_classes, in_channels: outputs and input channels.
        width: first-block channels of the small CNN.
        weights: None, ``"imagenet"`` (torchvision architectures only) or a
            path / state dict. A checkpoint's head is used only when it has
            ``num_classes`` outputs; otherwise the backbone is loaded and the
            head stays freshly initialised (the usual transfer recipe).
    """
    from .models import SmallCNN, build_classifier, load_weights

    key = classifier_name(arch)
    if key != "small_cnn":
        if weights is None or (isinstance(weights, str) and weights.lower() == "imagenet"):
            return build_classifier(key, num_classes, in_channels, weights=weights, progress=progress)
        model = build_classifier(key, num_classes, in_channels, weights=None)
    else:
        if isinstance(weights, str) and weights.lower() == "imagenet":
            raise ParameterError("ImageNet weights exist only for torchvision architectures (resnet18, ...); "
                                 "with the small CNN use PRETRAINING='phantom' or a weights file")
        model = SmallCNN(in_channels, num_classes, width=int(width))
        model.medlab_head = "fc"
        model.medlab_config = {"name": key, "num_classes": num_classes, "in_channels": in_channels,
                               "width": int(width), "weights": None}
    if weights is not None:
        state = _read_state(weights)
        head = model.medlab_head
        own = model.state_dict()
        mismatched = [k for k in state if k.startswith(head + ".") and k in own and state[k].shape != own[k].shape]
        if mismatched:  # a pretrained head with another number of classes: keep the new head
            state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
            state.update({k: v for k, v in own.items() if k.startswith(head + ".")})
        load_weights(model, state)
        model.medlab_config["weights"] = str(weights) if not isinstance(weights, dict) else "state_dict"
    return model


def _read_state(weights) -> dict:
    from .models.classifiers import read_state_dict

    if isinstance(weights, (str, os.PathLike)) and not Path(weights).expanduser().is_file():
        raise ParameterError(f"weights file {str(weights)!r} does not exist; PRETRAINING must be 'imagenet', "
                             "'phantom' or the path of a saved state_dict or medlab checkpoint")
    return read_state_dict(weights)


# ---------------------------------------------------------------------------------------------
# pretraining
# ---------------------------------------------------------------------------------------------
def pretraining_config(task: str, arch: str, size: int, n: int, steps: int, lr: float, width: int = 16,
                       batch_size: int = 32, seed: int = 0) -> dict:
    """Everything that determines the pretrained weights, as a plain dict (the cache key)."""
    from . import __version__

    if task not in PRETRAIN_TASKS:
        raise ParameterError(f"unknown pretraining task {task!r}; known: {sorted(PRETRAIN_TASKS)}")
    return {"task": task, "task_knobs": PRETRAIN_TASKS[task], "arch": classifier_name(arch), "size": int(size),
            "n": int(n), "steps": int(steps), "lr": float(lr), "width": int(width), "batch_size": int(batch_size),
            "seed": int(seed), "medlab": __version__, "torch": torch.__version__.split("+")[0]}


def cache_path(config: dict, root=None) -> Path:
    """Where the weights for ``config`` are cached: ``<root>/pretrained/<task>-<arch>-<hash>.pt``.

    ``root`` defaults to :func:`medlab.data.download.data_dir` (``MEDLAB_DATA_DIR``).
    """
    from .data.download import data_dir

    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(root) if root is not None else data_dir()
    return base / "pretrained" / f"{config['task']}-{config['arch']}-{digest}.pt"


@dataclass
class Pretrained:
    """Resolved pretraining: ``source`` (imagenet, phantom or file), the ``weights`` to pass to
    :func:`build_model`, whether they came ``from_cache``, and the pretraining ``history`` and
    held-out ``auroc`` when they were trained now (or read from the cache)."""

    source: str
    weights: object
    from_cache: bool = False
    config: dict = field(default_factory=dict)
    history: dict | None = None
    auroc: float | None = None


def _phantom_split(task_knobs: dict, n: int, size: int, seed: int):
    from .data import phantoms
    from .data.dataset import PhantomDataset

    knobs = {k: v for k, v in task_knobs.items() if k != "kind"}
    batch = getattr(phantoms, task_knobs["kind"])(n, size=size, seed=seed, **knobs)
    return PhantomDataset(batch)


def _loader(dataset, batch_size, shuffle, seed=0):
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator if shuffle else None,
                      num_workers=0)


def _epochs_for(steps: int, n: int, batch_size: int) -> tuple[int, int]:
    """(batch size, epochs) giving about ``steps`` gradient steps on ``n`` images."""
    bs = max(1, min(int(batch_size), int(n)))
    per_epoch = math.ceil(n / bs)
    return bs, max(1, round(steps / per_epoch))


def pretrain(config: dict, device="cpu", progress: bool = True, path=None) -> Pretrained:
    """Train the network of ``config`` on its phantom task and save it (medlab checkpoint) at ``path``.

    ``path`` defaults to :func:`cache_path`. Returns the :class:`Pretrained` with the
    history and the AUROC on a held-out phantom set of 400 images.
    """
    from .data.dataset import split_seeds
    from .metrics import auroc
    from .train import fit, predict, save_checkpoint

    seeds = split_seeds(config["seed"] + 7919)  # never the target task's streams
    knobs = config["task_knobs"]
    train = _phantom_split(knobs, config["n"], config["size"], seeds["train"])
    held_out = _phantom_split(knobs, 400 if config["n"] >= 400 else max(16, config["n"] // 2), config["size"],
                              seeds["test"])
    torch.manual_seed(config["seed"])  # the initial weights, too, follow the configuration
    model = build_model(config["arch"], len(train.class_names), 1, config["width"])
    bs, epochs = _epochs_for(config["steps"], len(train), config["batch_size"])
    history = fit(model, _loader(train, bs, True, config["seed"]), epochs=epochs, lr=config["lr"],
                  device=device, seed=config["seed"], progress=progress, scheduler="cosine")
    prob, y = predict(model, _loader(held_out, 256, False), device=device)
    score = float(auroc(y, prob)) if len(np.unique(y)) == 2 else float("nan")
    target = Path(path) if path is not None else cache_path(config)
    save_checkpoint(target, model.cpu(), epoch=epochs, history=history,
                    extra={"config": json.dumps(config, sort_keys=True), "auroc": score})
    return Pretrained("phantom", str(target), False, config, history.to_dict(), score)


def resolve_pretraining(source: str, config: dict | None = None, device="cpu", progress: bool = True,
                        root=None) -> Pretrained:
    """Turn the lesson's ``PRETRAINING`` parameter into weights :func:`build_model` can load.

    Args:
        source: ``"imagenet"``, ``"phantom"`` or a path to a weights file.
        config: for ``"phantom"``, the :func:`pretraining_config`; for
            ``"imagenet"`` its ``arch`` is checked (it must be a torchvision
            network, and its weights must be downloadable or cached).
        root: cache root (default ``MEDLAB_DATA_DIR``).

    ``"phantom"`` reuses ``cache_path(config)`` when it exists and pretrains
    (and caches) otherwise; a corrupt cache file is trained again.

    Raises:
        ParameterError: unknown source, missing file, ImageNet with the small CNN.
        WeightsNotFoundError: ImageNet weights are neither cached nor downloadable.
    """
    text = str(source).strip()
    if text.lower() == "imagenet":
        arch = classifier_name((config or {}).get("arch", "resnet18"))
        build_model(arch, 2, 1, weights="imagenet")  # raises a clear error offline or for the small CNN
        return Pretrained("imagenet", "imagenet", from_cache=True, config=config or {})
    if text.lower() == "phantom":
        if not config:
            raise ParameterError("PRETRAINING='phantom' needs a pretraining_config(...)")
        path = cache_path(config, root)
        if path.is_file():
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                extra = checkpoint.get("extra", {})
                if json.loads(extra.get("config", "{}")) == json.loads(json.dumps(config, sort_keys=True)):
                    return Pretrained("phantom", str(path), True, config, checkpoint.get("history"),
                                      extra.get("auroc"))
            except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
                pass
        return pretrain(config, device=device, progress=progress, path=path)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ParameterError(f"PRETRAINING={source!r} is neither 'imagenet', 'phantom' nor an existing weights "
                             "file (a state_dict or medlab checkpoint saved with torch.save)")
    return Pretrained("file", str(path), True, config or {})


# ---------------------------------------------------------------------------------------------
# the target task
# ---------------------------------------------------------------------------------------------
def target_data(data: str, n_train: int, n_test: int, size: int, seed: int = 0):
    """Training pool and test set of the target task: ``(train, test)`` datasets.

    ``data="phantom"``: :data:`TARGET_TASK` phantoms at ``size`` px. Anything
    else goes to :func:`medlab.data.sources.load_source` (for example
    ``medmnist:pneumoniamnist``, at the MedMNIST size closest to ``size``),
    limited to ``n_train`` / ``n_test`` images.
    """
    from .data.dataset import split_seeds

    if data == "phantom":
        seeds = split_seeds(seed)
        return (_phantom_split(TARGET_TASK, n_train, size, seeds["train"]),
                _phantom_split(TARGET_TASK, n_test, size, seeds["test"]))
    from .data.sources import load_source

    options = {"seed": seed}
    if data.lower().startswith("medmnist:"):
        options["size"] = min((28, 64, 128, 224), key=lambda s: abs(s - size))
    else:
        options["size"] = size
    train = load_source(data, split="train", limit=n_train, **options)
    test = load_source(data, split="test", limit=n_test, **options)
    return train, test


def _labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64)


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` cases keeping the class proportions (at least one per class), sorted.

    The same ``seed`` gives the same subset; subsets for growing ``n`` are not nested.
    """
    labels = np.asarray(labels)
    if not 1 <= n <= labels.size:
        raise ParameterError(f"subset size must be between 1 and {labels.size}, got {n}")
    if n == labels.size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    if n < classes.size:
        raise ParameterError(f"a subset of {n} cannot hold all {classes.size} classes")
    quota = np.maximum(1, np.floor(counts / labels.size * n).astype(int))
    while quota.sum() < n:  # hand out the remainder to the largest classes
        quota[np.argmax(counts - quota)] += 1
    while quota.sum() > n:
        quota[np.argmax(quota)] -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------------------------
# the arms
# ---------------------------------------------------------------------------------------------
def extract_features(model: nn.Module, dataset, device="cpu", batch_size: int = 256) -> np.ndarray:
    """The penultimate-layer features (the input of the head) of every image, ``(N, F)`` float32."""
    from .train import predict

    body = copy.deepcopy(model)
    head = getattr(body, "medlab_head", None)
    if head is None:
        raise ParameterError("the model has no medlab_head; build it with build_model or build_classifier")
    parent, _, child = head.rpartition(".")
    setattr(body.get_submodule(parent) if parent else body, child, nn.Identity())
    features, _ = predict(body, _loader(dataset, batch_size, False), device=device, activation=None)
    return features.reshape(len(features), -1).astype(np.float32)


def train_arm(arm: str, train_ds, arch: str, num_classes: int, weights, knobs: dict, seed: int = 0,
              device="cpu", in_channels: int = 1, batch_size: int = 32):
    """Train one arm on ``train_ds``; returns the fitted model (scratch, finetune) or a
    ``(model, logistic_regression)`` pair (linear_probe).

    ``knobs`` holds ``steps``, ``lr``, ``lr_finetune`` and ``width`` (see :data:`LESSON_KNOBS`).
    """
    from .train import fit

    if arm not in ARMS:
        raise ParameterError(f"unknown arm {arm!r}; arms are {ARMS}")
    if arm != "scratch" and weights is None:
        raise ParameterError(f"the {arm} arm needs pretrained weights")
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, in_channels, knobs["width"], weights=None if arm == "scratch" else weights)
    if arm == "linear_probe":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        features = extract_features(model, train_ds, device)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
        probe.fit(features, _labels(train_ds))
        return model, probe
    bs, epochs = _epochs_for(knobs["steps"], len(train_ds), batch_size)
    lr = knobs["lr"] if arm == "scratch" else knobs["lr_finetune"]
    fit(model, _loader(train_ds, bs, True, seed), epochs=epochs, lr=lr, device=device, seed=seed, progress=False,
        scheduler="cosine")
    return model


def _scores(trained, test_ds, device) -> np.ndarray:
    """Class probabilities ``(N, C)`` of a trained arm on ``test_ds``."""
    from .train import predict

    if isinstance(trained, tuple):
        model, probe = trained
        return probe.predict_proba(extract_features(model, test_ds, device))
    prob, _ = predict(trained, _loader(test_ds, 256, False), device=device)
    return prob


@dataclass
class CurveResult:
    """Results of :func:`learning_curve`.

    Attributes:
        rows: one dict per fit: ``arm``, ``size``, ``seed``, ``auroc``.
        scores: ``{(arm, size, seed): positive-class probabilities on the test set}``.
        y_test: test labels.
        sizes, arms, seeds: the grid.
    """

    rows: list
    scores: dict
    y_test: np.ndarray
    sizes: tuple
    arms: tuple
    seeds: tuple

    def auroc(self, arm: str, size: int) -> np.ndarray:
        """The AUROC of every seed for ``arm`` at ``size``."""
        return np.array([r["auroc"] for r in self.rows if r["arm"] == arm and r["size"] == size])


def learning_curve(train_pool, test_ds, sizes, seeds, weights, arch: str, knobs: dict, arms=ARMS, device="cpu",
                   batch_size: int = 32, base_seed: int = 0, progress: bool = True) -> CurveResult:
    """Train every arm at every training-set size with every seed, evaluate on ``test_ds``.

    For each size and seed one stratified subset of ``train_pool`` is drawn and shared by the
    arms, so the arms differ only in their starting point. Binary tasks only (AUROC of class 1).
    """
    from torch.utils.data import Subset

    from .metrics import auroc

    if weights is None and any(a != "scratch" for a in arms):
        raise ParameterError("the linear_probe and finetune arms need pretrained weights")
    pool_labels = _labels(train_pool)
    num_classes = int(max(pool_labels.max(), _labels(test_ds).max()) + 1)
    if num_classes != 2:
        raise ParameterError(f"learning_curve handles binary tasks; found {num_classes} classes")
    in_channels = int(test_ds[0][0].shape[0])
    y_test = _labels(test_ds)
    rows, scores = [], {}
    grid = [(size, seed, arm) for size in sizes for seed in seeds for arm in arms]
    from tqdm.auto import tqdm

    bar = tqdm(grid, desc="arms x sizes x seeds", disable=not progress)
    for size, seed, arm in bar:
        bar.set_postfix_str(f"{arm}, n={size}, seed={seed}")
        fit_seed = base_seed * 1000 + seed
        index = stratified_subset(pool_labels, int(size), seed=fit_seed)
        subset = Subset(train_pool, index.tolist())
        subset.labels = pool_labels[index]
        trained = train_arm(arm, subset, arch, num_classes, weights, knobs, seed=fit_seed, device=device,
                            in_channels=in_channels, batch_size=batch_size)
        p = _scores(trained, test_ds, device)[:, 1]
        scores[(arm, int(size), int(seed))] = p
        rows.append({"arm": arm, "size": int(size), "seed": int(seed), "auroc": float(auroc(y_test, p))})
    return CurveResult(rows, scores, y_test, tuple(int(s) for s in sizes), tuple(arms), tuple(int(s) for s in seeds))


def summarize(result: CurveResult, n_bootstrap: int = 200, seed: int = 0, level: float = 0.95) -> list:
    """Per arm and size: mean AUROC over seeds, its spread, and a bootstrap interval.

    The interval resamples test cases (``n_bootstrap`` times) and recomputes the mean over
    seeds of the AUROC on each resample: it shows how much the test set's size limits the
    comparison. ``sd`` is the standard deviation across seeds (training randomness).

    Returns a list of dicts with ``arm``, ``size``, ``mean``, ``sd``, ``low``, ``high``, ``n_seeds``.
    """
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    y = result.y_test
    draws = rng.integers(0, y.size, (n_bootstrap, y.size))
    positives = y[draws]
    n_pos = positives.sum(axis=1)
    ok = (n_pos > 0) & (n_pos < y.size)
    draws, positives, n_pos = draws[ok], positives[ok], n_pos[ok]
    n_neg = y.size - n_pos
    alpha = (1 - level) / 2
    out = []
    for arm in result.arms:
        for size in result.sizes:
            values = result.auroc(arm, size)
            if values.size == 0:
                continue
            boot = np.zeros(len(draws))
            for s in result.seeds:  # Mann-Whitney AUROC of every resample at once (ties get average ranks)
                ranks = rankdata(result.scores[(arm, size, s)][draws], axis=1)
                boot += ((ranks * positives).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            boot /= len(result.seeds)
            low, high = np.quantile(boot, [alpha, 1 - alpha]) if boot.size else (np.nan, np.nan)
            out.append({"arm": arm, "size": size, "mean": float(values.mean()),
                        "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                        "low": float(low), "high": float(high), "n_seeds": int(values.size)})
    return out


def _new_axes(figsize):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def plot_learning_curve(result: CurveResult, summary: list | None = None, title: str | None = None):
    """AUROC against training-set size (log scale), one line per arm, bootstrap bands, seeds as dots."""
    summary = summary if summary is not None else summarize(result)
    fig, ax = _new_axes((6.4, 4.2))
    for arm in result.arms:
        rows = [r for r in summary if r["arm"] == arm]
        x = [r["size"] for r in rows]
        colour = _ARM_COLOURS.get(arm, None)
        ax.fill_between(x, [r["low"] for r in rows], [r["high"] for r in rows], color=colour, alpha=0.15, lw=0)
        ax.plot(x, [r["mean"] for r in rows], "o-", color=colour, lw=2, label=ARM_LABELS.get(arm, arm))
        dots = [(r["size"], r["auroc"]) for r in result.rows if r["arm"] == arm]
        ax.scatter(*zip(*dots), color=colour, s=10, alpha=0.6)
    ax.axhline(0.5, color="0.6", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(result.sizes)
    ax.set_xticklabels([str(s) for s in result.sizes])
    ax.set(xlabel="labelled training images (log scale)", ylabel="test AUROC",
           title=title or "learning curves: mean over seeds, 95% bootstrap band, dots = seeds")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_roc_arms(result: CurveResult, size: int, seed: int | None = None):
    """ROC curves of every arm at one training-set size (seed ``seed``, default the first)."""
    from .metrics import auroc, roc_curve

    seed = result.seeds[0] if seed is None else seed
    fig, ax = _new_axes((4.8, 4.6))
    for arm in result.arms:
        p = result.scores[(arm, size, seed)]
        fpr, tpr, _ = roc_curve(result.y_test, p)
        ax.plot(fpr, tpr, color=_ARM_COLOURS.get(arm), lw=2,
                label=f"{ARM_LABELS.get(arm, arm)} (AUROC {auroc(result.y_test, p):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", aspect="equal", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           title=f"ROC with {size} training images (seed {seed})")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def misclassified_figure(result: CurveResult, test_ds, arm: str, size: int, seed: int | None = None,
                         k: int = 8, class_names=None):
    """The ``k`` test images an arm got most confidently wrong (threshold 0.5), with truth and probability."""
    from .viz import image_grid

    seed = result.seeds[0] if seed is None else seed
    p = result.scores[(arm, size, seed)]
    y = result.y_test
    wrong = np.flatnonzero((p >= 0.5).astype(int) != y)
    if wrong.size == 0:
        return None
    order = wrong[np.argsort(-np.abs(p[wrong] - 0.5))][:k]
    names = class_names or getattr(test_ds, "class_names", ["0", "1"])
    images = np.stack([test_ds[int(i)][0][0].numpy() for i in order])
    titles = [f"truth {names[y[i]]}\nP({names[1]}) = {p[i]:.2f}" for i in order]
    return image_grid(images, titles=titles, ncols=min(k, 4),
                      suptitle=f"most confident mistakes: {ARM_LABELS.get(arm, arm)}, {size} images")
