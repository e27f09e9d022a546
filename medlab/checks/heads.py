"""Exercises on reusing a pretrained network (lesson 01): a new head, a frozen backbone, parameter groups.

* 01.1 ``new_head_frozen_backbone(model, num_classes)``: freeze every pretrained
  weight (``requires_grad_(False)``) and put a *new*, trainable linear head with
  ``num_classes`` outputs in place of the old one (``model.fc``), whatever the
  old head's number of outputs (the same number of classes is no reason to keep
  a head trained for another task). Returns the model. This is the linear probe.
* 01.2 ``fine_tuning_groups(model, backbone_lr, head_lr)``: the optimizer's
  parameter groups for full fine-tuning: every parameter of the backbone in one
  group with ``backbone_lr``, the head's (``model.fc``) in another with the
  larger ``head_lr``. Returns ``[{"params": [...], "lr": ...}, ...]`` (an
  optimizer built on such groups is accepted too).

The networks of the test cases (the small CNN and a ResNet-18, whose heads are
both called ``fc``) get random values in every parameter, so that each
parameter can be recognised by its values after the copy the check hands to the
learner's function.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import Case, Exercise, register

__all__ = ["new_head_frozen_backbone", "fine_tuning_groups"]


def new_head_frozen_backbone(model: nn.Module, num_classes: int) -> nn.Module:
    """The reference of 01.1: every pretrained weight frozen, a new trainable ``model.fc`` for ``num_classes``."""
    model.requires_grad_(False)  # the backbone (and the old head, which goes) stop learning
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # a new layer requires gradients by default
    return model


def fine_tuning_groups(model: nn.Module, backbone_lr: float, head_lr: float) -> list[dict]:
    """The reference of 01.2: the backbone's parameters with ``backbone_lr``, the head's (``fc``) with ``head_lr``."""
    backbone = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
    head = list(model.fc.parameters())
    return [{"params": backbone, "lr": backbone_lr}, {"params": head, "lr": head_lr}]


# ------------------------------------------------------------------------------------------ the networks
def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with random values in every parameter (so that each can be told apart by its values)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _small_cnn(in_channels, num_classes, width, depth, seed):
    from ..models import SmallCNN

    return _randomised(SmallCNN(in_channels, num_classes, width=width, depth=depth), seed)


def _resnet18(num_classes, seed):
    from ..models import build_classifier

    return _randomised(build_classifier("resnet18", num_classes, 1), seed)


def _is_head(name: str) -> bool:
    return name.startswith("fc.")


# ------------------------------------------------------------------------------------------ 01.1
def _head_cases(seed: int) -> list[Case]:
    return [
        Case("a small CNN pretrained on a 2-class task, for a new 2-class task (same number of classes: the old "
             "head must still go)", (_small_cnn(1, 2, 4, 3, seed), 2)),
        Case("a small CNN pretrained on 2 classes, for a new 3-class task", (_small_cnn(1, 2, 8, 2, seed + 1), 3)),
        Case("a small CNN on 3-channel images pretrained on 5 classes, for a new 4-class task",
             (_small_cnn(3, 5, 4, 3, seed + 2), 4)),
        Case("a ResNet-18 with a 1,000-class (ImageNet-sized) head, for a new 2-class task",
             (_resnet18(1000, seed + 3), 2)),
    ]


def _compare_head(got, expected, case: Case) -> str | None:
    old, num_classes = case.args
    if not isinstance(got, nn.Module):
        return f"return the model (got {type(got).__name__})"
    head = getattr(got, "fc", None)
    if not isinstance(head, nn.Linear):
        return "the model should keep its head at model.fc, as a single nn.Linear layer"
    if head.in_features != old.fc.in_features:
        return (f"the new head takes {head.in_features} features; the backbone gives {old.fc.in_features} "
                "(use model.fc.in_features)")
    if head.out_features != num_classes:
        if head.out_features == old.fc.out_features:
            return (f"the old head is still there ({head.out_features} outputs, for the pretraining task's "
                    f"classes); the new task has {num_classes}")
        return f"the new head has {head.out_features} outputs; the new task has {num_classes} classes"
    if head.weight.shape == old.fc.weight.shape and torch.equal(head.weight.detach(), old.fc.weight.detach()):
        return ("the old head is still there (its weights are the pretrained ones): it was trained for another "
                "task, even with the same number of outputs; replace it by a new nn.Linear")
    if not all(p.requires_grad for p in head.parameters()):
        return ("the new head is frozen too: nothing would learn (freeze the pretrained network first, then "
                "attach the head, which requires gradients by default)")
    trainable = [name for name, p in got.named_parameters() if p.requires_grad and not _is_head(name)]
    if trainable:
        return (f"the backbone is not frozen: {len(trainable)} of its parameter tensors still require gradients "
                f"(for example {trainable[0]})")
    old_state = dict(old.named_parameters())
    for name, p in got.named_parameters():
        if not _is_head(name) and (name not in old_state or not torch.equal(p.detach(), old_state[name].detach())):
            return f"the backbone's pretrained weights changed (at {name}); freezing must leave them as they are"
    with torch.no_grad():
        x = torch.rand(2, old.features[0].in_channels if hasattr(old, "features") else 1, 32, 32)
        out = got.eval()(x)
    if tuple(out.shape) != (2, num_classes):
        return f"the model's output on 2 images has shape {tuple(out.shape)}, expected (2, {num_classes})"
    return None


register(Exercise(
    key="01.1", title="attach a new head and freeze the backbone", reference=new_head_frozen_backbone,
    cases=_head_cases, compare=_compare_head,
    hint="first model.requires_grad_(False) (every pretrained weight stops learning), then "
         "model.fc = nn.Linear(model.fc.in_features, num_classes): a new layer, trainable by default, even when "
         "the old head already had num_classes outputs; return the model."))


# ------------------------------------------------------------------------------------------ 01.2
def _group_cases(seed: int) -> list[Case]:
    return [
        Case("a small CNN, backbone 1e-4 and head 1e-3", (_small_cnn(1, 2, 4, 3, seed), 1e-4, 1e-3)),
        Case("a small CNN of another depth, backbone 3e-3 and head 1e-2", (_small_cnn(1, 3, 8, 2, seed + 1), 3e-3, 1e-2)),
        Case("a ResNet-18, backbone 3e-4 and head 3e-3", (_resnet18(2, seed + 2), 3e-4, 3e-3)),
    ]


def _groups_of(got):
    if isinstance(got, torch.optim.Optimizer):
        return got.param_groups
    if isinstance(got, dict) and "params" in got:
        return [got]
    return got


def _compare_groups(got, expected, case: Case) -> str | None:
    model, backbone_lr, head_lr = case.args
    groups = _groups_of(got)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        return ("return a list of parameter groups, each a dict such as {'params': [...], 'lr': ...} "
                f"(got {type(got).__name__})")
    named = list(model.named_parameters())
    placed: dict[str, float] = {}
    for i, group in enumerate(groups):
        params = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
        if "lr" not in group:
            return f"group {i} has no 'lr': give every group its own learning rate"
        for p in params:
            if not isinstance(p, torch.Tensor):
                return f"group {i} holds {type(p).__name__} objects; it should hold the model's parameters"
            match = [name for name, q in named if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
            if not match:
                return f"group {i} holds a tensor of shape {tuple(p.shape)} that is not a parameter of the model"
            name = match[0]
            if name in placed:
                return f"the parameter {name} is in two groups; each parameter belongs to exactly one"
            placed[name] = float(group["lr"])
    missing = [name for name, _ in named if name not in placed]
    if any(_is_head(name) for name in missing):
        return ("the head's parameters are in no group: the optimizer would never train the new head "
                f"(missing: {', '.join(n for n in missing if _is_head(n))})")
    if missing:
        return (f"{len(missing)} backbone parameter tensors are in no group (for example {missing[0]}): fine-tuning "
                "trains the whole network, the backbone at a smaller learning rate")
    for name, lr in placed.items():
        want = head_lr if _is_head(name) else backbone_lr
        if abs(lr - want) > 1e-12 * max(1.0, abs(want)):
            part = "head" if _is_head(name) else "backbone"
            if part == "backbone" and abs(lr - head_lr) <= 1e-12 * max(1.0, head_lr):
                return (f"the backbone ({name}) gets the head's learning rate {head_lr:g}; it should get the smaller "
                        f"{backbone_lr:g}, so that the pretrained features are adjusted rather than overwritten")
            return f"the {part} parameter {name} gets learning rate {lr:g}; it should get {want:g}"
    return None


register(Exercise(
    key="01.2", title="parameter groups for fine-tuning", reference=fine_tuning_groups,
    cases=_group_cases, compare=_compare_groups,
    hint="two groups: [{'params': <every parameter whose name does not start with 'fc.'>, 'lr': backbone_lr}, "
         "{'params': list(model.fc.parameters()), 'lr': head_lr}]; model.named_parameters() gives (name, parameter) "
         "pairs."))
