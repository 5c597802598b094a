"""The Codabench entry point runs without a shell on the worker's /app layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2lmc import results as R
from e2lmc import signing

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_metadata_is_a_shell_free_command():
    meta = yaml.safe_load((REPO / "ingestion_program" / "metadata.yaml").read_text())
    assert meta["command"] == "python3 ingestion.py"


@pytest.mark.slow
def test_entry_point_on_an_app_layout(tiny_grid, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(build.SCI_CLOZE, app / "ingested_program")
    (app / "ingested_program" / "metadata").write_text("description: no command\n")
    build.subset_manifest(tiny_grid, app / "input_data", engine="hf")
    (app / "output").mkdir()
    (app / "data").mkdir()
    program = tmp_path / "program"  # as Codabench unpacks it: the folder plus e2lmc/
    shutil.copytree(REPO / "ingestion_program", program)
    shutil.copytree(REPO / "e2lmc", program / "e2lmc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(E2LMC_APP_ROOT=str(app), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "ingestion.py"], cwd=program, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = R.read_ingestion(app / "output", signing.load_key(app / "input_data"))
    assert doc["status"] == "ok" and doc["task"] == "sci_cloze"
    assert len(R.read_results(app / "output")) == 1
    assert "[1/1]" in proc.stdout
