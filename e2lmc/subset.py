"""The subset of items that maximises the official SQ on one architecture, checked on the other.

Items are ranked by their trend (e2lmc.item_stats) on the fit architecture's models only;
the subset is the top k, for the k (at least the submission minimum) whose SQ on those
models is highest. SQ is the official formula (e2lmc.scoring.sq.signal_quality) on the
per-checkpoint mean of the kept items, with the scoring configuration's model and
checkpoint selection. The held-out architecture never takes part in the choice, so its SQ
on the same subset tells a real gain from noise fitted on the fit models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from e2lmc.errors import UserError
from e2lmc.ingestion.validate import MAX_DOCS, MIN_DOCS
from e2lmc.item_stats import model_trends
from e2lmc.outcomes import Outcomes
from e2lmc.scoring.config import ModelSelector, SQConfig
from e2lmc.scoring.curves import Curve, Point, iteration_of, select_models
from e2lmc.scoring.sq import signal_quality

SWEEP_POINTS = 60  # subset sizes per pass: one over all sizes, one around the best of it


@dataclass(frozen=True)
class Split:
    """Which models choose the subset and which check it."""

    fit_arch: str
    held_arch: str | None
    fit: list[str]
    held: list[str]


@dataclass
class Selection:
    keep: np.ndarray  # boolean mask over the items
    order: np.ndarray  # items by fit trend, best first
    trend: np.ndarray  # each item's trend on the fit models
    sizes: list[int]  # the sweep: subset sizes tried ...
    fit_sq: list[float]  # ... their SQ on the fit models ...
    held_sq: list[float | None]  # ... and on the held-out ones (never used to choose)
    full: dict[str, float | None]  # SQ of all items: {"fit", "held"}
    subset: dict[str, float | None]  # SQ of the kept items


def split_models(attrs: dict[str, dict[str, Any]], cfg: SQConfig,
                 fit_arch: str | None = None) -> Split:
    """Fit on the architecture the scoring configuration selects (or `fit_arch`), hold out
    the other architecture's models of the same data and size selection."""
    base = cfg.models if cfg.models.names is None else ModelSelector(data="science")
    placeholders = {m: Curve(m, dict(a)) for m, a in attrs.items()}
    pool = select_models(placeholders, replace(base, arch=None))
    archs = sorted({str(c.attributes.get("arch")) for c in pool})
    if not archs:
        raise UserError("no model of the ingestion output matches the SQ model selection "
                        f"({base}); check --ref")
    fit_arch = fit_arch or base.arch or archs[0]
    if fit_arch not in archs:
        raise UserError(f"no {fit_arch} model in the ingestion output; --fit-arch must be one "
                        f"of {', '.join(archs)}")
    held_archs = [a for a in archs if a != fit_arch]
    held_arch = held_archs[0] if held_archs else None
    return Split(fit_arch, held_arch,
                 [c.model for c in pool if c.attributes.get("arch") == fit_arch],
                 [c.model for c in pool if c.attributes.get("arch") == held_arch])


class SQMeter:
    """Official SQ of item subsets on a fixed set of models, without re-reading outcomes."""

    def __init__(self, o: Outcomes, attrs: dict[str, dict[str, Any]], cfg: SQConfig,
                 models: list[str]):
        self.cfg = replace(cfg, models=ModelSelector(names=models))
        self.models = models
        self.attrs = attrs
        self.rows = [i for i, c in enumerate(o.checkpoints) if c.model in models]
        self.points = [Point(o.checkpoints[i].checkpoint, o.checkpoints[i].tokens_b,
                             o.checkpoints[i].stage, math.nan,
                             iteration_of(o.checkpoints[i].checkpoint, None))
                       for i in self.rows]
        self.owner = [o.checkpoints[i].model for i in self.rows]

    def of_means(self, means: np.ndarray) -> float | None:
        """SQ of the curves whose value at row i of the outcomes is means[i]."""
        if not self.models:
            return None
        curves = {m: Curve(m, dict(self.attrs.get(m, {}))) for m in self.models}
        for p, model, i in zip(self.points, self.owner, self.rows):
            curves[model].points.append(replace(p, value=float(means[i])))
        return float(signal_quality(curves, self.cfg)["value"])

    def of(self, o: Outcomes, keep: np.ndarray) -> float | None:
        return self.of_means(o.value[:, keep].mean(axis=1, dtype=np.float64))


def sweep_sizes(lo: int, hi: int) -> list[int]:
    """Subset sizes from `lo` to `hi`, at most SWEEP_POINTS + 1 of them, both included."""
    if hi <= lo:
        return [hi]
    step = max(1, math.ceil((hi - lo) / SWEEP_POINTS))
    return sorted(set(range(lo, hi + 1, step)) | {hi})


def _cover_tasks(o: Outcomes, keep: np.ndarray, order: np.ndarray) -> None:
    """Keep each leaf task's best-ranked item: a task left with no document would fail."""
    tasks = np.array([t for t, _ in o.items], dtype=object)
    for task in sorted(set(tasks) - set(tasks[keep])):
        keep[next(j for j in order if tasks[j] == task)] = True


def smallest_prefix(order: np.ndarray, groups: np.ndarray, min_docs: int) -> int:
    """The fewest top-ranked items that hold `min_docs` documents as the ingestion counts
    them (items in one group ask for the very same requests and count once)."""
    first = np.zeros(len(order), bool)
    _, at = np.unique(groups[order], return_index=True)
    first[at] = True
    reach = np.flatnonzero(np.cumsum(first) >= min_docs)
    return int(reach[0]) + 1 if len(reach) else len(order)


def choose_subset(o: Outcomes, attrs: dict[str, dict[str, Any]], cfg: SQConfig,
                  split: Split, min_docs: int = MIN_DOCS,
                  groups: np.ndarray | None = None) -> Selection:
    """Rank on the fit models, pick the size whose fit SQ is highest (ties: more items),
    and measure the same subset on the held-out models. `groups` marks items that the
    ingestion counts as one document (default: every item its own)."""
    o = o.stage("public")
    n = len(o.items)
    tr = model_trends(o, split.fit)
    order = np.argsort(-tr, kind="stable")
    fit, held = (SQMeter(o, attrs, cfg, split.fit), SQMeter(o, attrs, cfg, split.held))
    prefix = np.cumsum(o.value[:, order], axis=1, dtype=np.float64)
    hi = min(n, MAX_DOCS)
    lo = min(smallest_prefix(order, np.arange(n) if groups is None else groups, min_docs), hi)
    fits: dict[int, float] = {}

    def measure(sizes: list[int]) -> None:
        fits.update({k: fit.of_means(prefix[:, k - 1] / k) for k in sizes if k not in fits})

    def best(sizes: list[int]) -> int:
        return max(sizes, key=lambda k: (fits[k], k))

    coarse = sweep_sizes(lo, hi)
    measure(coarse)
    at = coarse.index(best(coarse))  # then every size between the best's neighbours
    measure(sweep_sizes(coarse[max(at - 1, 0)], coarse[min(at + 1, len(coarse) - 1)]))
    sizes = sorted(fits)
    fit_sq = [fits[k] for k in sizes]
    held_sq = [held.of_means(prefix[:, k - 1] / k) for k in sizes]
    keep = np.zeros(n, bool)
    keep[order[:best(sizes)]] = True
    _cover_tasks(o, keep, order)
    everything = np.ones(n, bool)
    return Selection(keep=keep, order=order, trend=tr, sizes=sizes, fit_sq=fit_sq,
                     held_sq=held_sq,
                     full={"fit": fit.of(o, everything), "held": held.of(o, everything)},
                     subset={"fit": fit.of(o, keep), "held": held.of(o, keep)})
