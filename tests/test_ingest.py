"""Ingestion end to end: submissions over tiny random checkpoints with lm-eval's HF engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc import signing
from e2lmc.errors import Unverified
from e2lmc.ingestion.run import evaluation_order, ingest, spread
from e2lmc.outcomes import OUTCOMES_FILE, read_outcomes

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "signature"}  # the signature covers the timing too


def rows_without_timing(out: Path) -> dict[str, dict]:
    return {f"{d['model']}/{d['checkpoint']}": {k: v for k, v in d.items() if k not in TIMING}
            for d in R.iter_jsonl(out / R.RESULTS_JSONL)}


@pytest.fixture(scope="module")
def grid_run(tiny_grid, tmp_path_factory):
    """The task-folder example over the whole 3 x 3 grid (shared by several tests)."""
    out = tmp_path_factory.mktemp("grid_out")
    doc = ingest(build.SCI_CLOZE, tiny_grid.path.parent, out, engine="hf")
    return out, doc


@pytest.mark.slow
def test_task_folder_over_the_grid(grid_run, tiny_grid):
    out, doc = grid_run
    assert doc["status"] == "ok", doc["error"]
    assert json.loads((out / R.INGESTION_JSON).read_text()) == doc
    assert sorted(p.name for p in out.iterdir()) == [R.INGESTION_JSON, OUTCOMES_FILE,
                                                     R.ITEMS_JSONL, R.RESULTS_JSONL]
    rows = R.read_results(out)
    assert {r.key for r in rows} == {c.key for c in tiny_grid.checkpoints}
    for r in rows:
        assert r.status == "ok" and r.metric == "acc,none"
        assert 0.0 <= r.value <= 1.0 and r.stderr > 0
        assert r.metrics["acc,none"] == r.value and "acc_norm,none" in r.metrics
    assert doc["models"] == {m.name: m.attributes() for m in tiny_grid.models}
    sub = doc["submission"]
    assert sub["format"] == "task_folder" and len(sub["fingerprint"]) == 64
    assert (doc["task"], doc["metric"], doc["output_type"], doc["n_docs"]) == (
        "sci_cloze", "acc,none", "multiple_choice", 120)
    assert doc["n_requests"] == 480 and doc["checkpoints"]["ok"] == 9
    # the score's most needed checkpoints came first: public science, then web, then hidden
    stages = [(d["stage"], d["model"].endswith("web")) for d in R.iter_jsonl(
        out / R.RESULTS_JSONL)]
    assert stages[:4] == [("public", False)] * 4 and stages[4:6] == [("public", True)] * 2
    assert {s for s, _ in stages[6:]} == {"hidden"}


@pytest.mark.slow
def test_per_item_outcomes_reproduce_every_row(grid_run, tiny_grid, tmp_path):
    """Each document's value on each checkpoint, signed with the rest: their mean is the
    row's metric, and accuracy is right exactly where the gold choice's loglikelihood
    beats every other (the margin, from the engine's own answers)."""
    import shutil

    import numpy as np

    out, _ = grid_run
    key = signing.load_key(tiny_grid.path.parent)
    doc, rows, items = R.read_verified(out, key)
    oc = R.read_verified_outcomes(out, doc)
    assert oc.keys == [c.key for c in tiny_grid.checkpoints]  # the manifest's order
    assert [c.stage for c in oc.checkpoints] == [c.stage for c in tiny_grid.checkpoints]
    assert oc.items == [(i.task, i.doc_id) for i in items] and len(oc.items) == 120
    assert oc.is_mean_of({r.key: r.value for r in rows}, rtol=1e-6)
    assert set(np.unique(oc.value)) <= {0.0, 1.0}
    assert np.array_equal(oc.value == 1.0, oc.margin > 0)
    # an edited copy is refused by name; a deleted one too (ingestion.json records it)
    forged = tmp_path / "res"
    shutil.copytree(out, forged)
    edited = read_outcomes(forged / OUTCOMES_FILE)
    edited.value[:] = 1.0
    from e2lmc.outcomes import write_outcomes

    write_outcomes(forged / OUTCOMES_FILE, edited)
    with pytest.raises(Unverified, match="item_outcomes.parquet: not the file"):
        R.read_verified_outcomes(forged, doc)
    (forged / OUTCOMES_FILE).unlink()
    with pytest.raises(Unverified, match="item_outcomes.parquet: not the file"):
        R.read_verified_outcomes(forged, doc)


@pytest.mark.slow
def test_items_are_the_documents_without_few_shot(grid_run):
    out, _ = grid_run
    items = R.read_items(out)
    assert len(items) == 120 and [i.doc_id for i in items] == list(range(120))
    first = items[0]
    assert first.prompt.startswith("Question: Which property") and first.prompt.endswith(
        "Answer:")
    assert "case 1000" not in first.prompt  # few-shot examples (dev split) stay out
    assert first.choices and first.gold == first.choices[first.gold_index]
    source = json.loads((build.SCI_CLOZE / "data" / "test.jsonl").read_text().splitlines()[0])
    assert first.gold_index == source["answer"] and first.choices == source["choices"]


@pytest.mark.slow
def test_official_format_matches_task_folder(grid_run, tiny_grid, tmp_path):
    """The same task as a git diff gives the same fingerprint and the same numbers."""
    out, doc = grid_run
    files = build.folder_files(build.SCI_CLOZE)
    zpath = build.official_zip(tmp_path / "sub.zip", files, "sci_cloze", "acc,none")
    man = build.subset_manifest(tiny_grid, tmp_path / "man", models=1, checkpoints=2)
    got = ingest(zpath, man, tmp_path / "out", engine="hf")
    assert got["status"] == "ok", got["error"]
    assert got["format"] == "official"
    assert got["submission"]["fingerprint"] == doc["submission"]["fingerprint"]
    ref = rows_without_timing(out)
    for key, row in rows_without_timing(tmp_path / "out").items():
        assert row == ref[key]


@pytest.mark.slow
@pytest.mark.parametrize("winner", sorted(build.WINNERS))
def test_upstream_winners_as_official_zips(winner, tiny_grid, tmp_path):
    files, task, metric = build.winner_files(winner)
    zpath = build.official_zip(tmp_path / f"{winner}.zip", files, task, metric)
    man = build.subset_manifest(tiny_grid, tmp_path / "man", models=1, checkpoints=1)
    doc = ingest(zpath, man, tmp_path / "out", engine="hf")
    assert doc["status"] == "ok", doc["error"]
    assert doc["task"] == task and doc["format"] == "official"
    assert 100 <= doc["n_docs"] <= 15000
    (row,) = R.read_results(tmp_path / "out")
    assert row.status == "ok" and row.value is not None and row.metric == metric
    if winner == "mmlu_early_training":  # the custom !function aggregation ran
        assert row.value < 0.5 and "acc,none" not in row.metrics
    else:  # groups: the value aggregates the leaf tasks
        assert 0 <= row.value <= 1 and len(doc["submission"]["subtasks"]) > 1


@pytest.mark.slow
def test_broken_checkpoint_gets_an_error_row(tiny_grid, tmp_path):
    man = build.subset_manifest(tiny_grid, tmp_path / "man", models=1, checkpoints=1,
                                broken=True)
    doc = ingest(build.SCI_CLOZE, man, tmp_path / "out", engine="hf")
    assert doc["status"] == "ok"
    rows = {r.checkpoint: r for r in R.read_results(tmp_path / "out")}
    assert rows["iter_0001000"].status == "ok"
    bad = rows["iter_9999999"]
    assert bad.status == "error" and bad.value is None and "failed to load" in bad.error
    assert doc["checkpoints"]["errors"] == 1


@pytest.mark.slow
def test_time_budget_ends_partial_after_the_most_needed(tiny_grid, tmp_path, monkeypatch):
    """Each finished checkpoint makes the clock jump 100 s: a 250 s budget starts three
    (at about 0, 100 and 200 s), the three the score needs most."""
    import e2lmc.ingestion.run as run_mod

    out = tmp_path / "out"

    class Clock:
        @staticmethod
        def monotonic() -> float:
            rows = (out / R.RESULTS_JSONL).read_text().count("\n") if (
                out / R.RESULTS_JSONL).is_file() else 0
            return time.monotonic() + 100.0 * rows

    monkeypatch.setattr(run_mod, "time", Clock)
    lines: list[str] = []
    doc = ingest(build.SCI_CLOZE, tiny_grid.path.parent, out, engine="hf", time_budget=250,
                 log=lines.append)
    assert doc["status"] == "partial"
    rows = [(d["model"], d["checkpoint"]) for d in R.iter_jsonl(out / R.RESULTS_JSONL)]
    assert doc["error"] == (f"time budget exceeded: {len(rows)} of 9 checkpoints "
                            "evaluated in 250 s")
    assert rows == [("tiny-0-arch1", "iter_0001000"), ("tiny-1-arch2", "iter_0001000"),
                    ("tiny-0-arch1", "iter_0002000")]
    assert len(doc["checkpoints"]["missing"]) == 6
    assert any("ETA" in ln and "[3/9]" in ln for ln in lines)
    with pytest.raises(Exception, match="partial: time budget exceeded: .* of 9 checkpoints "
                                        "evaluated in 250 s; a partial grid gets no score"):
        R.read_ingestion(out, signing.load_key(tiny_grid.path.parent))


def start_and_stop(cmd: list[str], env: dict, results: Path, rows: int, sig: int) -> None:
    """Start the CLI, wait until results.jsonl has `rows` rows, then send `sig`."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= rows:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(sig)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_sigterm_then_kill_9_then_resume_equals_uninterrupted(grid_run, tiny_grid, tmp_path):
    ref_out, _ = grid_run
    out = tmp_path / "out"
    results = out / R.RESULTS_JSONL
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "e2lmc", "ingest", "--submission", str(build.SCI_CLOZE),
           "--input-data", str(tiny_grid.path.parent), "--output", str(out), "--engine", "hf"]

    start_and_stop(cmd, env, results, 1, signal.SIGTERM)  # the platform's time limit
    doc = json.loads((out / R.INGESTION_JSON).read_text())
    assert doc["status"] == "partial" and "SIGTERM" in doc["error"]
    first = {f"{d['model']}/{d['checkpoint']}": d for d in R.iter_jsonl(results)}
    assert 1 <= len(first) < 9

    start_and_stop(cmd, env, results, len(first) + 2, signal.SIGKILL)  # resumes, then dies
    before = {f"{d['model']}/{d['checkpoint']}": d for d in R.iter_jsonl(results)}
    assert len(first) + 2 <= len(before) < 9
    assert json.loads((out / R.INGESTION_JSON).read_text())["status"] == "partial"

    lines: list[str] = []
    doc = ingest(build.SCI_CLOZE, tiny_grid.path.parent, out, engine="hf", log=lines.append)
    assert doc["status"] == "ok" and doc["checkpoints"]["resumed"] == len(before)
    assert any("resuming" in ln for ln in lines)
    after = {f"{d['model']}/{d['checkpoint']}": d for d in R.iter_jsonl(results)}
    for key, row in before.items():  # not recomputed: the very same row, timing included
        assert after[key] == row
    assert rows_without_timing(out) == rows_without_timing(ref_out)
    assert (out / R.ITEMS_JSONL).read_text() == (ref_out / R.ITEMS_JSONL).read_text()
    # per-item rows: kept from the SIGTERM run (which wrote its file), absent for what the
    # killed run did (it wrote none), equal to the uninterrupted run's everywhere else
    import numpy as np

    oc, ref = read_outcomes(out / OUTCOMES_FILE), read_outcomes(ref_out / OUTCOMES_FILE)
    assert set(oc.keys) == set(ref.keys) - (set(before) - set(first))
    rows = [ref.keys.index(k) for k in oc.keys]
    assert np.array_equal(oc.value, ref.value[rows])
    assert np.allclose(oc.margin, ref.margin[rows], atol=1e-5, equal_nan=True)


@pytest.mark.slow
def test_resume_recomputes_checkpoints_whose_weights_changed(grid_run, tiny_grid, tmp_path):
    """A re-run on an edited grid keeps only the rows of unchanged checkpoints."""
    import dataclasses
    import shutil

    from e2lmc.manifest import Manifest

    ref_out, _ = grid_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    m0 = tiny_grid.models[0]
    first, second = m0.checkpoints[0], m0.checkpoints[1]
    moved = dataclasses.replace(first, subfolder=second.subfolder)  # other weights, same name
    models = [dataclasses.replace(m0, checkpoints=(moved,) + m0.checkpoints[1:])]
    edited = Manifest(path=None, models=models + list(tiny_grid.models[1:]),
                      defaults=tiny_grid.defaults)
    edited.write(tmp_path / "grid" / "manifest.yaml")

    doc = ingest(build.SCI_CLOZE, tmp_path / "grid", out, engine="hf")
    total = len(tiny_grid.checkpoints)
    assert doc["status"] == "ok" and doc["checkpoints"]["resumed"] == total - 1
    ref, now = rows_without_timing(ref_out), rows_without_timing(out)
    assert now[first.key]["value"] == ref[second.key]["value"]  # recomputed on the new weights
    assert {k: v for k, v in now.items() if k != first.key} == \
        {k: v for k, v in ref.items() if k != first.key}
    assert all(len(h) == 16 and "/" not in h for h in doc["grid"].values())  # no paths


def test_resume_identity_covers_what_changes_the_values(tiny_grid):
    """A local resume must not keep rows computed with another HF batch size (values move
    by ~1e-6) or another bootstrap count (stderr): both are in the grid identity."""
    from dataclasses import replace

    from e2lmc.ingestion.run import grid_identity

    base = grid_identity(tiny_grid)
    for change in ({"hf_batch_size": 8}, {"bootstrap_iters": 1000}, {"dtype": "bfloat16"}):
        other = replace(tiny_grid, defaults=replace(tiny_grid.defaults, **change))
        assert all(grid_identity(other)[k] != v for k, v in base.items()), change


def test_spread_covers_the_range_evenly():
    assert spread(0) == [] and spread(1) == [0] and spread(2) == [0, 1]
    assert spread(5) == [0, 4, 2, 1, 3]
    assert sorted(spread(14)) == list(range(14)) and spread(14)[:3] == [0, 13, 6]


def test_evaluation_order_tiers(tiny_grid):
    order = evaluation_order(tiny_grid)
    assert len(order) == len(tiny_grid.checkpoints) == len({c.key for c in order})
    kinds = [(c.stage, tiny_grid.model(c.model).data) for c in order]
    first_hidden = kinds.index(("hidden", "science"))
    assert all(k[0] == "public" for k in kinds[:first_hidden])
    assert kinds[:4] == [("public", "science")] * 4


def test_make_submission_round_trip(tmp_path):
    from e2lmc.cli import main
    from e2lmc.ingestion.submission import load_submission

    zpath = tmp_path / "sub.zip"
    assert main(["make-submission", str(build.SCI_CLOZE), "--task-name", "sci_cloze",
                 "--metric", "acc,none", "--output", str(zpath)]) == 0
    sub = load_submission(zpath, tmp_path / "work")
    direct = load_submission(build.SCI_CLOZE, tmp_path / "work2")
    assert sub.format == "task_folder" and sub.fingerprint == direct.fingerprint
    assert (sub.task_name, sub.metric) == ("sci_cloze", "acc,none")
    assert main(["make-submission", str(tmp_path / "nope"), "--task-name", "x", "--metric",
                 "acc,none", "--output", str(tmp_path / "x.zip")]) == 2


def test_hf_engine_honours_hub_subfolder_and_local_dirs(monkeypatch, tiny_grid):
    import lm_eval.models.huggingface as hf_mod

    from e2lmc.engine.hf import load_hflm
    from e2lmc.errors import UserError
    from e2lmc.manifest import Checkpoint

    seen = []
    monkeypatch.setattr(hf_mod, "HFLM", lambda **kw: seen.append(kw) or "lm")
    hub = Checkpoint(model="m", name="c", source="hf://tiiuae/dense-1b-arch1",
                     subfolder="iter_0004000", tokens_b=8.4, stage="public")
    assert load_hflm(hub, "cuda", "bfloat16", max_length=2048, batch_size=8) == "lm"
    assert seen[-1]["pretrained"] == "tiiuae/dense-1b-arch1"
    assert seen[-1]["subfolder"] == "iter_0004000"
    assert (seen[-1]["dtype"], seen[-1]["device"], seen[-1]["batch_size"]) == (
        "bfloat16", "cuda", 8)
    local = tiny_grid.checkpoints[0]
    load_hflm(local, "cpu", "float32")
    assert seen[-1]["pretrained"] == str(Path(local.source) / local.subfolder)
    assert seen[-1]["batch_size"] == 1  # the lm_eval CLI's default
    assert seen[-1]["subfolder"] == ""
    missing = Checkpoint(model="m", name="c", source="/nonexistent", subfolder="x",
                         tokens_b=1, stage="public")
    with pytest.raises(UserError, match="config.json"):
        load_hflm(missing, "cpu", "float32")
