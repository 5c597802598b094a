"""Diagnostics on synthetic curves with known answers, and on the organizers' real curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from e2lmc.results import Item, ResultRow
from e2lmc.scoring.curves import Curve, Point, curves_from_results
from e2lmc.scoring.curves_file import load_curves
from e2lmc.scoring.diagnostics import (above_chance, chance_level, compute_diagnostics,
                                       decision_accuracy, detrended_std, is_accuracy_metric,
                                       signal_to_noise)

PATTERN = np.array([1.0, -2.0, 0.0, 2.0, -1.0])  # orthogonal to a constant and a line


def curve(offset: float, noise: float, hidden: list[float] = (), slope: float = 0.001):
    """10 public checkpoints on a line, the last 5 perturbed by noise * PATTERN."""
    t = np.arange(10, 110, 10, dtype=float)
    v = offset + slope * t
    v[-5:] += noise * PATTERN
    th = 110 + 10 * np.arange(len(hidden), dtype=float)
    return (np.concatenate([t, th]), np.concatenate([v, hidden]),
            ["public"] * 10 + ["hidden"] * len(hidden))


def test_detrended_std_known_value():
    t = np.arange(5, dtype=float)
    assert detrended_std(t, 3 + 0.5 * t + 0.01 * PATTERN) == pytest.approx(0.01 * math.sqrt(10 / 3))
    assert detrended_std(t, 3 + 0.5 * t) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(detrended_std(t[:2], t[:2]))


def test_snr_known_value():
    e = 0.01
    curves = {"a": curve(0.30, e), "b": curve(0.40, e), "c": curve(0.50, e)}
    snr = signal_to_noise(curves, window=5)
    assert snr["signal"] == pytest.approx(0.20)
    assert snr["noise"] == pytest.approx(e * math.sqrt(10 / 3))
    assert snr["value"] == pytest.approx(0.20 / (e * math.sqrt(10 / 3)))
    assert snr["models"] == 3
    # Noisier checkpoints, same spread: a lower SNR.
    noisy = {k: curve(o, 4 * e) for k, o in (("a", 0.3), ("b", 0.4), ("c", 0.5))}
    assert signal_to_noise(noisy)["value"] == pytest.approx(snr["value"] / 4)


def test_snr_degenerate_cases():
    flat = {"a": curve(0.3, 0.0), "b": curve(0.4, 0.0)}
    out = signal_to_noise(flat)
    assert out["value"] is None and "zero noise" in out["reason"]
    assert signal_to_noise({"a": curve(0.3, 0.01)})["value"] is None


def test_chance_and_distance_above_chance():
    items = [Item("t", 0, "q", "a", ["a", "b", "c", "d"], 0), Item("t", 1, "q", "a", ["a", "b"], 0),
             Item("t", 2, "q", "free text")]
    assert chance_level(items) == pytest.approx(0.375)
    assert chance_level([Item("t", 0, "q", "a")]) is None
    assert is_accuracy_metric("acc,none") and is_accuracy_metric("acc_norm,none")
    assert not is_accuracy_metric("perplexity,none") and not is_accuracy_metric(None)
    curves = {"a": curve(0.30, 0.0), "b": curve(0.50, 0.0)}  # last values 0.40 and 0.60
    out = above_chance(curves, 0.25)
    assert out["mean"] == pytest.approx(0.50) and out["distance"] == pytest.approx(0.25)
    assert out["normalized"] == pytest.approx(0.25 / 0.75) and out["models_above"] == 2


def test_decision_accuracy_known_pairs():
    # Public order a > b > c; hidden order a > c > b: pairs ab, ac agree, bc flips.
    curves = {"a": curve(0.50, 0.0, [0.9]), "b": curve(0.40, 0.0, [0.6]),
              "c": curve(0.30, 0.0, [0.7])}
    out = decision_accuracy(curves)
    assert out["value"] == pytest.approx(2 / 3) and out["pairs"] == 3
    tie = {"a": curve(0.5, 0.0, [0.7]), "b": curve(0.4, 0.0, [0.7])}
    assert decision_accuracy(tie)["value"] == 0.5
    assert decision_accuracy({"a": curve(0.5, 0.0), "b": curve(0.4, 0.0)})["value"] is None


def test_output_is_json_and_hides_hidden_values():
    hidden = [0.123456789, 0.987654321]
    curves = {"a": curve(0.5, 0.01, hidden), "b": curve(0.4, 0.01, hidden[::-1])}
    out = compute_diagnostics(curves, chance=0.25)
    text = json.dumps(out, allow_nan=False)
    assert "0.123456789" not in text and "0.987654321" not in text
    assert set(out) == {"snr", "above_chance", "decision_accuracy"}
    assert compute_diagnostics(curves)["above_chance"] is None


def test_accepts_curve_objects_and_skips_failed_points():
    rows = [ResultRow("m", f"c{i}", float(i), "public", "acc", v)
            for i, v in enumerate([0.3, 0.31, None, 0.33, 0.34])]
    rows[2].status = "error"
    rows += [ResultRow("n", f"c{i}", float(i), "public", "acc", 0.2 + 0.01 * i + 0.001 * (i % 2))
             for i in range(5)]
    curves = curves_from_results(rows, {})
    as_tuples = {m: (c.tokens, c.values, [p.stage for p in c.points]) for m, c in curves.items()}
    assert compute_diagnostics(curves) == compute_diagnostics(as_tuples)
    assert signal_to_noise(curves)["signal"] == pytest.approx(0.34 - 0.24)


def published(path, bench: str, public_max_tokens_b: float = 206.0) -> dict[str, Curve]:
    """The published curves; checkpoints past the notebook's 206B play the hidden stage."""
    return {m: Curve(m, c.attributes, [Point(p.checkpoint, p.tokens_b,
                                             "public" if p.tokens_b <= public_max_tokens_b
                                             else "hidden", p.value, p.iteration)
                                       for p in c.points])
            for m, c in load_curves(path, bench).items()}


def snr_ranking(path) -> list[tuple[str, float]]:
    benches = json.loads(path.read_text())["metadata"]["metrics"]
    out = [(b, compute_diagnostics(published(path, b))["snr"]["value"]) for b in benches]
    return sorted(out, key=lambda x: -x[1])


def test_real_curves_snr_ordering(public_curves):
    ranking = snr_ranking(public_curves)
    assert len(ranking) == 24 and all(math.isfinite(v) and v > 0 for _, v in ranking)
    order = [b for b, _ in ranking]
    print("SNR ranking:", ", ".join(f"{b} {v:.1f}" for b, v in ranking))
    # HellaSwag separates the six models best; the ANLI rounds are the noisiest;
    # MMLU in cloze form (the competition's baseline) beats standard MMLU early on.
    assert order[0] == "hellaswag"
    assert set(order[-3:]) <= {"anli_r1", "anli_r2", "anli_r3", "bbh"}
    assert order.index("hellaswag") < order.index("mmluvar") < order.index("mmlu")
    d = compute_diagnostics(published(public_curves, "hellaswag"))
    assert d["decision_accuracy"]["value"] == 1.0 and d["decision_accuracy"]["pairs"] == 15
