"""Diagnostics beyond the official score, the ones used to pick early-training tasks.

- Signal-to-noise ratio (after AI2's "Signal and Noise"): how far apart the models are at
  the last public checkpoint, over how much one model's value jitters from checkpoint to
  checkpoint near it. A benchmark with SNR below about 1 cannot tell the models apart.
- Distance above chance (after HF FineTasks): for accuracy on multiple-choice items, how
  far the models are above random guessing (chance = mean of 1/number of options).
- Decision accuracy: the share of model pairs ordered at the public horizon as they are at
  the last hidden checkpoint, i.e. whether early results predict the later ranking.

Inputs are curves per model, either `e2lmc.scoring.curves.Curve`s or plain
`(tokens_b, values, stages)` tuples; outputs are JSON-ready aggregates only: nothing here
reveals a value at a hidden checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from e2lmc.results import Item, finite_or_none
from e2lmc.scoring.curves import Curve

CurveLike = Curve | tuple[Sequence[float], Sequence[float], Sequence[str]]
Curves = Mapping[str, CurveLike]

DEFAULT_WINDOW = 5
ACCURACY_METRICS = ("acc", "acc_norm", "exact_match", "mcc")


def _points(curve: CurveLike, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, values) of one stage, finite values only, in training order."""
    if isinstance(curve, Curve):
        tokens, values, stages = curve.tokens, curve.values, [p.stage for p in curve.points]
    else:
        tokens, values, stages = curve
    t = np.asarray(tokens, dtype=float)
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    keep = np.asarray([s == stage for s in stages], dtype=bool) & np.isfinite(v) & np.isfinite(t)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def detrended_std(tokens: np.ndarray, values: np.ndarray) -> float:
    """Checkpoint-to-checkpoint noise: std of the residuals around a straight-line fit
    (the trend is the learning signal, not noise); NaN with fewer than 3 points."""
    n = len(values)
    if n < 3:
        return math.nan
    x = tokens - tokens.mean()
    slope = float(np.dot(x, values - values.mean()) / np.dot(x, x)) if np.dot(x, x) > 0 else 0.0
    resid = values - values.mean() - slope * x
    return float(math.sqrt(np.dot(resid, resid) / (n - 2)))


def signal_to_noise(curves: Curves, window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """Spread of the models' last public values (max - min) over the mean detrended std of
    each model's last `window` public checkpoints."""
    last: dict[str, float] = {}
    noises: list[float] = []
    for name, curve in curves.items():
        t, v = _points(curve, "public")
        if len(v) == 0:
            continue
        last[name] = float(v[-1])
        noise = detrended_std(t[-window:], v[-window:])
        if math.isfinite(noise):
            noises.append(noise)
    out: dict[str, Any] = {"value": None, "signal": None, "noise": None, "window": window,
                           "models": len(last)}
    if len(last) < 2 or not noises:
        out["reason"] = ("needs 2+ models with public checkpoints, 3+ of them near the "
                         "public horizon")
        return out
    signal = max(last.values()) - min(last.values())
    noise = float(np.mean(noises))
    out["signal"], out["noise"] = finite_or_none(signal), finite_or_none(noise)
    scale = max(abs(x) for x in last.values()) or 1.0
    if noise > 1e-9 * scale:  # below this it is rounding error, not jitter
        out["value"] = finite_or_none(signal / noise)
    else:
        out["reason"] = "the curves do not move near the public horizon (zero noise)"
    return out


def chance_level(items: Iterable[Item]) -> float | None:
    """Accuracy of random guessing: mean of 1/options over multiple-choice items."""
    rates = [1.0 / len(it.choices) for it in items if it.choices and len(it.choices) >= 2]
    return float(np.mean(rates)) if rates else None


def is_accuracy_metric(metric: str | None) -> bool:
    """`acc,none`, `acc_norm,none`, ...: metrics for which chance is 1/options."""
    return bool(metric) and str(metric).split(",")[0] in ACCURACY_METRICS


def above_chance(curves: Curves, chance: float) -> dict[str, Any]:
    """How far the models are above chance at their last public checkpoint."""
    finals = []
    for curve in curves.values():
        _, v = _points(curve, "public")
        if len(v):
            finals.append(float(v[-1]))
    out: dict[str, Any] = {"chance": finite_or_none(chance), "mean": None, "distance": None,
                           "normalized": None, "models_above": None, "models": len(finals)}
    if not finals:
        return out
    mean = float(np.mean(finals))
    out.update(mean=finite_or_none(mean), distance=finite_or_none(mean - chance),
               models_above=int(sum(f > chance for f in finals)))
    if chance < 1:
        out["normalized"] = finite_or_none((mean - chance) / (1 - chance))
    return out


def _agreement(a: float, b: float) -> float:
    """1 when two differences have the same sign, 0 when opposite, 0.5 when one is a tie."""
    sa, sb = np.sign(a), np.sign(b)
    if sa == sb:
        return 1.0
    return 0.5 if sa == 0 or sb == 0 else 0.0


def decision_accuracy(curves: Curves) -> dict[str, Any]:
    """Share of model pairs ordered at the last public checkpoint as at the last hidden one."""
    ends: dict[str, tuple[float, float]] = {}
    for name, curve in curves.items():
        _, pub = _points(curve, "public")
        _, hid = _points(curve, "hidden")
        if len(pub) and len(hid):
            ends[name] = (float(pub[-1]), float(hid[-1]))
    pairs = list(combinations(sorted(ends), 2))
    out: dict[str, Any] = {"value": None, "pairs": len(pairs), "models": len(ends)}
    if not pairs:
        out["reason"] = "needs 2+ models with both public and hidden checkpoints"
        return out
    agree = [_agreement(ends[a][0] - ends[b][0], ends[a][1] - ends[b][1]) for a, b in pairs]
    out["value"] = finite_or_none(np.mean(agree))
    return out


def compute_diagnostics(curves: Curves, *, chance: float | None = None,
                        window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """All diagnostics of one benchmark, aggregates only (safe to show participants)."""
    return {
        "snr": signal_to_noise(curves, window),
        "above_chance": above_chance(curves, chance) if chance is not None else None,
        "decision_accuracy": decision_accuracy(curves),
    }
