"""The scoring program on hand-made ingestion outputs: files, failures, hidden values.

The outputs are signed through the ingestion's own helpers, with a key in the reference
data as a built bundle has it (tests/test_signing.py covers outputs that do not verify).
"""

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2lmc import signing
from e2lmc.errors import IngestionFailed
from e2lmc.outcomes import OUTCOMES_FILE, CheckpointRef, Outcomes, write_outcomes
from e2lmc.results import ResultRow, append_jsonl, sign_row, signing_context, write_ingestion
from e2lmc.scoring.program import LEADERBOARD_KEYS, score

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "m-s-arch1": {"size": "s", "arch": "arch1", "data": "science", "params": 1e6},
    "m-l-arch1": {"size": "l", "arch": "arch1", "data": "science", "params": 4e6},
    "m-s-arch2": {"size": "s", "arch": "arch2", "data": "science", "params": 1e6},
    "m-s-web": {"size": "s", "arch": "arch1", "data": "web", "params": 1e6},
}
SCORING_YAML = """
sq: {models: {arch: arch1, data: science}, checkpoints: {stage: public}}
rc: {reference_tokens_b: 10}
cs: {checkpoints: {stage: null, max_tokens_b: 10}}
judge: {mode: off}
leakage: {mode: report}
"""


def hidden_value(rng: random.Random) -> float:
    """Values with many distinctive digits, easy to find if they leak."""
    return round(0.3 + 0.4 * rng.random(), 9)


N_DOCS = 500


def add_outcomes(res: Path, rows: list[ResultRow], seed: int) -> dict[str, np.ndarray]:
    """Write item_outcomes.parquet: per-document values in [0, 1] (a per-document F1, say),
    each document easier or harder on every checkpoint; each row's value becomes their mean,
    as for a task that averages per-document values. Returns the values by row key."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-0.2, 0.2, N_DOCS)
    per_doc = {}
    for r in rows:
        v = np.clip(r.value + offset + rng.normal(0, 0.05, N_DOCS), 0, 1).astype(np.float32)
        r.value = float(v.astype(np.float64).mean())
        r.metrics = {r.metric: r.value}
        per_doc[r.key] = v
    refs = [CheckpointRef(r.model, r.checkpoint, r.stage, r.tokens_b) for r in rows]
    value = np.stack([per_doc[r.key] for r in rows])
    write_outcomes(res / OUTCOMES_FILE, Outcomes(refs, [("demo_task", j) for j in range(N_DOCS)],
                                                 value, np.full_like(value, np.nan)))
    return per_doc


def make_res(tmp: Path, status: str = "ok", rows=None, seed: int = 0,
             outcomes: bool = False) -> tuple[Path, dict]:
    """A signed ingestion output and its reference data; `hidden`: the values of hidden
    checkpoints by key, and with `outcomes` their per-document values under `documents`."""
    rng = random.Random(seed)
    res = tmp / "res"
    res.mkdir(parents=True)
    hidden = {}
    if rows is None:
        rows = []
        for m, attrs in MODELS.items():
            boost = {"s": 0.0, "l": 0.1}[attrs["size"]] + (0.05 if attrs["data"] == "science"
                                                          else 0.0)
            for i in range(14):
                tokens = 1.0 + i
                stage = "public" if tokens <= 10 else "hidden"
                value = 0.25 + 0.01 * i + boost + 0.002 * rng.random()
                if stage == "hidden":
                    value = hidden_value(rng)
                    hidden[f"{m}/iter_{i:07d}"] = value
                rows.append(ResultRow(m, f"iter_{i:07d}", tokens, stage, "acc,none", value,
                                      metrics={"acc,none": value}, iteration=i))
    if outcomes:
        per_doc = add_outcomes(res, rows, seed)
        hidden = {r.key: r.value for r in rows if r.stage == "hidden"}
        hidden["documents"] = np.concatenate([per_doc[k] for k in hidden])
    ref = tmp / "ref"
    ref.mkdir()
    (ref / "scoring.yaml").write_text(SCORING_YAML)
    key = signing.new_key()
    signing.write_key(ref / signing.KEY_NAME, key)
    submission = {"task": "demo_task", "metric": "acc,none", "n_docs": N_DOCS,
                  "fingerprint": "abc123"}
    for r in rows:
        append_jsonl(res / "results.jsonl", sign_row(r, key, signing_context(submission)))
    write_ingestion(res, {
        "status": status, "error": None if status == "ok" else "CUDA out of memory",
        "models": MODELS, "submission": submission,
    }, key)
    return res, hidden


def test_writes_three_files_with_leaderboard_keys(tmp_path):
    res, _ = make_res(tmp_path)
    scores = score(res, tmp_path / "ref", tmp_path / "out")
    assert tuple(scores) == LEADERBOARD_KEYS
    on_disk = json.loads((tmp_path / "out/scores.json").read_text())
    assert on_disk == scores and all(math.isfinite(v) for v in on_disk.values())
    details = json.loads((tmp_path / "out/scores_details.json").read_text())
    assert set(details["signal_quality"]["models"]) == {"m-l-arch1", "m-s-arch1"}
    assert details["scientific_compliance"]["science_model"] == "m-s-arch1"
    assert scores["scientific_compliance"] == 1.0  # science leads web at every checkpoint
    assert scores["ranking_consistency"] > 0.0
    assert scores["alignment"] == -1.0  # judge off: explicit 'not measured' sentinel
    html = (tmp_path / "out/detailed_results.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html
    assert "http" not in html.replace("http-equiv", "")  # self-contained


def test_report_speaks_to_people(tmp_path):
    """Counts are integers, an unmeasured check says so, pass/fail reads yes/no."""
    res, _ = make_res(tmp_path)
    score(res, tmp_path / "ref", tmp_path / "out")
    page = (tmp_path / "out/detailed_results.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", page.split("<body>", 1)[1]).split())
    assert "Documents 500 evaluated documents" in text and "500.0" not in text
    assert "Alignment not measured (-1 on the leaderboard)" in text and "-1.0" not in text
    assert "leakage shown only not measured ≤ 0.100 —" in text  # no items rendered
    assert "None" not in text and "nan" not in text.lower()
    assert "checkpoints monotonicity" in text and "m-l-arch1 10 " in text


def test_hidden_values_never_reach_participant_files(tmp_path):
    """No value of a hidden checkpoint, nor any document's value there, in the public page
    or scores.json; nor in full precision in the organizers' scores_details.json, whose
    thousands of rounded replicate scores (aggregates over hidden checkpoints too) share
    their first digits with any number."""
    res, hidden = make_res(tmp_path, outcomes=True)
    score(res, tmp_path / "ref", tmp_path / "out")
    out = tmp_path / "out"
    public = (out / "detailed_results.html").read_text() + (out / "scores.json").read_text()
    details = (out / "scores_details.json").read_text()
    documents = hidden.pop("documents")
    assert hidden and len(documents) == len(hidden) * N_DOCS
    assert json.loads(details)["confidence"]["available"]
    assert "interval of SQ over resampled documents" in public  # not vacuous
    for v in hidden.values():
        for text in (repr(v), f"{v:.4f}", f"{v:.3f}", f"{v:.6f}", json.dumps(v)):
            if text in ("0.300", "0.3000"):
                continue
            assert text not in public, f"hidden value {text} leaked"
        for text in (repr(v), f"{v:.6f}", json.dumps(v)):
            assert text not in details, f"hidden value {text} in the details"
    for v in (float(d) for d in documents if 0.0 < d < 1.0):  # clipped ones are no secret
        assert repr(v) not in public + details and f"{v:.6f}" not in public, v


def test_failed_ingestion_exits_nonzero_with_cause(tmp_path):
    res, _ = make_res(tmp_path, status="failed")
    with pytest.raises(IngestionFailed, match="CUDA out of memory"):
        score(res, tmp_path / "ref", tmp_path / "out")
    assert not (tmp_path / "out" / "scores.json").exists()


def test_partial_ingestion_refused(tmp_path):
    res, _ = make_res(tmp_path, status="partial")
    with pytest.raises(IngestionFailed, match="partial"):
        score(res, tmp_path / "ref", tmp_path / "out")


def test_codabench_exit_code_detected(tmp_path):
    res, _ = make_res(tmp_path)
    (res / "metadata").write_text("ingestionExitCode: 137\n")
    with pytest.raises(IngestionFailed, match="137"):
        score(res, tmp_path / "ref", tmp_path / "out")


def test_missing_ingestion_json(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    (res / "metadata").write_text("ingestionExitCode: 1\n")
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "scoring.yaml").write_text("{}")
    with pytest.raises(IngestionFailed, match="exit code 1"):
        score(res, ref, tmp_path / "out")


def test_cli_and_scoring_program_exit_codes(tmp_path):
    res, _ = make_res(tmp_path, status="failed")
    env = {**os.environ, "E2LMC_APP_ROOT": str(tmp_path / "app")}
    app = tmp_path / "app"
    (app / "input").mkdir(parents=True)
    res.rename(app / "input" / "res")
    (tmp_path / "ref").rename(app / "input" / "ref")
    p = subprocess.run([sys.executable, "score.py"], cwd=REPO / "scoring_program", env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "CUDA out of memory" in p.stderr
    # the same output scored after a successful ingestion
    doc = json.loads((app / "input/res/ingestion.json").read_text())
    doc["status"] = "ok"
    write_ingestion(app / "input/res", doc, signing.load_key(app / "input/ref"))
    p = subprocess.run([sys.executable, "score.py"], cwd=REPO / "scoring_program", env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert set(json.loads((app / "output/scores.json").read_text())) == set(LEADERBOARD_KEYS)


def test_all_checkpoints_failed(tmp_path):
    rows = [ResultRow("m-s-arch1", "c1", 1.0, "public", "acc,none", None, status="error",
                      error="load failed")]
    res, _ = make_res(tmp_path, rows=rows)
    with pytest.raises(IngestionFailed, match="no checkpoint"):
        score(res, tmp_path / "ref", tmp_path / "out")


values = st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=32),
                   st.just(0.5), st.none())


@given(st.lists(st.tuples(st.sampled_from(sorted(MODELS)), st.integers(0, 20), values),
                min_size=1, max_size=40))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_adversarial_rows_never_produce_nan(tmp_path_factory, spec):
    """Constant, NaN, single-point and unsorted curves still give a finite row."""
    tmp = tmp_path_factory.mktemp("adv")
    rows = [ResultRow(m, f"iter_{i:07d}", float(i), "public" if i <= 10 else "hidden",
                      "acc,none", None if v is None or not math.isfinite(v) else v,
                      status="ok" if v is not None else "error") for m, i, v in spec]
    # a repeated (model, checkpoint) keeps its last row, as read_results does
    rows = list({r.key: r for r in rows}.values())
    if not any(r.value is not None for r in rows):
        rows.append(ResultRow("m-s-arch1", "iter_0000000", 0.0, "public", "acc,none", 0.5))
    res, _ = make_res(tmp, rows=rows)
    scores = score(res, tmp / "ref", tmp / "out")
    assert all(math.isfinite(v) and abs(v) < 1e10 for v in scores.values())
    json.loads((tmp / "out/scores.json").read_text())  # strict JSON
