"""`e2lmc rank`: the leaderboard of a set of scored submissions, and which neighbours on it
the choice of documents cannot tell apart.

Each folder is a scoring output holding `scores_details.json`. Submissions are ordered by
score; for each pair of neighbours, the probability that the higher one is really higher
is P(A > B) for one replicate of each drawn from their stored replicate scores
(e2lmc.scoring.confidence; ties count half). The draws are independent: two submissions
are separate sets of documents. Neighbours are separable when it reaches the threshold.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2lmc.errors import UserError
from e2lmc.results import write_json
from e2lmc.scoring.program import DETAILS_JSON

SEPARABLE = 0.95


@dataclass
class Entry:
    """One scored submission."""

    folder: str
    task: str
    score: float
    interval: dict[str, float] | None
    replicates: np.ndarray | None
    reason: str = ""  # why there is no interval


def load_entry(folder: str | Path) -> Entry:
    path = Path(folder) / DETAILS_JSON
    try:
        details = json.loads(path.read_text())
        score = float(details["scores"]["score"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a scoring output's details ({exc}); give the folders "
                        "that `e2lmc score --output` wrote") from None
    conf = details.get("confidence") or {"reason": "scored before intervals existed"}
    task = str((details.get("submission") or {}).get("task", ""))
    if not conf.get("available"):
        return Entry(str(folder), task, score, None, None, conf.get("reason", ""))
    return Entry(str(folder), task, score, conf["intervals"]["score"],
                 np.asarray(conf["replicate_scores"]["score"], dtype=float))


def prob_higher(a: np.ndarray, b: np.ndarray) -> float:
    """P(x > y) for x drawn from `a` and y from `b`, a tie counting half."""
    b = np.sort(b)
    below = np.searchsorted(b, a, "left") + np.searchsorted(b, a, "right")
    return float(below.sum() / (2.0 * len(a) * len(b)))


def rank(entries: list[Entry], threshold: float = SEPARABLE) -> list[dict[str, Any]]:
    """Rows in leaderboard order, each with its separability from the next one down."""
    ordered = sorted(entries, key=lambda e: (-e.score, e.folder))
    rows = []
    for i, e in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        p = (prob_higher(e.replicates, nxt.replicates) if nxt is not None
             and e.replicates is not None and nxt.replicates is not None else None)
        rows.append({"rank": i + 1, "folder": e.folder, "task": e.task, "score": e.score,
                     "interval": e.interval, "reason": e.reason, "p_above_next": p,
                     "separable_from_next": None if p is None else p >= threshold})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text; '-' where a pair has no probability (no replicates)."""
    head = ["rank", "score", "interval", "P(above next)", "separable", "task", "folder"]
    body = []
    for r in rows:
        iv = r["interval"]
        sep = r["separable_from_next"]
        body.append([str(r["rank"]), f"{r['score']:.4f}",
                     f"{iv['low']:.4f}-{iv['high']:.4f}" if iv else "-",
                     "-" if r["p_above_next"] is None else f"{r['p_above_next']:.3f}",
                     "-" if sep is None else ("yes" if sep else "no"), r["task"], r["folder"]])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [head, *body]]
    missing = [f"{r['folder']}: {r['reason']}" for r in rows if r["interval"] is None]
    return "\n".join(lines + (["", "no interval:", *missing] if missing else []))


def cli_rank(args: argparse.Namespace) -> int:
    threshold = SEPARABLE if args.threshold is None else args.threshold
    rows = rank([load_entry(f) for f in args.folders], threshold)
    print(table(rows))
    if args.json:
        write_json(args.json, {"threshold": threshold, "submissions": rows})
    return 0
