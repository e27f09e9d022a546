"""medlab.metrics.contrast_detail and wilson_interval against hand-computed values; the figure draws."""
from __future__ import annotations

import numpy as np
import pytest

from medlab.errors import ParameterError
from medlab.metrics import contrast_detail, wilson_interval
from medlab.viz import plot_contrast_detail


def test_wilson_interval_matches_the_formula_and_known_values():
    low, high = wilson_interval(8, 10)
    assert (float(low), float(high)) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook 8/10 example
    low, high = wilson_interval(0, 20)
    assert float(low) == 0.0 and float(high) == pytest.approx(0.1611, abs=1e-4)   # not empty at 0 successes
    low, high = wilson_interval(20, 20)
    assert float(high) == 1.0 and float(low) == pytest.approx(1 - 0.1611, abs=1e-4)
    low, high = wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)
    try:  # the same interval as statsmodels where it is installed
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        return
    for k, n in [(3, 7), (11, 40), (1, 2)]:
        np.testing.assert_allclose(wilson_interval(k, n), proportion_confint(k, n, method="wilson"), atol=1e-10)


def test_table_against_a_hand_computed_example():
    #            size:  1  2  3  4  9  10   contrast in [0, 1]
    detected = [0, 1, 1, 1, 0, 1]
    size = [1, 2, 3, 4, 9, 10]
    contrast = [0.2, 0.2, 0.8, 0.2, 0.6, 1.0]
    t = contrast_detail(detected, size, contrast, size_bins=[0, 3, 10], contrast_bins=[0, 0.5, 1])
    assert list(t["size_bin"]) == ["[0, 3)", "[0, 3)", "[3, 10]", "[3, 10]"]
    assert list(t["contrast_bin"]) == ["[0, 0.5)", "[0.5, 1]", "[0, 0.5)", "[0.5, 1]"]
    # [0,3) x low: sizes 1, 2 -> 1 of 2; [0,3) x high: none; [3,10] x low: size 4 -> 1 of 1;
    # [3,10] x high: sizes 3, 9, 10 (10 is on the last, closed edge) -> 2 of 3
    assert list(t["count"]) == [2, 0, 1, 3]
    assert list(t["detected"]) == [1, 0, 1, 2]
    np.testing.assert_allclose(t["sensitivity"], [0.5, np.nan, 1.0, 2 / 3])
    low, high = wilson_interval([1, 1, 2], [2, 1, 3])
    np.testing.assert_allclose(t["ci_low"].to_numpy()[[0, 2, 3]], low)
    np.testing.assert_allclose(t["ci_high"].to_numpy()[[0, 2, 3]], high)
    assert t.attrs["left_out"] == 0


def test_empty_cells_are_nan_with_count_zero_and_outside_values_are_left_out():
    t = contrast_detail([True, False, True], [5, 50, np.nan], [0.5, 0.5, 0.5], [0, 10, 20], [0, 1])
    assert list(t["count"]) == [1, 0]
    assert np.isnan(t["sensitivity"][1]) and np.isnan(t["ci_low"][1]) and np.isnan(t["ci_high"][1])
    assert t.attrs["left_out"] == 2   # 50 beyond the last edge, and nan
    # an edge value belongs to the bin it opens; the last edge to the last bin; inf makes an open bin
    t = contrast_detail([1, 1, 1], [10, 20, 1e9], [0, 0, 0], [0, 10, 20, np.inf], [0, 1])
    assert list(t["count"]) == [0, 1, 2] and t["size_bin"].iloc[-1] == "[20, inf)"


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ParameterError, match="increasing"):
        contrast_detail([1], [1], [1], [0, 0], [0, 1])
    with pytest.raises(ParameterError, match="one value per finding"):
        contrast_detail([1, 0], [1], [1], [0, 2], [0, 2])


def test_plot_contrast_detail_draws_a_heat_map_and_curves():
    rng = np.random.default_rng(0)
    size, contrast = rng.uniform(0, 100, 200), rng.uniform(0, 1, 200)
    detected = rng.uniform(size=200) < (size / 100 + contrast) / 2
    t = contrast_detail(detected, size, contrast, [-10, 0, 30, 100], [0, 0.5, 1])   # first size bin empty
    fig = plot_contrast_detail(t, "size (px)", "contrast (a.u.)", title="test")
    heat, curves = fig.axes[0], fig.axes[1]
    assert heat.images[0].get_array().shape == (2, 3)
    assert any(text.get_text() == "n=0" for text in heat.texts)
    assert len(curves.get_legend().get_texts()) == 2
    with pytest.raises(ParameterError):
        plot_contrast_detail(t.iloc[:-1])
