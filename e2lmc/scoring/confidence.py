"""Confidence intervals for SQ, RC, CS and the score: a bootstrap over documents.

A benchmark is one draw of documents from the population its author had in mind; another
draw of the same size would give other curves and other scores. Resampling the documents
with replacement (B replicates, seeded) imitates that: a replicate's value at a checkpoint
is the mean of the per-document values over the resampled documents, every checkpoint
with the same documents, as a benchmark keeps its documents across checkpoints. The
leaderboard formula then runs unchanged on each replicate (the judge's and the leakage
check's verdicts stay fixed). Checkpoints are not resampled: the interval says how much a
score owes to the choice of documents, not to the training run.

The interval is the basic bootstrap one: the 2.5 and 97.5 percentiles of the replicates
reflected about the estimate (2 * estimate - replicate), clipped to the score's range.
Resampling adds noise to a curve, and SQ falls with noise, so raw replicates sit below the
estimate as far as the estimate sits below the noise-free value; their plain percentiles
would miss it (on the curves of tests/test_confidence.py they hold it in 8% of draws, the
reflected ones in 94%). The reflected replicates are kept, rounded, to compare submissions
(e2lmc.scoring.rank).

Only when every checkpoint's metric is the mean of its per-document values
(`Outcomes.is_mean_of`): otherwise a mean over resampled documents is not the metric, and
no interval is made up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from e2lmc.outcomes import Outcomes
from e2lmc.scoring.config import ConfidenceConfig, ScoringConfig
from e2lmc.scoring.curves import Curve, Point

REPLICATES, SEED, LEVEL = (getattr(ConfidenceConfig, k) for k in ("replicates", "seed",
                                                                  "level"))
DIGITS = 4  # replicates are kept rounded: enough to compare submissions
KEYS = ("score", "signal_quality", "ranking_consistency", "scientific_compliance")
NO_OUTCOMES = "not available: the ingestion output has no per-document outcomes"
NOT_A_MEAN = "not available: the metric is not a mean over documents"
NOT_COVERED = "not available: the per-document outcomes miss an evaluated checkpoint"
SWITCHED_OFF = "not available: switched off in scoring.yaml (confidence.replicates: 0)"
_CHUNK = 256  # replicates per matrix product: about 30 MB at 15,000 documents

ScoreOf = Callable[[dict[str, Curve]], Mapping[str, float]]


def resample_counts(n_items: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """How often each document is drawn in each replicate: (replicates, n_items) counts.
    One bincount per replicate: a row stays in cache, a single flat one does not."""
    draws = rng.integers(0, n_items, size=(replicates, n_items), dtype=np.int32)
    counts = np.empty((replicates, n_items))
    for b, row in enumerate(draws):
        counts[b] = np.bincount(row, minlength=n_items)
    return counts


def replicate_curves(value: np.ndarray, replicates: int = REPLICATES,
                     seed: int = SEED) -> np.ndarray:
    """(checkpoints, replicates): each checkpoint's mean over resampled documents, all
    checkpoints resampled with the same documents in a replicate."""
    n_ck, n_items = value.shape
    rng = np.random.default_rng(seed)
    v = value.astype(np.float64)
    out = np.empty((n_ck, replicates))
    for start in range(0, replicates, _CHUNK):
        b = min(_CHUNK, replicates - start)
        out[:, start:start + b] = v @ resample_counts(n_items, b, rng).T / n_items
    return out


def reflect(estimate: float, raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """Replicates reflected about the estimate, clipped to [low, high]: their percentiles
    are the basic bootstrap interval."""
    return np.clip(2.0 * estimate - raw, low, high)


def interval(samples: np.ndarray, level: float = LEVEL) -> dict[str, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of `samples`."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return {"low": float(lo), "high": float(hi)}


def _observed(curves: dict[str, Curve]) -> dict[str, float]:
    """The metric value of each evaluated checkpoint, by `model/checkpoint`."""
    return {f"{c.model}/{p.checkpoint}": p.value for c in curves.values() for p in c.points
            if np.isfinite(p.value)}


def _replica(curve: Curve, column: dict[str, np.ndarray], b: int) -> Curve:
    """`curve` with replicate b's value at each resampled checkpoint (the others kept)."""
    points = []
    for p in curve.points:
        reps = column.get(f"{curve.model}/{p.checkpoint}")
        points.append(p if reps is None else
                      Point(p.checkpoint, p.tokens_b, p.stage, float(reps[b]), p.iteration))
    return Curve(curve.model, curve.attributes, points)


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def bootstrap(curves: dict[str, Curve], outcomes: Outcomes | None, score_of: ScoreOf,
              score_max: float = 1.0, replicates: int = REPLICATES, seed: int = SEED,
              level: float = LEVEL) -> dict[str, Any]:
    """Intervals of the KEYS that `score_of` (the leaderboard formula, verdicts fixed)
    returns, SQ, RC and CS in [0, 1] and the score in [0, score_max]; JSON-ready."""
    if replicates == 0:
        return unavailable(SWITCHED_OFF)
    if outcomes is None:
        return unavailable(NO_OUTCOMES)
    observed = _observed(curves)
    row_of = {k: i for i, k in enumerate(outcomes.keys)}
    if not set(observed) <= set(row_of):
        return unavailable(NOT_COVERED)
    if not outcomes.is_mean_of(observed):
        return unavailable(NOT_A_MEAN)
    estimate = score_of(curves)
    keys = [k for k in KEYS if k in estimate]
    ckpts = sorted(observed)
    reps = replicate_curves(outcomes.value[[row_of[k] for k in ckpts]], replicates, seed)
    column = {k: reps[i] for i, k in enumerate(ckpts)}
    raw = np.empty((len(keys), replicates))
    for b in range(replicates):
        scores = score_of({name: _replica(c, column, b) for name, c in curves.items()})
        raw[:, b] = [scores[k] for k in keys]
    intervals, kept = {}, {}
    for k, samples in zip(keys, raw):
        est = float(estimate[k])
        reflected = reflect(est, samples, 0.0, score_max if k == "score" else 1.0)
        intervals[k] = {**interval(reflected, level), "bias": float(samples.mean() - est)}
        kept[k] = np.round(reflected, DIGITS).tolist()
    return {"available": True, "method": "basic bootstrap over documents",
            "replicates": replicates, "seed": seed, "level": level,
            "documents": len(outcomes.items), "intervals": intervals, "replicate_scores": kept}


def reads_public_only(cfg: ScoringConfig) -> dict[str, bool]:
    """Which scores read public checkpoints alone. Only SQ can: RC compares with hidden
    checkpoints and CS with the hidden web-only model."""
    return {"signal_quality": cfg.sq.checkpoints.stage == "public"}


def participant_view(conf: dict[str, Any], cfg: ScoringConfig) -> dict[str, Any]:
    """What the public report may show of `conf`: the level, the replicate count and the
    intervals of scores read from public checkpoints alone; or why there is none."""
    if not conf.get("available"):
        return {"available": False, "reason": conf.get("reason", "")}
    public = [k for k, ok in reads_public_only(cfg).items() if ok and k in conf["intervals"]]
    return {"available": True, "level": conf["level"], "replicates": conf["replicates"],
            "intervals": {k: {"low": conf["intervals"][k]["low"],
                              "high": conf["intervals"][k]["high"]} for k in public}}
