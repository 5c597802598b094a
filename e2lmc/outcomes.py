"""Per-item outcomes: what each document scored on each checkpoint.

The ingestion keeps them beside results.jsonl as `item_outcomes.parquet`, one row per
(checkpoint, document), in long format so that pandas or any Parquet reader opens it:

    model       str      the manifest's model name
    checkpoint  str      the checkpoint's name
    stage       str      public | hidden
    tokens_b    float64  training tokens (billions) at the checkpoint
    task        str      the leaf task the document belongs to (a group has several)
    doc_id      int32    the document's index in that task's evaluation split
    value       float32  the declared metric for this document alone (1/0 for accuracy);
                         NaN where the metric has no per-document number (perplexity,
                         corpus-level F1) or the checkpoint failed
    margin      float32  multiple choice only: loglikelihood of the gold choice minus the
                         best other choice (> 0 means right by raw loglikelihood); NaN
                         otherwise

Read back, it is a matrix: checkpoints x items (`Outcomes`). The mean of a row's `value`
over all items is the checkpoint's metric when the task averages per-document values
(accuracy, exact match; a group weighted by size), which `Outcomes.is_mean_of` checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

OUTCOMES_FILE = "item_outcomes.parquet"
COLUMNS = ("model", "checkpoint", "stage", "tokens_b", "task", "doc_id", "value", "margin")


@dataclass(frozen=True)
class CheckpointRef:
    """One row of the matrix."""

    model: str
    checkpoint: str
    stage: str
    tokens_b: float

    @property
    def key(self) -> str:
        return f"{self.model}/{self.checkpoint}"


@dataclass
class Outcomes:
    """Checkpoints x items: `value[i, j]` and `margin[i, j]` of item j on checkpoint i."""

    checkpoints: list[CheckpointRef]
    items: list[tuple[str, int]]  # (task, doc_id), the columns
    value: np.ndarray  # float32 (n_checkpoints, n_items), NaN where unknown
    margin: np.ndarray  # float32 (n_checkpoints, n_items), NaN where not multiple choice

    def __post_init__(self) -> None:
        shape = (len(self.checkpoints), len(self.items))
        if self.value.shape != shape or self.margin.shape != shape:
            raise ValueError(f"outcome matrices must be {shape}")

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.checkpoints]

    def rows_of(self, model: str) -> list[int]:
        """Row indices of one model's checkpoints, in training order."""
        rows = [i for i, c in enumerate(self.checkpoints) if c.model == model]
        return sorted(rows, key=lambda i: self.checkpoints[i].tokens_b)

    def select_checkpoints(self, rows: Iterable[int]) -> "Outcomes":
        rows = list(rows)
        return replace(self, checkpoints=[self.checkpoints[i] for i in rows],
                       value=self.value[rows], margin=self.margin[rows])

    def stage(self, stage: str) -> "Outcomes":
        """Only the checkpoints of one stage (`public` before anything reaches a participant)."""
        return self.select_checkpoints(i for i, c in enumerate(self.checkpoints)
                                       if c.stage == stage)

    def select_items(self, keep: np.ndarray | Iterable[int]) -> "Outcomes":
        """A subset (boolean mask or indices) of the items, as a filtered task would score."""
        cols = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return replace(self, items=[self.items[j] for j in cols], value=self.value[:, cols],
                       margin=self.margin[:, cols])

    def curves(self) -> np.ndarray:
        """Each checkpoint's mean value over the items (NaN where any item is unknown)."""
        return self.value.astype(np.float64).mean(axis=1)

    def is_mean_of(self, values: dict[str, float | None], rtol: float = 1e-4) -> bool:
        """True when the metric of every checkpoint given (key -> value) is the mean of its
        per-item values: the condition for resampling items to mean anything."""
        means = dict(zip(self.keys, self.curves()))
        pairs = [(means[k], v) for k, v in values.items() if k in means and v is not None]
        return bool(pairs) and all(np.isfinite(m) and abs(m - v) <= rtol * max(1.0, abs(v))
                                   for m, v in pairs)


def write_outcomes(path: str | Path, outcomes: Outcomes) -> None:
    """Write the long-format Parquet file (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_ck, n_items = outcomes.value.shape
    ck = outcomes.checkpoints
    rep = np.repeat(np.arange(n_ck), n_items)
    col = np.tile(np.arange(n_items), n_ck)
    tasks = [t for t, _ in outcomes.items]
    table = pa.table({
        "model": pa.DictionaryArray.from_arrays(
            pa.array(rep, pa.int32()), pa.array([c.model for c in ck], pa.string())),
        "checkpoint": pa.DictionaryArray.from_arrays(
            pa.array(rep, pa.int32()), pa.array([c.checkpoint for c in ck], pa.string())),
        "stage": pa.DictionaryArray.from_arrays(
            pa.array(rep, pa.int32()), pa.array([c.stage for c in ck], pa.string())),
        "tokens_b": pa.array(np.array([c.tokens_b for c in ck], np.float64)[rep]),
        "task": pa.DictionaryArray.from_arrays(pa.array(col, pa.int32()),
                                               pa.array(tasks, pa.string())),
        "doc_id": pa.array(np.array([d for _, d in outcomes.items], np.int32)[col]),
        "value": pa.array(outcomes.value.reshape(-1).astype(np.float32)),
        "margin": pa.array(outcomes.margin.reshape(-1).astype(np.float32)),
    })
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def _codes(column) -> tuple[np.ndarray, list]:
    """A dictionary-encoded column as (integer codes, dictionary values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    return col.indices.to_numpy(zero_copy_only=False).astype(np.int64), col.dictionary.to_pylist()


def _first_seen(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys in order of first appearance: (index of each one's first row, the
    position of every row's key in that order)."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _grid_layout(ck_key: np.ndarray, it_key: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The layout `write_outcomes` makes (checkpoint by checkpoint, the same items in the
    same order each time) read in linear time; None for any other layout."""
    changes = np.flatnonzero(ck_key[1:] != ck_key[:-1])
    n_items = int(changes[0]) + 1 if len(changes) else len(ck_key)
    if len(ck_key) % n_items:
        return None
    blocks, items = ck_key.reshape(-1, n_items), it_key.reshape(-1, n_items)
    starts = blocks[:, 0]
    if not ((blocks == starts[:, None]).all() and (items == items[0]).all()
            and len(np.unique(starts)) == len(starts)
            and len(np.unique(items[0])) == n_items):
        return None
    n_ck = len(starts)
    return (np.arange(n_ck) * n_items, np.repeat(np.arange(n_ck), n_items),
            np.arange(n_items), np.tile(np.arange(n_items), n_ck))


def read_outcomes(path: str | Path) -> Outcomes:
    """The matrix back from the file; checkpoints and items in the order written."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=list(COLUMNS),
                      read_dictionary=["model", "checkpoint", "stage", "task"])
    if t.num_rows == 0:
        return Outcomes([], [], np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
    (m, models), (c, names), (s, stages), (k, tasks) = (
        _codes(t[name]) for name in ("model", "checkpoint", "stage", "task"))
    tokens = t["tokens_b"].to_numpy()
    doc = t["doc_id"].to_numpy().astype(np.int64)
    ck_key, it_key = m * (len(names) + 1) + c, k * (int(doc.max()) + 1) + doc
    ck_first, rows, it_first, cols = _grid_layout(ck_key, it_key) or (
        *_first_seen(ck_key), *_first_seen(it_key))
    checkpoints = [CheckpointRef(models[m[i]], names[c[i]], stages[s[i]], float(tokens[i]))
                   for i in ck_first]
    items = [(str(tasks[k[i]]), int(doc[i])) for i in it_first]
    value = np.full((len(checkpoints), len(items)), np.nan, np.float32)
    margin = np.full_like(value, np.nan)
    value[rows, cols] = t["value"].to_numpy().astype(np.float32)
    margin[rows, cols] = t["margin"].to_numpy().astype(np.float32)
    return Outcomes(checkpoints, items, value, margin)
