"""Per-item outcomes gathered while the grid runs: the runner's side of e2lmc.outcomes.

A document's value is the task's own metric on it, sent by the task process and checked by
`replies.per_item`; its margin comes from the engine's answers alone (the loglikelihood of
the gold choice minus the best other), with the gold choice from the rendered items. The
task process never learns which checkpoint a value belongs to: the runner files it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from e2lmc.ingestion.replies import Prepared
from e2lmc.manifest import Checkpoint
from e2lmc.outcomes import CheckpointRef, Outcomes


class OutcomeTable:
    """Rows (checkpoints) filled as they finish, columns fixed by the prepared task."""

    def __init__(self, prepared: Prepared) -> None:
        self.items = [(task, d) for task, docs in prepared.doc_requests.items()
                      for d, _ in docs]
        self._requests = [reqs for docs in prepared.doc_requests.values() for _, reqs in docs]
        rendered = {(it.task, it.doc_id): it for it in prepared.items}
        self._gold: list[int | None] = []  # the gold choice where a margin applies
        for (task, d), reqs in zip(self.items, self._requests):
            it = rendered.get((task, d))
            fits = (prepared.task_types.get(task) == "multiple_choice" and it is not None
                    and it.gold_index is not None and len(it.choices or ()) == len(reqs))
            self._gold.append(it.gold_index if fits else None)
        self._rows: dict[str, tuple[CheckpointRef, np.ndarray, np.ndarray]] = {}

    def add(self, ck: Checkpoint, per_item: dict[str, list[float]] | None,
            answers: list[Any] | None) -> None:
        """One checkpoint; NaN where it failed (no values) or a margin does not apply."""
        n = len(self.items)
        value = (np.array([v for task in per_item.values() for v in task], np.float32)
                 if per_item is not None else np.full(n, np.nan, np.float32))
        margin = np.full(n, np.nan, np.float32)
        if answers is not None:
            for j, gold in enumerate(self._gold):
                if gold is not None:
                    margin[j] = _margin([answers[r] for r in self._requests[j]], gold)
        self._rows[ck.key] = (_ref(ck), value, margin)

    def keep(self, earlier: Outcomes | None, keys: Iterable[str]) -> None:
        """Rows of an earlier run for the checkpoints a resume keeps (same columns only)."""
        if earlier is None or earlier.items != self.items:
            return
        index = {k: i for i, k in enumerate(earlier.keys)}
        for key in keys:
            if key in index:
                i = index[key]
                self._rows[key] = (earlier.checkpoints[i], earlier.value[i], earlier.margin[i])

    def outcomes(self, order: Iterable[Checkpoint]) -> Outcomes:
        """The matrix of the checkpoints done, in the manifest's order."""
        rows = [self._rows[c.key] for c in order if c.key in self._rows]
        n = len(self.items)
        return Outcomes(checkpoints=[r[0] for r in rows], items=list(self.items),
                        value=np.array([r[1] for r in rows], np.float32).reshape(-1, n),
                        margin=np.array([r[2] for r in rows], np.float32).reshape(-1, n))


def _ref(ck: Checkpoint) -> CheckpointRef:
    return CheckpointRef(ck.model, ck.name, ck.stage, float(ck.tokens_b))


def _margin(answers: list[Any], gold: int) -> float:
    """Gold loglikelihood minus the best other choice's (answers: (ll, is_greedy) each)."""
    lls = [float(a[0]) for a in answers]
    others = lls[:gold] + lls[gold + 1:]
    if not others or not all(math.isfinite(x) for x in lls):
        return math.nan
    return lls[gold] - max(others)
