"""Lesson 01's exercises (medlab.checks.heads): the references pass, the natural mistakes fail, stubs stop.

Also: the cells of lesson 01 tagged ``technique`` (the plain training loop, the two exercises, the three arms)
define what the references compute, and the plain loop is the loop of ``medlab.train.fit``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medlab import checks
from medlab.checks import heads as ref

import notebook_cells


def _verdict(key, fn):
    return checks.run_cases(checks.exercises()[key], fn)[1]


# ------------------------------------------------------------------------------ 01.1 new head, frozen backbone
def test_new_head_reference_passes_and_gives_a_fresh_trainable_head():
    assert _verdict("01.1", ref.new_head_frozen_backbone) is None
    old = ref._small_cnn(1, 2, 4, 3, seed=0)
    model = ref.new_head_frozen_backbone(ref._small_cnn(1, 2, 4, 3, seed=0), 2)
    assert not torch.equal(model.fc.weight, old.fc.weight)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def _head_left_in_place(model, k):
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    return model


def _backbone_not_frozen(model, k):
    model.fc = nn.Linear(model.fc.in_features, k)
    return model


def _head_frozen_too(model, k):
    model.fc = nn.Linear(model.fc.in_features, k)
    model.requires_grad_(False)
    return model


def _wrong_outputs(model, k):
    model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, model.fc.out_features)
    return model


def _new_head_only_when_sizes_differ(model, k):  # the old build_model's policy
    model.requires_grad_(False)
    if model.fc.out_features != k:
        model.fc = nn.Linear(model.fc.in_features, k)
    else:
        model.fc.requires_grad_(True)
    return model


def _reinitialised_backbone(model, k):
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return ref.new_head_frozen_backbone(model, k)


def _returns_nothing(model, k):
    ref.new_head_frozen_backbone(model, k)


@pytest.mark.parametrize("wrong, why", [
    (_head_left_in_place, "old head is still there"),
    (_new_head_only_when_sizes_differ, "old head is still there"),
    (_backbone_not_frozen, "backbone is not frozen"),
    (_head_frozen_too, "head is frozen too"),
    (_wrong_outputs, "outputs"),
    (_reinitialised_backbone, "pretrained weights changed"),
    (_returns_nothing, "return the model"),
])
def test_new_head_check_fails_known_wrong_versions(wrong, why):
    message = _verdict("01.1", wrong)
    assert message is not None and why in message, message


# ------------------------------------------------------------------------------ 01.2 parameter groups
def test_parameter_groups_reference_passes_and_an_optimizer_is_accepted():
    assert _verdict("01.2", ref.fine_tuning_groups) is None
    assert _verdict("01.2", lambda m, b, h: torch.optim.AdamW(ref.fine_tuning_groups(m, b, h))) is None
    model = ref._small_cnn(1, 2, 4, 3, seed=0)
    groups = ref.fine_tuning_groups(model, 1e-4, 1e-3)
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _one_rate_for_all(model, backbone_lr, head_lr):
    return [{"params": list(model.parameters()), "lr": head_lr}]


def _head_missing(model, backbone_lr, head_lr):
    return [{"params": [p for n, p in model.named_parameters() if not n.startswith("fc.")], "lr": backbone_lr}]


def _backbone_at_head_rate(model, backbone_lr, head_lr):
    backbone = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    return [{"params": backbone, "lr": head_lr}, {"params": list(model.fc.parameters()), "lr": head_lr}]


def _rates_swapped(model, backbone_lr, head_lr):
    return ref.fine_tuning_groups(model, head_lr, backbone_lr)


def _head_twice(model, backbone_lr, head_lr):
    return [{"params": list(model.parameters()), "lr": backbone_lr},
            {"params": list(model.fc.parameters()), "lr": head_lr}]


def _no_rate(model, backbone_lr, head_lr):
    groups = ref.fine_tuning_groups(model, backbone_lr, head_lr)
    del groups[0]["lr"]
    return groups


def _only_the_first_conv(model, backbone_lr, head_lr):
    first = next(model.parameters())
    return [{"params": [first], "lr": backbone_lr}, {"params": list(model.fc.parameters()), "lr": head_lr}]


@pytest.mark.parametrize("wrong, why", [
    (_one_rate_for_all, "head's learning rate"),
    (_head_missing, "head's parameters are in no group"),
    (_backbone_at_head_rate, "head's learning rate"),
    (_rates_swapped, "should get"),
    (_head_twice, "in two groups"),
    (_no_rate, "no 'lr'"),
    (_only_the_first_conv, "in no group"),
    (lambda m, b, h: None, "list of parameter groups"),
])
def test_parameter_groups_check_fails_known_wrong_versions(wrong, why):
    message = _verdict("01.2", wrong)
    assert message is not None and why in message, message


# ------------------------------------------------------------------------------ the notebook
@pytest.fixture(scope="module")
def lesson():
    """The lesson's technique cells, run with small stand-ins for what earlier cells define."""
    from medlab.models import build_classifier

    pretrained_net = ref._small_cnn(1, 2, 4, 3, seed=7)

    class Pretrained:  # what medlab.models.resolve_pretraining hands the lesson
        def network(self, in_channels=1):
            import copy
            return copy.deepcopy(pretrained_net)

    knobs = {"width": 4, "lr": 1e-2, "lr_probe": 1e-2, "lr_backbone": 1e-3, "lr_head": 1e-2}
    ns = notebook_cells.run_tagged("01_transfer_learning", "technique", namespace={
        "arch": "small_cnn", "num_classes": 2, "in_channels": 1, "K": knobs, "pretrained": Pretrained()})
    ns["_build"] = lambda: build_classifier("small_cnn", 2, 1, width=4)
    ns["_pretrained_net"] = pretrained_net
    return ns


def test_notebook_exercises_pass_their_checks(lesson):
    assert _verdict("01.1", lesson["new_head_frozen_backbone"]) is None
    assert _verdict("01.2", lesson["fine_tuning_groups"]) is None


def test_notebook_arms_start_where_the_text_says(lesson):
    old = lesson["_pretrained_net"]
    scratch, opt = lesson["from_scratch"]()
    assert all(p.requires_grad for p in scratch.parameters()) and opt.param_groups[0]["lr"] == 1e-2
    probe, opt = lesson["linear_probe"]()
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert not torch.equal(probe.fc.weight, old.fc.weight)  # a fresh head, though the class counts match
    assert torch.equal(probe.features[0].weight, old.features[0].weight)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    tuned, opt = lesson["fine_tuned"]()
    assert not torch.equal(tuned.fc.weight, old.fc.weight)
    assert torch.equal(tuned.features[0].weight, old.features[0].weight)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert all(p.requires_grad for p in tuned.parameters())


def test_notebook_plain_loop_is_the_loop_of_fit(lesson):
    from medlab.data import make_loader
    from medlab.train import fit

    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(24, 1, 32, 32, generator=g), torch.arange(24) % 2
    torch.manual_seed(0)
    a = lesson["train_plain"](lesson["_build"](), make_loader((images, labels), 8, shuffle=True, seed=1), 2, 1e-2)
    torch.manual_seed(0)
    b = lesson["_build"]()
    fit(b, make_loader((images, labels), 8, shuffle=True, seed=1), optimizer=torch.optim.AdamW(b.parameters(), lr=1e-2),
        epochs=2, device="cpu", amp=None, channels_last=False, progress=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6), name
