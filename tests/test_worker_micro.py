"""`e2lmc run-local` in-process with the real programs on the micro demo suite.

The whole Codabench path on CPU: this checkout's ingestion and scoring programs (each with
a vendored e2lmc copy), an example submission zip, the micro suite's manifest as input
data and its scoring.yaml (with a loopback judge) as reference data. One run serves both
tests: the results, and what the participant-visible files (the logs, which the phases
show, and detailed_results.html, which Codabench serves to anyone) must never hold.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import REPO, example_zip, require_programs
from e2lmc.bundle.worker import RunResult, run_local
from judge_server import JudgeServer

pytestmark = pytest.mark.slow
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
# Item text: in every question, and in every choice of a few documents.
QUESTION_MARK, CHOICE_MARK = "QMARK7Z3Q", "CMARK4Y8W"
LEAKY_DOCS = 5  # their prompt gives the answer away, so the leakage check flags them
# Secrets: in the programs' environment, in metadata.yaml, in the judge key file.
ENV_CANARIES = {"HF_TOKEN": "hf_canaryENV5521", "HUGGING_FACE_HUB_TOKEN": "hf_canaryENV7730",
                "OPENAI_API_KEY": "sk-canaryENV3318"}
META_TOKEN, JUDGE_KEY = "hf_canaryMETA9042", "sk-canaryJUDGE6604"
SECRETS = (*ENV_CANARIES.values(), META_TOKEN, JUDGE_KEY)


def marked_submission(dest: Path) -> Path:
    """The science_cloze example with marked item text, a few leaky prompts, a token."""
    folder = example_zip(dest).with_suffix("")
    docs = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    for i, doc in enumerate(docs):
        doc["question"] = f"{QUESTION_MARK} {doc['question']}"
        if i < LEAKY_DOCS:
            doc["question"] += f" Hint: {doc['choices'][doc['label']]}."
        elif i < 2 * LEAKY_DOCS:
            doc["choices"] = [f"{c} {CHOICE_MARK}" for c in doc["choices"]]
    (folder / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    (folder / "metadata.yaml").write_text(yaml.safe_dump({**meta, "hf_token": META_TOKEN}))
    path = dest / "marked.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return path


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, micro_suite) -> RunResult:
    require_programs()
    tmp = tmp_path_factory.mktemp("micro_run")
    grid = micro_suite.parent
    ref = tmp / "ref"
    ref.mkdir()
    key_file = tmp / "judge.key"
    key_file.write_text(JUDGE_KEY)
    with JudgeServer(lifetime_s=900) as srv:  # rejects every item: examples to report
        cfg = yaml.safe_load((grid / "scoring.yaml").read_text())
        cfg["judge"] = {"mode": "report", "base_url": srv.base_url, "samples": 20,
                        "retry_base_s": 0.001, "max_retries": 1}
        (ref / "scoring.yaml").write_text(yaml.safe_dump(cfg))
        return run_local(marked_submission(tmp), "e2lm", bundle=REPO, workdir=tmp / "w",
                         input_data=grid, ref=ref, judge_key_file=key_file,
                         env={**OFFLINE, **ENV_CANARIES}, timeout=600)


def test_example_submission_on_the_micro_suite(micro_run, micro_suite):
    from e2lmc.scoring.program import LEADERBOARD_KEYS

    result, grid = micro_run, micro_suite.parent
    assert result.prediction.exit_code == 0, result.prediction.stderr.read_text()[-2000:]
    assert set(result.leaderboard) == set(LEADERBOARD_KEYS)
    assert all(math.isfinite(v) for v in result.leaderboard.values())
    assert 0.0 <= result.leaderboard["score"] <= 1.0
    assert result.leaderboard["alignment"] == 0.0  # measured: the judge rejects them all

    res = result.workdir / "app" / "input" / "res"
    assert yaml.safe_load((res / "metadata").read_text())["ingestionExitCode"] == 0
    status = json.loads((res / "ingestion.json").read_text())
    assert status["status"] == "ok"
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    manifest = yaml.safe_load((grid / "manifest.yaml").read_text())
    expected = sum(len(m["checkpoints"]) for m in manifest["models"])
    assert len({(r["model"], r["checkpoint"]) for r in rows}) == expected
    assert (result.workdir / "app" / "output" / "detailed_results.html").is_file()


def test_logs_and_report_hold_no_hidden_value_secret_or_item_text(micro_run):
    work = micro_run.workdir
    res, out = work / "app" / "input" / "res", work / "app" / "output"
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    hidden = [r for r in rows if r["stage"] == "hidden"]
    # full-precision forms of the hidden values (k/120: distinctive digits), but for those
    # that also begin a leaderboard value, which the scoring log prints and anyone sees
    board = " ".join(repr(v) for v in micro_run.scores.values())
    forms = {f for r in hidden if len(repr(r["value"])) > 6
             for f in (repr(r["value"]), f"{r['value']:.6f}") if f not in board}
    assert len(forms) >= 10, forms
    logs = {p.name: p.read_text() for p in (work / "logs").iterdir()}
    assert set(logs) == {f"{s}.{o}.txt" for s in ("ingestion", "scoring")
                         for o in ("stdout", "stderr")}
    shown = {**logs, "detailed_results.html": (out / "detailed_results.html").read_text()}
    for name, text in shown.items():
        for needle in (*forms, QUESTION_MARK, CHOICE_MARK, "Hint:"):
            assert needle not in text, f"{needle!r} in {name}"
    # the ingestion log names hidden checkpoints without a value
    keys = {f"{r['model']}/{r['checkpoint']}" for r in hidden}
    hidden_lines = [line for line in logs["ingestion.stdout.txt"].splitlines()
                    if any(f"{k} " in line for k in keys)]
    assert len(hidden_lines) == len(keys) and not [x for x in hidden_lines if "=" in x]
    # no secret in any log or output file of either step
    for path in [*(work / "logs").iterdir(), *res.iterdir(), *out.iterdir()]:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {path}"
    # not vacuous: the flagged items exist, named by id on the public page, by text only in
    # the organizers' scores_details.json (hidden from participants by hide_score_output)
    assert "Flagged items" in shown["detailed_results.html"]
    assert "science_cloze #0" in shown["detailed_results.html"]
    details = (out / "scores_details.json").read_text()
    assert QUESTION_MARK in details and "Hint:" in details
    # the intervals from resampling documents: all in the details, SQ's alone on the page
    confidence = json.loads(details)["confidence"]
    assert confidence["available"] and len(confidence["intervals"]) == 4
    assert "interval of SQ over resampled documents" in shown["detailed_results.html"]

