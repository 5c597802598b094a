"""Ranking consistency (RC): do the models keep, later in training, the order they have
at the reference point (about 200B tokens)?

For each compared checkpoint after the reference point, the share of model pairs ordered
as at the reference point (Kendall-style agreement; a tie on either side counts half);
RC = mean over those checkpoints. With two models this is the share of checkpoints where
the same model leads. Only aggregates leave this module: agreement per checkpoint, never
a model's value at a hidden checkpoint.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from e2lmc.scoring.align import align
from e2lmc.scoring.config import RCConfig
from e2lmc.scoring.curves import Curve, Point, select_models


def pair_agreement(ref: list[float], later: list[float]) -> float:
    """Share of model pairs ordered at `later` as at `ref`; ties count half."""
    scores = []
    for i, j in combinations(range(len(ref)), 2):
        a, b = np.sign(ref[i] - ref[j]), np.sign(later[i] - later[j])
        scores.append(0.5 if a == 0 or b == 0 else float(a == b))
    return float(np.mean(scores))


def _reference(curve: Curve, tokens_b: float) -> Point | None:
    before = [p for p in curve.points if p.tokens_b <= tokens_b]
    return before[-1] if before else None


def ranking_consistency(curves: dict[str, Curve], cfg: RCConfig) -> dict[str, Any]:
    models = [c.finite().select(None) for c in select_models(curves, cfg.models)]
    refs = {c.model: _reference(c, cfg.reference_tokens_b) for c in models}
    models = [c for c in models if refs[c.model] is not None]
    if len(models) < 2:
        return {"value": 0.0, "state": f"needs 2 models with a reference point, has "
                f"{len(models)}: RC 0", "models": [c.model for c in models], "checkpoints": []}
    later = [[p for p in c.points if p.tokens_b > refs[c.model].tokens_b
              and (cfg.compare_stage is None or p.stage == cfg.compare_stage)] for c in models]
    rows = align(later)
    if not rows:
        return {"value": 0.0, "state": "no checkpoint after the reference point: RC 0",
                "models": [c.model for c in models], "checkpoints": []}
    ref_vals = [refs[c.model].value for c in models]
    per_ckpt = [{"checkpoint": row[0].checkpoint, "tokens_b": row[0].tokens_b,
                 "agreement": pair_agreement(ref_vals, [p.value for p in row])} for row in rows]
    return {
        "value": float(np.mean([r["agreement"] for r in per_ckpt])),
        "state": "ok",
        "models": [c.model for c in models],
        "reference": {c.model: refs[c.model].checkpoint for c in models},
        "checkpoints": per_ckpt,
    }
