"""Plumbing that lesson 03 moved into the generic modules: viz.class_examples, viz.plot_grouped_bars."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import viz
from medlab.errors import ParameterError


def test_class_examples_draws_per_class_rows_titled_with_the_class():
    images = torch.rand(30, 1, 16, 16)
    labels = torch.arange(30) % 3
    fig = viz.class_examples(images, labels, ["normal", "pneumonia", "covid19"], per_class=2, seed=0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["normal"] * 2 + ["pneumonia"] * 2 + ["covid19"] * 2
    again = viz.class_examples(images.numpy(), labels.numpy(), ["a", "b", "c"], per_class=2, seed=0)
    first = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    second = [ax.images[0].get_array() for ax in again.axes if ax.images]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # same seed, same images


def test_class_examples_skips_an_absent_class_and_refuses_bad_input():
    images, labels = np.random.rand(4, 8, 8), np.array([0, 0, 2, 2])
    fig = viz.class_examples(images, labels, ["a", "b", "c"], per_class=3)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["a", "a", "c", "c"]
    with pytest.raises(ParameterError, match="labels for"):
        viz.class_examples(images, labels[:3], ["a", "b", "c"])
    with pytest.raises(ParameterError, match="per_class"):
        viz.class_examples(images, labels, ["a", "b", "c"], per_class=0)


def test_plot_grouped_bars_draws_one_bar_per_group_and_series_with_its_value():
    values = {"whole image": {"A": 0.98, "B": 0.61}, "lungs only": {"A": 0.93, "B": 0.92}}
    fig = viz.plot_grouped_bars(values, ylabel="AUROC", ylim=(0.3, 1.1), reference=0.5, title="t")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    assert heights == [0.61, 0.92, 0.93, 0.98]
    assert {t.get_text() for t in ax.texts} == {"0.98", "0.61", "0.93", "0.92"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["whole image", "lungs only"]
    assert ax.get_title() == "t" and ax.get_ylabel() == "AUROC"


def test_plot_grouped_bars_needs_the_same_series_in_every_group():
    with pytest.raises(ParameterError, match="same series"):
        viz.plot_grouped_bars({"a": {"x": 1.0}, "b": {"y": 1.0}})
    with pytest.raises(ParameterError, match="at least one group"):
        viz.plot_grouped_bars({})
