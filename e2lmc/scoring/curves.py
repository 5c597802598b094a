"""Per-model metric curves and the checkpoint/model selection rules shared by every score.

A curve is one model's metric value per checkpoint, in training order. Ingestion results
and the organizers' published curves both become `Curve`s, so SQ, RC, CS and the
diagnostics read one structure and one selection rule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from e2lmc.results import ResultRow
from e2lmc.scoring.config import CheckpointFilter, ModelSelector

_ITER_RE = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Point:
    checkpoint: str
    tokens_b: float
    stage: str
    value: float  # NaN when the checkpoint failed or is missing
    iteration: int | None = None


@dataclass
class Curve:
    model: str
    attributes: dict[str, Any] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)

    def select(self, flt: CheckpointFilter | None) -> "Curve":
        """The points that pass `flt`, in training order."""
        pts = sorted(self.points, key=lambda p: (p.tokens_b, p.iteration or 0))
        if flt is not None:
            pts = [p for p in pts if _keep(p, flt)]
        return Curve(self.model, self.attributes, pts)

    @property
    def values(self) -> np.ndarray:
        return np.array([p.value for p in self.points], dtype=float)

    @property
    def tokens(self) -> np.ndarray:
        return np.array([p.tokens_b for p in self.points], dtype=float)

    def finite(self) -> "Curve":
        """Drop points without a value (failed checkpoints): the NaN policy for inputs."""
        return Curve(self.model, self.attributes,
                     [p for p in self.points if math.isfinite(p.value)])


def iteration_of(name: str, iteration: int | None) -> int | None:
    """The training step: given explicitly, else the trailing digits of `iter_0004000`."""
    if iteration is not None:
        return int(iteration)
    m = _ITER_RE.search(name)
    return int(m.group(1)) if m else None


def _keep(p: Point, flt: CheckpointFilter) -> bool:
    if flt.stage is not None and p.stage != flt.stage:
        return False
    if flt.min_tokens_b is not None and p.tokens_b < flt.min_tokens_b:
        return False
    if flt.max_tokens_b is not None and p.tokens_b > flt.max_tokens_b:
        return False
    if flt.iteration_step:
        it = iteration_of(p.checkpoint, p.iteration)
        if it is None or it % flt.iteration_step != 0:
            return False
    return True


def select_models(curves: dict[str, Curve], sel: ModelSelector) -> list[Curve]:
    """Curves of the selected models, in a stable (name) order."""
    if sel.names:
        return [curves[n] for n in sel.names if n in curves]
    out = []
    for name in sorted(curves):
        attrs = curves[name].attributes
        if sel.arch is not None and attrs.get("arch") != sel.arch:
            continue
        if sel.data is not None and attrs.get("data") != sel.data:
            continue
        if sel.size is not None and str(attrs.get("size")) != sel.size:
            continue
        out.append(curves[name])
    return out


def curves_from_results(rows: Iterable[ResultRow],
                        models: dict[str, dict[str, Any]]) -> dict[str, Curve]:
    """Group ingestion rows per model; an error row becomes a NaN point."""
    curves: dict[str, Curve] = {name: Curve(name, dict(attrs)) for name, attrs in models.items()}
    for r in rows:
        curve = curves.setdefault(r.model, Curve(r.model, {}))
        value = r.value if (r.status == "ok" and r.value is not None) else math.nan
        curve.points.append(Point(r.checkpoint, float(r.tokens_b), r.stage, float(value),
                                  iteration_of(r.checkpoint, r.iteration)))
    for c in curves.values():
        c.points.sort(key=lambda p: (p.tokens_b, p.iteration or 0))
    return curves
