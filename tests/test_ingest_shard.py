"""Checkpoints spread over several devices give the same rows, in the same order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc.errors import UserError
from e2lmc.ingestion import run
from e2lmc.ingestion.run import grid_devices, ingest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

VOLATILE = {"seconds", "signature"}  # the signature covers the timing too


def rows(out: Path) -> list[dict]:
    return [{k: v for k, v in d.items() if k not in VOLATILE}
            for d in R.iter_jsonl(out / R.RESULTS_JSONL)]


@pytest.mark.slow
def test_two_workers_match_one(tiny_grid, tmp_path, monkeypatch):
    one = ingest(build.SCI_CLOZE, tiny_grid.path.parent, tmp_path / "one", engine="fast",
                 device="cpu")
    assert one["status"] == "ok", one["error"]
    # two simulated devices: one spawned worker process each, results merged in order
    monkeypatch.setattr(run, "grid_devices", lambda device: ["cpu", "cpu"])
    two = ingest(build.SCI_CLOZE, tiny_grid.path.parent, tmp_path / "two", engine="fast",
                 device="cpu")
    assert two["status"] == "ok", two["error"]
    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    # the same work, split over the workers
    assert two["engine"]["counters"]["tokens_forwarded"] == \
        one["engine"]["counters"]["tokens_forwarded"]


def test_device_choice(monkeypatch):
    assert grid_devices("cpu") == ["cpu"]
    monkeypatch.setattr(run.shard, "devices", lambda: ["cpu"])
    assert grid_devices("auto") == ["cpu"]
    with pytest.raises(UserError, match="no GPU"):
        grid_devices("cuda")
    monkeypatch.setattr(run.shard, "devices", lambda: ["cuda:0", "cuda:1"])
    assert grid_devices("cuda") == ["cuda:0", "cuda:1"]
