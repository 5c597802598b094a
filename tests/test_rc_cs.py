"""RC and CS: the properties their definitions promise."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2lmc.scoring.config import CheckpointFilter, CSConfig, ModelSelector, RCConfig
from e2lmc.scoring.cs import scientific_compliance
from e2lmc.scoring.curves import Curve, Point
from e2lmc.scoring.rc import pair_agreement, ranking_consistency


def curve(name, values, tokens=None, data="science", size="s", arch="arch1", ref_at=None):
    tokens = tokens if tokens is not None else [10.0 * (i + 1) for i in range(len(values))]
    pts = [Point(f"iter_{i:07d}", t, "public" if ref_at is None or t <= ref_at else "hidden",
                 float(v), i) for i, (t, v) in enumerate(zip(tokens, values))]
    return Curve(name, {"data": data, "size": size, "arch": arch}, pts)


RC = RCConfig(models=ModelSelector(data="science"), reference_tokens_b=50.0)
CS = CSConfig(checkpoints=CheckpointFilter(stage=None))


def test_two_models_never_swapping_give_rc_one():
    low = curve("a", np.linspace(0.2, 0.5, 12), ref_at=50)
    high = curve("b", np.linspace(0.3, 0.7, 12), ref_at=50)
    r = ranking_consistency({"a": low, "b": high}, RC)
    assert r["value"] == 1.0 and len(r["checkpoints"]) == 7


def test_two_models_crossing_often():
    a = curve("a", [0.3] * 12, ref_at=50)
    b = curve("b", [0.2, 0.2, 0.2, 0.2, 0.2, 0.4, 0.2, 0.4, 0.2, 0.4, 0.2, 0.4], ref_at=50)
    r = ranking_consistency({"a": a, "b": b}, RC)
    # a leads at the reference; b leads at 4 of the 7 later checkpoints
    assert r["value"] == pytest.approx(3 / 7)


def test_pair_agreement_ties_half():
    assert pair_agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert pair_agreement([1, 2, 3], [3, 2, 1]) == 0.0
    assert pair_agreement([1, 1], [1, 2]) == 0.5


@given(st.lists(st.lists(st.floats(0, 1, allow_nan=False), min_size=10, max_size=10),
                min_size=2, max_size=6))
@settings(max_examples=100, deadline=None)
def test_rc_bounded(rows):
    curves = {f"m{i}": curve(f"m{i}", r, ref_at=50) for i, r in enumerate(rows)}
    v = ranking_consistency(curves, RC)["value"]
    assert 0.0 <= v <= 1.0


def test_rc_without_later_checkpoints_is_zero_with_reason():
    c = {"a": curve("a", [0.1, 0.2]), "b": curve("b", [0.2, 0.3])}
    r = ranking_consistency(c, RCConfig(reference_tokens_b=1000))
    assert r["value"] == 0.0 and "no checkpoint" in r["state"]


def test_rc_single_model():
    r = ranking_consistency({"a": curve("a", [0.1, 0.2, 0.3])}, RC)
    assert r["value"] == 0.0 and "needs 2 models" in r["state"]


def test_cs_consistent_lead_is_one():
    base = np.linspace(0.25, 0.4, 20)
    c = {"sci": curve("sci", base + 0.05), "web": curve("web", base, data="web")}
    r = scientific_compliance(c, CS)
    assert r["value"] == 1.0 and r["science_model"] == "sci" and r["web_model"] == "web"


@given(st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_cs_identical_curves_plus_noise_near_zero(seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0.25, 0.4, 200)
    c = {"sci": curve("sci", base + rng.normal(0, 0.01, 200)),
         "web": curve("web", base + rng.normal(0, 0.01, 200), data="web")}
    assert scientific_compliance(c, CS)["value"] < 0.25


@given(st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_cs_noisy_consistent_lead_near_one(seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0.25, 0.4, 30)
    c = {"sci": curve("sci", base + 0.05 + rng.normal(0, 0.01, 30)),
         "web": curve("web", base + rng.normal(0, 0.01, 30), data="web")}
    assert scientific_compliance(c, CS)["value"] > 0.9


def test_cs_pairs_same_size_and_arch():
    c = {"big": curve("big", [0.9] * 5, size="l"),
         "s2": curve("s2", [0.5] * 5, arch="arch2"),
         "s1": curve("s1", [0.5] * 5, arch="arch1"),
         "web": curve("web", [0.4] * 5, data="web", arch="arch1")}
    assert scientific_compliance(c, CS)["science_model"] == "s1"


def test_cs_without_web_model_is_zero_with_reason():
    r = scientific_compliance({"a": curve("a", [0.1, 0.2])}, CS)
    assert r["value"] == 0.0 and "no web-only model" in r["state"]


def test_cs_output_holds_no_values():
    c = {"sci": curve("sci", [0.61, 0.62]), "web": curve("web", [0.51, 0.52], data="web")}
    r = scientific_compliance(c, CS)
    assert "0.51" not in repr(r) and "0.52" not in repr(r)


@given(st.lists(st.one_of(st.floats(0, 1), st.just(math.nan)), min_size=0, max_size=15),
       st.lists(st.one_of(st.floats(0, 1), st.just(math.nan)), min_size=0, max_size=15))
@settings(max_examples=100, deadline=None)
def test_cs_adversarial_inputs_finite(a, b):
    c = {"sci": curve("sci", a), "web": curve("web", b, data="web")}
    v = scientific_compliance(c, CS)["value"]
    assert math.isfinite(v) and 0.0 <= v <= 1.0
