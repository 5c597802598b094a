"""SQ: the official figure reproduced, the formula's properties, and the NaN policy."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2lmc.scoring.curves_file import score_curves
from e2lmc.scoring.sq import monotonicity, official_lags, smoothness, sq_curve

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_official_figure_anli_r3(public_curves):
    res = score_curves(public_curves, "anli_r3", ["dense-1b-arch1"])
    m = res["models"]["dense-1b-arch1"]
    assert m["n"] == 14 and m["lags"] == [1, 2]
    assert round(m["monotonicity"], 4) == 0.0
    assert round(m["smoothness"], 4) == 0.3473
    assert round(m["sq"], 4) == 0.1737


def test_cli_prints_official_figure(public_curves):
    out = subprocess.run(
        [sys.executable, "-m", "e2lmc", "score-curves", str(public_curves),
         "--benchmark", "anli_r3", "--models", "dense-1b-arch1"],
        capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("dense-1b-arch1"))
    assert line.split()[1:] == ["14", "0.0000", "0.3473", "0.1737"]


def test_notebook_selection_keeps_multiples_of_4000_up_to_206b(public_curves):
    res = score_curves(public_curves, "mmluvar")
    assert sorted(res["models"]) == ["dense-1b-arch1", "dense-3b-arch1", "dense-500m-arch1"]
    ck = res["models"]["dense-1b-arch1"]["checkpoints"]
    assert ck[0] == "iter_0004000" and ck[-1] == "iter_0056000" and len(ck) == 14


def test_lag_range_matches_notebook():
    assert list(official_lags(14)) == [1, 2]
    assert list(official_lags(8)) == [1]
    assert list(official_lags(7)) == []


def test_ties_broken_by_position():
    # [1, 1, 2]: ordinal ranks 0,1,2 -> perfect order
    assert monotonicity(np.array([1.0, 1.0, 2.0])) == 1.0
    # decreasing curves are clipped to 0
    assert monotonicity(np.arange(10.0)[::-1]) == 0.0


def test_smoothness_matches_pearson_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20)
    expected = np.mean([abs(np.corrcoef(a[k:], a[:-k])[0, 1]) for k in (1, 2, 3, 4)])
    assert smoothness(a, official_lags(20)) == pytest.approx(expected)


@given(st.lists(floats, min_size=3, max_size=40, unique=True))
@settings(max_examples=200, deadline=None)
def test_sq_bounded(values):
    r = sq_curve(np.array(values))
    for k in ("monotonicity", "smoothness", "sq"):
        assert 0.0 <= r[k] <= 1.0 and math.isfinite(r[k])


@given(st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False), min_size=2,
                max_size=40, unique=True))
@settings(max_examples=100, deadline=None)
def test_strictly_increasing_has_monotonicity_one(values):
    assert monotonicity(np.array(sorted(values))) == 1.0


@pytest.mark.parametrize("curve, state", [
    ([0.3] * 14, "constant"),
    ([0.3], "too few"),
    ([], "too few"),
    ([math.nan] * 10, "too few"),
    ([0.1, 0.2, 0.3, 0.4], "lag 1 used"),
])
def test_nan_policy(curve, state):
    r = sq_curve(np.array(curve, dtype=float))
    assert state in r["state"]
    assert all(math.isfinite(r[k]) for k in ("monotonicity", "smoothness", "sq"))


def test_constant_curve_scores_zero_not_half():
    assert sq_curve(np.full(14, 0.25))["sq"] == 0.0


def test_failed_points_are_dropped():
    with_nan = sq_curve(np.array([0.1, math.nan, 0.2, 0.3, 0.25, 0.4, 0.5, 0.45, 0.6]))
    without = sq_curve(np.array([0.1, 0.2, 0.3, 0.25, 0.4, 0.5, 0.45, 0.6]))
    assert with_nan["sq"] == without["sq"] and with_nan["n"] == 8


def test_short_curve_zero_policy():
    assert sq_curve(np.array([0.1, 0.2, 0.3, 0.4]), "zero")["smoothness"] == 0.0
