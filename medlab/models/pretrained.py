"""The pretrained weights cache: where a lesson's pretrained network comes from.

A pretraining source is one of

``"imagenet"``
    torchvision's ImageNet weights for a torchvision architecture
    (``resnet18``, ...). Needs the internet once (or the file in torch's
    cache); offline it fails with :class:`~medlab.models.WeightsNotFoundError`
    saying which file to fetch and where to put it.
``"phantom"``
    offline: train the network on a larger, *different* phantom task
    (:data:`PRETRAIN_TASKS`) and cache the weights under
    ``MEDLAB_DATA_DIR/pretrained/`` keyed by a hash of the whole configuration
    (:func:`pretraining_config`: task, sizes, steps, architecture, seed, medlab
    and torch versions), so the second run reuses them.
a path
    a ``state_dict`` or medlab checkpoint of the same architecture, read with
    ``torch.load(..., weights_only=True)``.

:func:`resolve_pretraining` turns a lesson's ``PRETRAINING`` parameter into a
:class:`Pretrained`, whose :meth:`Pretrained.network` builds a fresh copy of the
pretrained network *as it was pretrained*, old head included. What to do with
that head (replace it, freeze the rest) is the lesson's to write.

Pretraining trains with :func:`medlab.train.fit` (imported when needed, so that
this module stays importable without the training loop).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import ParameterError
from .classifiers import build_classifier, classifier_name, read_state_dict

__all__ = ["PRETRAIN_TASKS", "Pretrained", "pretraining_config", "cache_path", "pretrain", "resolve_pretraining"]

#: Pretraining tasks on phantoms (phantom kind and generator knobs), larger than a lesson's target task and
#: different from it.
#: ``cxr_covid``: normal against COVID-19 ground-glass on chest X-ray phantoms (same modality, another disease:
#: the analogue of pretraining on a large public chest X-ray collection);
#: ``ct_findings``: normal against COVID-19 lesions on CT slice phantoms (another modality: the analogue of
#: ImageNet, whose photographs are not X-rays either).
PRETRAIN_TASKS = {
    "cxr_covid": {"kind": "chest_xray", "classes": ["normal", "covid19"], "lesion_contrast": 1.0, "exposure": 0.3,
                  "rotation": 4.0},
    "ct_findings": {"kind": "ct_slice", "lesion_contrast": 1.0},
}
_HELD_OUT = 400  # images of the held-out set on which a freshly pretrained network is scored


def pretraining_config(task: str, arch: str, size: int, n: int, steps: int, lr: float, width: int = 16,
                       batch_size: int = 32, seed: int = 0) -> dict:
    """Everything that determines the pretrained weights, as a plain dict (the cache key).

    Args:
        task: a key of :data:`PRETRAIN_TASKS`.
        arch: classifier name (see :func:`~medlab.models.classifier_name`).
        size: image side in pixels; n: pretraining images; steps: about this many gradient steps;
        lr: AdamW learning rate (cosine schedule); width: first-block channels of ``small_cnn``;
        batch_size, seed: as named.

    Raises:
        ParameterError: unknown task or architecture.
    """
    from .. import __version__

    if task not in PRETRAIN_TASKS:
        raise ParameterError(f"unknown pretraining task {task!r}; known: {sorted(PRETRAIN_TASKS)}")
    return {"task": task, "task_knobs": PRETRAIN_TASKS[task], "arch": classifier_name(arch), "size": int(size),
            "n": int(n), "steps": int(steps), "lr": float(lr), "width": int(width), "batch_size": int(batch_size),
            "seed": int(seed), "medlab": __version__, "torch": torch.__version__.split("+")[0]}


def cache_path(config: dict, root=None) -> Path:
    """Where the weights for ``config`` are cached: ``<root>/pretrained/<task>-<arch>-<hash>.pt``.

    ``root`` defaults to :func:`medlab.data.download.data_dir` (``MEDLAB_DATA_DIR``).
    """
    from ..data.download import data_dir

    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(root) if root is not None else data_dir()
    return base / "pretrained" / f"{config['task']}-{config['arch']}-{digest}.pt"


@dataclass
class Pretrained:
    """Resolved pretraining.

    Attributes:
        source: ``"imagenet"``, ``"phantom"`` or ``"file"``.
        weights: ``"imagenet"`` or the path of the weights file.
        arch: the classifier's name; width: first-block channels of ``small_cnn``.
        from_cache: whether the weights were already there (not trained now).
        config: the :func:`pretraining_config` (empty for ImageNet and files without one).
        history: the pretraining history (phantom only) as a dict.
        auroc: the pretrained network's AUROC on held-out images of its own task (phantom only).
    """

    source: str
    weights: str
    arch: str
    width: int = 16
    from_cache: bool = False
    config: dict = field(default_factory=dict)
    history: dict | None = None
    auroc: float | None = None

    def network(self, in_channels: int = 1, progress: bool = False) -> nn.Module:
        """A fresh copy of the pretrained network, *with the head of its pretraining task*.

        ImageNet networks keep their 1,000-class head (the first convolution is
        adapted to ``in_channels``); phantom and file weights are loaded whole,
        with as many outputs as their head has. Replacing that head by one for
        the new task is left to the caller.
        """
        if self.source == "imagenet":
            return build_classifier(self.arch, 1000, in_channels, weights="imagenet", progress=progress)
        state = read_state_dict(self.weights)
        probe = build_classifier(self.arch, 2, in_channels, width=self.width)
        head_weight = state.get(f"{probe.medlab_head}.weight")
        if head_weight is None:
            raise ParameterError(f"the weights in {self.weights} have no {probe.medlab_head}.weight: "
                                 f"they are not a {self.arch}")
        return build_classifier(self.arch, int(head_weight.shape[0]), in_channels, weights=state, width=self.width)


def _phantom_dataset(task_knobs: dict, n: int, size: int, split: str, seed: int):
    from ..data.sources import load_source

    knobs = {k: v for k, v in task_knobs.items() if k != "kind"}
    return load_source(f"phantom:{task_knobs['kind']}", split=split, n=n, size=size, seed=seed, **knobs)


def pretrain(config: dict, device="cpu", progress: bool = True, path=None) -> Pretrained:
    """Train the network of ``config`` on its phantom task and save it (a medlab checkpoint) at ``path``.

    ``path`` defaults to :func:`cache_path`. Every gradient step sees ``batch_size`` images; the number of
    epochs is chosen to give about ``steps`` steps. Returns the :class:`Pretrained` with the history and
    the AUROC on a held-out phantom set of 400 images (fewer for tiny configurations).
    """
    from torch.utils.data import DataLoader

    from ..data.dataset import make_loader
    from ..metrics import auroc
    from ..train import fit, predict, save_checkpoint

    seed = config["seed"] + 7919  # never the target task's streams
    knobs = config["task_knobs"]
    train = _phantom_dataset(knobs, config["n"], config["size"], "train", seed)
    held_out = _phantom_dataset(knobs, _HELD_OUT if config["n"] >= _HELD_OUT else max(16, config["n"] // 2),
                                config["size"], "test", seed)
    torch.manual_seed(config["seed"])  # the initial weights, too, follow the configuration
    model = build_classifier(config["arch"], len(train.class_names), 1, width=config["width"])
    batch_size = max(1, min(int(config["batch_size"]), len(train)))
    epochs = max(1, round(config["steps"] / math.ceil(len(train) / batch_size)))
    # the loader's own generator fixes the order (and is what the cached weights of earlier versions used)
    order = torch.Generator().manual_seed(int(config["seed"]))
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=order, num_workers=0)
    history = fit(model, loader, epochs=epochs, lr=config["lr"], device=device, seed=config["seed"],
                  progress=progress, scheduler="cosine")
    prob, y = predict(model, make_loader(held_out, 256), device=device)
    score = float(auroc(y, prob)) if len(np.unique(y)) == 2 else float("nan")
    target = Path(path) if path is not None else cache_path(config)
    save_checkpoint(target, model.cpu(), epoch=epochs, history=history,
                    extra={"config": json.dumps(config, sort_keys=True), "auroc": score})
    return Pretrained("phantom", str(target), config["arch"], config["width"], False, config, history.to_dict(),
                      score)


def resolve_pretraining(source: str, config: dict | None = None, device="cpu", progress: bool = True,
                        root=None) -> Pretrained:
    """Turn a lesson's ``PRETRAINING`` parameter into a :class:`Pretrained`.

    Args:
        source: ``"imagenet"``, ``"phantom"`` or a path to a weights file.
        config: the :func:`pretraining_config`. ``"phantom"`` needs it (it is
            the cache key); for ``"imagenet"`` and a file its ``arch`` (and
            ``width``) say which network the weights are for (default
            ``resnet18``).
        root: cache root (default ``MEDLAB_DATA_DIR``).

    ``"phantom"`` reuses ``cache_path(config)`` when it exists and holds the
    same configuration, and pretrains (and caches) otherwise; a damaged cache
    file is trained again.

    Raises:
        ParameterError: unknown source, missing file, ImageNet with the small CNN.
        WeightsNotFoundError: ImageNet weights are neither cached nor downloadable.
    """
    text = str(source).strip()
    config = config or {}
    arch = classifier_name(config.get("arch", "resnet18"))
    width = int(config.get("width", 16))
    if text.lower() == "imagenet":
        if arch == "small_cnn":
            raise ParameterError("ImageNet weights exist only for torchvision architectures (resnet18, ...); "
                                 "with the small CNN use PRETRAINING='phantom' or a weights file")
        build_classifier(arch, 2, 1, weights="imagenet", progress=progress)  # fetches, or fails clearly offline
        return Pretrained("imagenet", "imagenet", arch, width, from_cache=True, config=config)
    if text.lower() == "phantom":
        if not config:
            raise ParameterError("PRETRAINING='phantom' needs a pretraining_config(...)")
        path = cache_path(config, root)
        if path.is_file():
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                extra = checkpoint.get("extra", {})
                if json.loads(extra.get("config", "{}")) == json.loads(json.dumps(config, sort_keys=True)):
                    return Pretrained("phantom", str(path), arch, width, True, config, checkpoint.get("history"),
                                      extra.get("auroc"))
            except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
                pass
        return pretrain(config, device=device, progress=progress, path=path)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ParameterError(f"PRETRAINING={source!r} is neither 'imagenet', 'phantom' nor an existing weights "
                             "file (a state_dict or medlab checkpoint saved with torch.save)")
    return Pretrained("file", str(path), arch, width, True, config)
