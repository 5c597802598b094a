"""The per-item outcomes file (e2lmc/outcomes.py): what is written is what is read."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from e2lmc.outcomes import COLUMNS, CheckpointRef, Outcomes, read_outcomes, write_outcomes


def sample() -> Outcomes:
    cks = [CheckpointRef("m-a", "iter_2", "public", 2.0), CheckpointRef("m-a", "iter_1",
                                                                         "public", 1.0),
           CheckpointRef("m-b", "iter_1", "hidden", 1.0)]
    items = [("zeta", 1), ("zeta", 0), ("alpha", 0), ("alpha", 7)]  # a group, unsorted
    value = np.array([[1, 0, 1, np.nan], [0, 0, 1, 1], [1, 1, 1, 1]], np.float32)
    margin = np.array([[0.5, -1, 2, np.nan]] * 3, np.float32)
    return Outcomes(cks, items, value, margin)


def test_round_trip_keeps_order_and_missing_values(tmp_path):
    o = sample()
    write_outcomes(tmp_path / "o.parquet", o)
    r = read_outcomes(tmp_path / "o.parquet")
    assert r.checkpoints == o.checkpoints and r.items == o.items
    assert np.array_equal(r.value, o.value, equal_nan=True)
    assert np.array_equal(r.margin, o.margin, equal_nan=True)
    table = pq.read_table(tmp_path / "o.parquet")  # long format any Parquet reader opens
    assert tuple(table.column_names) == COLUMNS and table.num_rows == 12
    assert not list(tmp_path.glob("*.tmp"))


def test_selection_and_curves():
    o = sample()
    assert o.rows_of("m-a") == [1, 0]  # training order
    assert o.stage("hidden").keys == ["m-b/iter_1"]
    sub = o.select_items(np.array([True, False, True, False]))
    assert sub.items == [("zeta", 1), ("alpha", 0)]
    assert np.allclose(sub.curves(), [1.0, 0.5, 1.0])
    assert np.isnan(o.curves()[0])  # one unknown item: no mean


def test_mean_check_says_when_items_can_be_resampled():
    o = sample().select_checkpoints([1, 2])
    assert o.is_mean_of({"m-a/iter_1": 0.5, "m-b/iter_1": 1.0})
    assert not o.is_mean_of({"m-a/iter_1": 0.61, "m-b/iter_1": 1.0})  # e.g. unweighted
    assert not o.is_mean_of({"other/iter_1": 0.5})  # nothing to compare
    assert not sample().is_mean_of({"m-a/iter_2": 0.5})  # unknown items


def test_empty_file(tmp_path):
    empty = Outcomes([], [("t", 0)], np.zeros((0, 1), np.float32),
                     np.zeros((0, 1), np.float32))
    write_outcomes(tmp_path / "e.parquet", empty)
    r = read_outcomes(tmp_path / "e.parquet")
    assert r.checkpoints == [] and r.value.size == 0


def test_any_row_order_reads_the_same(tmp_path):
    """Another writer's layout (item by item, shuffled) reads back to the same matrix."""
    o = sample()
    write_outcomes(tmp_path / "o.parquet", o)
    table = pq.read_table(tmp_path / "o.parquet")
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)),
                   tmp_path / "shuffled.parquet")
    r = read_outcomes(tmp_path / "shuffled.parquet")
    assert sorted(r.items) == sorted(o.items) and set(r.keys) == set(o.keys)
    rows = [o.keys.index(k) for k in r.keys]
    cols = [o.items.index(it) for it in r.items]
    assert np.array_equal(r.value, o.value[np.ix_(rows, cols)], equal_nan=True)
