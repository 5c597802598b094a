"""`e2lmc run-local` in-process with the real programs on the micro demo suite.

The whole Codabench path on CPU: this checkout's ingestion and scoring programs (each with
a vendored e2lmc copy), an example submission zip, the micro suite's manifest as input
data and its scoring.yaml as reference data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bundle_standins import REPO, example_zip, require_programs
from e2lmc.bundle.worker import run_local

pytestmark = pytest.mark.slow
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}


def test_example_submission_on_the_micro_suite(tmp_path, micro_suite):
    from e2lmc.scoring.program import LEADERBOARD_KEYS

    require_programs()
    grid = micro_suite.parent
    result = run_local(example_zip(tmp_path), "e2lm", bundle=REPO, workdir=tmp_path / "w",
                       input_data=grid, ref=grid, env=OFFLINE, timeout=600)
    assert result.prediction.exit_code == 0, result.prediction.stderr.read_text()[-2000:]
    assert set(result.leaderboard) == set(LEADERBOARD_KEYS)
    assert all(math.isfinite(v) for v in result.leaderboard.values())
    assert 0.0 <= result.leaderboard["score"] <= 1.0

    res = result.workdir / "app" / "input" / "res"
    assert yaml.safe_load((res / "metadata").read_text())["ingestionExitCode"] == 0
    status = json.loads((res / "ingestion.json").read_text())
    assert status["status"] == "ok"
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    manifest = yaml.safe_load((grid / "manifest.yaml").read_text())
    expected = sum(len(m["checkpoints"]) for m in manifest["models"])
    assert len({(r["model"], r["checkpoint"]) for r in rows}) == expected
    assert (result.workdir / "app" / "output" / "detailed_results.html").is_file()
