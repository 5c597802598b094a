"""What each document does as the models train: per-item statistics and flags.

Computed on the public checkpoints of the chosen models, per model and then averaged over
the models, so that a number means the same on 6 checkpoints or on 100:

- `trend`: Pearson correlation of the item's score with the checkpoint's position in
  training (the loglikelihood margin of the gold answer for multiple choice, where it
  moves before the answer flips; the metric's value otherwise);
- `flip_rate`: mean |change| of the value between consecutive checkpoints (for accuracy,
  the share of steps at which the answer flips);
- `first`, `last`: the value at each model's first and last public checkpoint;
- `discrimination`: the largest models' value minus the smallest models' value over the
  later half of the public checkpoints (test theory's upper-minus-lower index, with model
  size as the ability); NaN with a single size.

Flags: `never_learned` (the value is 0 at every checkpoint of every model),
`always_right` (1 at every one), `noisy` (flips at half the steps or more), and
`anti_correlated` (falls with training: trend at most ANTI_TREND).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2lmc.outcomes import Outcomes

NOISY_FLIP_RATE = 0.5
ANTI_TREND = -0.3
FLAGS = ("never_learned", "always_right", "noisy", "anti_correlated")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_LETTERS = ("xxs", "xs", "s", "m", "l", "xl", "xxl")


@dataclass
class ItemStats:
    models: list[str]
    trend: np.ndarray
    flip_rate: np.ndarray
    first: np.ndarray
    last: np.ndarray
    discrimination: np.ndarray
    flags: dict[str, np.ndarray]  # flag name -> boolean mask over the items


def size_key(attrs: dict[str, Any]) -> float:
    """A model's size as a number: its parameter count, else its size label read as one
    (`500m`, `1b`), else the label's place among xs/s/m/l/xl."""
    if attrs.get("params"):
        return float(attrs["params"])
    label = str(attrs.get("size", ""))
    m = _SIZE.match(label)
    if m:
        return float(m.group(1)) * _SCALE[m.group(2).lower()]
    return float(_LETTERS.index(label.lower())) if label.lower() in _LETTERS else float("nan")


def finite_rows(o: Outcomes, model: str) -> list[int]:
    """A model's rows in training order, without failed checkpoints (no value at all)."""
    return [i for i in o.rows_of(model) if np.isfinite(o.value[i]).all()]


def trend_score(o: Outcomes) -> np.ndarray:
    """The margin where every known value has one (multiple choice), else the value."""
    known = np.isfinite(o.value)
    if known.any() and np.isfinite(o.margin[known]).all():
        return o.margin
    return o.value


def trend(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of `x` (checkpoints x items) with 0..n-1;
    0 for a constant column or fewer than 3 checkpoints."""
    n = x.shape[0]
    if n < 3:
        return np.zeros(x.shape[1])
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    cov = t @ xc
    den = np.sqrt((xc * xc).sum(axis=0) * (t @ t))
    out = np.zeros(x.shape[1])
    np.divide(cov, den, out=out, where=den > 0)
    return out


def model_trends(o: Outcomes, models: list[str]) -> np.ndarray:
    """Mean over `models` of each item's trend (what the subset ranking reads)."""
    score = trend_score(o)
    per = [trend(score[rows]) for m in models if len(rows := finite_rows(o, m)) >= 3]
    return np.mean(per, axis=0) if per else np.zeros(len(o.items))


def _discrimination(o: Outcomes, models: list[str],
                    attrs: dict[str, dict[str, Any]]) -> np.ndarray:
    sizes = {m: size_key(attrs.get(m, {})) for m in models}
    known = sorted({s for s in sizes.values() if np.isfinite(s)})
    if len(known) < 2:
        return np.full(len(o.items), np.nan)

    def late_mean(size: float) -> np.ndarray:
        late = [r[len(r) // 2:] for m in models if sizes[m] == size
                for r in [finite_rows(o, m)]]
        return o.value[[i for rows in late for i in rows]].mean(axis=0, dtype=np.float64)

    return late_mean(known[-1]) - late_mean(known[0])


def item_stats(o: Outcomes, models: list[str], attrs: dict[str, dict[str, Any]]) -> ItemStats:
    """Statistics and flags of every item over `models` (public checkpoints only)."""
    o = o.stage("public")
    rows = {m: finite_rows(o, m) for m in models}
    models = [m for m in models if rows[m]]
    if not models:
        n = len(o.items)
        empty = np.full(n, np.nan)
        return ItemStats([], empty, empty, empty, empty, empty,
                         {f: np.zeros(n, bool) for f in FLAGS})
    all_rows = [i for m in models for i in rows[m]]
    v = o.value
    flips = [np.abs(np.diff(v[rows[m]], axis=0)).mean(axis=0, dtype=np.float64)
             for m in models if len(rows[m]) >= 2]
    flip_rate = np.mean(flips, axis=0) if flips else np.zeros(len(o.items))
    tr = model_trends(o, models)
    flags = {
        "never_learned": (v[all_rows] <= 0).all(axis=0),
        "always_right": (v[all_rows] >= 1).all(axis=0),
        "noisy": flip_rate >= NOISY_FLIP_RATE,
        "anti_correlated": tr <= ANTI_TREND,
    }
    return ItemStats(
        models=models, trend=tr, flip_rate=flip_rate,
        first=v[[rows[m][0] for m in models]].mean(axis=0, dtype=np.float64),
        last=v[[rows[m][-1] for m in models]].mean(axis=0, dtype=np.float64),
        discrimination=_discrimination(o, models, attrs), flags=flags)
