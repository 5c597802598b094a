"""`e2lmc demo` end to end on the micro suite: ingest and score the example submissions."""

from __future__ import annotations

import json
import math

import pytest

from e2lmc.demo import format_row

pytestmark = pytest.mark.slow


def test_demo_writes_the_report_and_a_finite_row(demo_runs, micro_suite):
    run = demo_runs["science_cloze"]
    paths = run["paths"]
    assert paths["suite"] == micro_suite.parent
    assert paths["report"].is_file() and paths["report"].stat().st_size > 1000
    scores = json.loads(paths["scores"].read_text())
    assert scores == run["scores"]
    assert all(math.isfinite(v) for v in scores.values())
    assert 0 <= scores["score"] <= 1
    ingestion = json.loads((paths["ingestion_output"] / "ingestion.json").read_text())
    assert ingestion["status"] == "ok"
    row = format_row("science_cloze", scores).splitlines()
    assert row[0].split(" | ")[1:] == list(scores) and row[1].startswith("science_cloze |")


def test_science_task_beats_common_sense_on_compliance(demo_runs):
    a, b = (demo_runs[n]["scores"] for n in ("science_cloze", "web_commonsense"))
    # the science task separates the science model from the web model; common sense doesn't
    assert a["scientific_compliance"] > b["scientific_compliance"]


def test_science_task_beats_the_too_hard_task_on_signal_quality(demo_runs):
    a, c = (demo_runs[n]["scores"] for n in ("science_cloze", "noisy_hard"))
    assert a["signal_quality"] > c["signal_quality"]


def test_cli_demo_prints_row_and_paths(micro_suite, tmp_path, capsys):
    from e2lmc.cli import main

    assert main(["demo", "--micro", "--suite-dir", str(micro_suite.parent.parent),
                 "--output", str(tmp_path / "out"), "--example", "noisy_hard"]) == 0
    out = capsys.readouterr().out
    assert "noisy_hard |" in out
    assert str(tmp_path / "out" / "scores" / "detailed_results.html") in out
    table = out[out.index("\nmodel ") + 1:].splitlines()
    assert table[0].split()[1:] == ["first", "public", "last", "public", "last", "hidden"]
    web = next(line for line in table if line.startswith("dense-s-arch1-web "))
    assert all(0 <= float(v) <= 1 for v in web.split()[1:])
