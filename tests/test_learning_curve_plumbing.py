"""Plumbing of lesson 01's learning curves: stratified subsets, the bootstrap of a mean over seeds, the figures."""
from __future__ import annotations

import numpy as np
import pytest

from medlab import metrics, viz
from medlab.data import stratified_subset
from medlab.errors import ParameterError


def test_stratified_subset_keeps_proportions_and_is_reproducible():
    labels = np.array([0] * 75 + [1] * 25)
    index = stratified_subset(labels, 20, seed=3)
    assert len(index) == 20 and len(set(index.tolist())) == 20 and list(index) == sorted(index)
    assert np.bincount(labels[index]).tolist() == [15, 5]
    assert np.array_equal(index, stratified_subset(labels, 20, seed=3))
    assert not np.array_equal(index, stratified_subset(labels, 20, seed=4))
    assert np.bincount(labels[stratified_subset(labels, 3, seed=0)]).min() >= 1  # every class, even when tiny
    assert np.array_equal(stratified_subset(labels, 100), np.arange(100))
    with pytest.raises(ParameterError):
        stratified_subset(labels, 1)  # cannot hold both classes
    with pytest.raises(ParameterError):
        stratified_subset(labels, 101)


def test_bootstrap_auroc_is_bootstrap_ci_of_the_mean_auroc_over_seeds():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    probs = np.round(np.clip(y[:, None] * 0.3 + rng.random((60, 3)) * 0.7, 0, 1), 1)  # rounded: ties too

    def mean_auroc(t, p):
        return np.mean([metrics.auroc(t, p[:, s]) for s in range(p.shape[1])])

    slow = metrics.bootstrap_ci(mean_auroc, y, probs, n=200, seed=3)
    fast = metrics.bootstrap_auroc(y, probs, n=200, seed=3)
    assert fast.estimate == pytest.approx(slow.estimate)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))
    assert fast.low < fast.estimate < fast.high and fast.n_resamples == 200 and fast.n_skipped == 0
    one = metrics.bootstrap_auroc(y, probs[:, 0], n=200, seed=3)  # one model: (N,) scores
    assert one.estimate == pytest.approx(metrics.auroc(y, probs[:, 0]))
    rare = np.array([0] * 9 + [1])  # single-class resamples are skipped and counted, as bootstrap_ci does
    score = rng.random(10)
    assert metrics.bootstrap_auroc(rare, score, n=100).n_skipped == metrics.bootstrap_ci(
        metrics.auroc, rare, score, n=100).n_skipped > 0
    with pytest.raises(ParameterError, match="one class"):
        metrics.bootstrap_auroc(np.zeros(5, int), rng.random(5))
    with pytest.raises(ParameterError, match="shape"):
        metrics.bootstrap_auroc(y, probs[:10])


def test_size_curves_and_roc_figures():
    summary = [{"group": g, "size": s, "mean": m, "low": m - 0.05, "high": min(1.0, m + 0.05)}
               for g, base in (("a", 0.6), ("b", 0.8)) for s, m in ((10, base), (100, base + 0.1))]
    runs = [{"group": r["group"], "size": r["size"], "value": r["mean"] + d} for r in summary for d in (-0.01, 0.01)]
    fig = viz.plot_size_curves(summary, runs, labels={"a": "from scratch"})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == ["from scratch", "b"]
    assert len(ax.collections) == 4  # a band and the seeds' dots per group
    assert len(viz.plot_size_curves([{"group": "a", "size": 5, "mean": 0.7}]).axes) == 1  # no bands, no dots
    y = np.array([0, 1] * 10)
    fig = viz.plot_rocs(y, {"perfect": y.astype(float), "chance": np.full(20, 0.5)})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "perfect (AUROC 1.000)" and labels[1] == "chance (AUROC 0.500)"
