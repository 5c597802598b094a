"""Checkpoints sharded over (simulated) devices come back complete and in manifest order."""

from __future__ import annotations

import os

import pytest

from e2lmc.engine import shard


def evaluate(checkpoint, device, shared):
    """Stand-in for one checkpoint's evaluation: records where and after what it ran."""
    if checkpoint.endswith("die"):
        os._exit(3)  # a worker killed mid-run (out of host memory, segfault)
    if checkpoint.endswith("boom"):
        raise ValueError(f"cannot load {checkpoint}\nsecond line")
    shared.setdefault("seen", []).append(checkpoint)
    return checkpoint, device, os.getpid(), list(shared["seen"])


def test_plan_deals_round_robin():
    assert shard.plan(list("abcdefg"), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard.plan(list("ab"), 4) == [[0], [1], [], []]
    with pytest.raises(ValueError):
        shard.plan(["a"], 0)


def test_workers_results_merge_in_manifest_order():
    ckpts = [f"model-{m}/iter_{i}" for m in range(3) for i in range(3)] + ["model-x/boom"]
    out = list(shard.run(evaluate, ckpts, ["cpu", "cpu", "cpu"]))
    assert [i for i, _, _ in out] == list(range(len(ckpts)))
    results = [r for _, r, _ in out[:-1]]
    assert [r[0] for r in results] == ckpts[:-1]
    assert len({r[2] for r in results}) == 3  # one process per device
    assert os.getpid() not in {r[2] for r in results}
    # each worker keeps its `shared` dict across the checkpoints dealt to it
    assert results[3][3] == [ckpts[0], ckpts[3]]
    index, result, error = out[-1]
    assert result is None and error == "ValueError: cannot load model-x/boom"


def test_single_device_runs_in_process():
    out = list(shard.run(evaluate, ["a", "b", "c-boom"], ["cpu"]))
    assert [r[2] for _, r, _ in out[:2]] == [os.getpid()] * 2
    assert out[1][1][3] == ["a", "b"]
    assert out[2][2] == "ValueError: cannot load c-boom"


def test_dead_worker_marks_its_checkpoints_failed():
    out = list(shard.run(evaluate, ["a", "b-die", "c", "d"], ["cpu", "cpu"]))
    assert [i for i, _, _ in out] == [0, 1, 2, 3]
    assert out[0][2] is None and out[2][2] is None
    assert "exited with code 3" in out[1][2] and "exited with code 3" in out[3][2]
