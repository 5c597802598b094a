"""Signal quality (SQ), exactly as the organizers' scoring notebook computes it.

For one model's curve `a` (n points in training order):
  monotonicity = max(0, Spearman rho between 0..n-1 and a), with ordinal ranks from a
                 double argsort (ties broken by position, no averaging);
  smoothness   = mean over lags 1..floor(n/4)-1 of |Pearson corr(a[lag:], a[:n-lag])|;
  SQ_model     = (monotonicity + smoothness) / 2.

NaN policy (the notebook has none; the leaderboard never receives NaN):
  * points without a value (failed checkpoints) are dropped before scoring;
  * fewer than 3 points, or a constant curve: no signal, SQ_model = 0 (a constant curve
    would otherwise get monotonicity 1 from position tie-breaking);
  * n < 8 leaves the official lag range empty: `short_curve: lag1` uses lag 1 alone,
    `short_curve: zero` scores smoothness 0;
  * a lag whose correlation is undefined (a constant slice) contributes 0;
  * SQ over models is the mean over the selected models that have a curve; none -> 0.
Every fallback is recorded in the model's `state` so the report can say why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from e2lmc.scoring.config import SQConfig
from e2lmc.scoring.curves import Curve, select_models

OK = "ok"


def ordinal_ranks(a: np.ndarray) -> np.ndarray:
    """Double argsort: rank of each element, ties broken by position."""
    return np.argsort(np.argsort(a, kind="stable"), kind="stable")


def monotonicity(a: np.ndarray) -> float:
    """Spearman rho of the curve against training order, clipped below at 0."""
    n = len(a)
    if n < 2:
        return math.nan
    d = ordinal_ranks(np.arange(n)) - ordinal_ranks(np.asarray(a, dtype=float))
    rho = 1.0 - 6.0 * float(np.sum(d.astype(float) ** 2)) / (n * (n * n - 1))
    return max(rho, 0.0)


def official_lags(n: int) -> range:
    """Lags 1..floor(n/4)-1 (n = 14 gives lags 1 and 2)."""
    return range(1, n // 4)


def autocorrelation(a: np.ndarray, lag: int) -> float:
    """Pearson correlation of a[lag:] with a[:n-lag]; NaN when either slice is constant."""
    x, y = a[lag:], a[: len(a) - lag]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def smoothness(a: np.ndarray, lags: range | list[int]) -> float:
    """Mean |autocorrelation| over `lags`; NaN for an empty lag range (as the notebook)."""
    vals = [abs(autocorrelation(np.asarray(a, dtype=float), lag)) for lag in lags]
    if not vals:
        return math.nan
    return float(np.mean(vals))


def sq_curve(a: np.ndarray, short_curve: str = "lag1") -> dict[str, Any]:
    """SQ of one curve, with the NaN policy applied; returns every component."""
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    out: dict[str, Any] = {"n": n, "monotonicity": 0.0, "smoothness": 0.0, "sq": 0.0,
                           "lags": [], "state": OK}
    if n < 3:
        out["state"] = f"too few points ({n} < 3): SQ 0"
        return out
    if np.ptp(a) == 0:
        out["state"] = "constant curve: no signal, SQ 0"
        return out
    lags = list(official_lags(n))
    if not lags:
        if short_curve == "lag1":
            lags = [1]
            out["state"] = f"n={n} < 8: official lag range empty, lag 1 used"
        else:
            out["state"] = f"n={n} < 8: official lag range empty, smoothness 0"
    mono = monotonicity(a)
    per_lag = [autocorrelation(a, lag) for lag in lags]
    if any(math.isnan(r) for r in per_lag):
        out["state"] = "undefined autocorrelation at some lag: counted as 0"
    smooth = float(np.mean([0.0 if math.isnan(r) else abs(r) for r in per_lag])) if lags else 0.0
    out.update(monotonicity=mono, smoothness=smooth, sq=(mono + smooth) / 2.0, lags=lags)
    return out


def signal_quality(curves: dict[str, Curve], cfg: SQConfig) -> dict[str, Any]:
    """SQ per selected model and their mean (the leaderboard value)."""
    per_model: dict[str, Any] = {}
    for curve in select_models(curves, cfg.models):
        sel = curve.select(cfg.checkpoints)
        res = sq_curve(sel.values, cfg.short_curve)
        res["checkpoints"] = [p.checkpoint for p in sel.finite().points]
        per_model[curve.model] = res
    if not per_model:
        return {"value": 0.0, "monotonicity": 0.0, "smoothness": 0.0, "models": {},
                "state": "no selected model has a curve: SQ 0"}
    return {
        "value": float(np.mean([m["sq"] for m in per_model.values()])),
        "monotonicity": float(np.mean([m["monotonicity"] for m in per_model.values()])),
        "smoothness": float(np.mean([m["smoothness"] for m in per_model.values()])),
        "models": per_model,
        "state": OK,
    }
