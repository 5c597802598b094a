"""Pairing checkpoints of different models, shared by RC and CS."""

from __future__ import annotations

from e2lmc.scoring.curves import Point


def align(series: list[list[Point]]) -> list[list[Point]]:
    """Rows of points, one per model, at the same checkpoints.

    Models of one grid share checkpoint names (`iter_0004000`), so those are matched by
    name in training order; when no name is common to all, the k-th points are paired.
    """
    if not series or any(not s for s in series):
        return []
    common = set.intersection(*({p.checkpoint for p in s} for s in series))
    if common:
        by_name = [{p.checkpoint: p for p in s} for s in series]
        order = [p.checkpoint for p in series[0] if p.checkpoint in common]
        return [[m[name] for m in by_name] for name in order]
    k = min(len(s) for s in series)
    return [[s[i] for s in series] for i in range(k)]
