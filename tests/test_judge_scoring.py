"""The checks wired into the scoring program: leaderboard columns, gates, report, cache."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from e2lmc import signing
from e2lmc.errors import UserError
from e2lmc.results import Item, ResultRow, append_jsonl, sign_row, signing_context, write_ingestion
from e2lmc.scoring.program import score

from judge_server import MARKER, JudgeServer

KEY = "sk-scoring-key-DO-NOT-LEAK-42"
MODELS = {
    "s-arch1": {"size": "s", "arch": "arch1", "data": "science"},
    "l-arch1": {"size": "l", "arch": "arch1", "data": "science"},
    "s-web": {"size": "s", "arch": "arch1", "data": "web"},
}


def make_res(tmp: Path, n_items: int, marked: int, leaked: int, judge: str) -> tuple[Path, Path]:
    rng = random.Random(0)
    res, ref = tmp / "res", tmp / "ref"
    res.mkdir()
    ref.mkdir()
    key = signing.new_key()
    signing.write_key(ref / signing.KEY_NAME, key)
    submission = {"task": "task", "metric": "acc,none", "fingerprint": "fp-1"}
    for m, attrs in MODELS.items():
        boost = 0.1 if attrs["size"] == "l" else 0.0
        for i in range(12):
            tokens = 1.0 + i
            v = 0.3 + boost + 0.01 * i + 0.003 * rng.random()
            append_jsonl(res / "results.jsonl", sign_row(ResultRow(
                m, f"iter_{i:07d}", tokens, "public" if tokens <= 9 else "hidden", "acc,none",
                v, iteration=i), key, signing_context(submission)))
    for i in range(n_items):
        word = MARKER if i < marked else "weather"
        gold = f"answer{i}"
        prompt = f"Q{i}: about {word}." + (f" Hint: {gold}." if i < leaked else "")
        append_jsonl(res / "items.jsonl", Item("task", i, prompt, gold,
                                               [gold, f"wrong{i}", f"bad{i}", f"no{i}"], 0))
    write_ingestion(res, {"status": "ok", "models": MODELS, "submission": submission}, key)
    (ref / "scoring.yaml").write_text(
        "sq: {models: {arch: arch1, data: science}}\nrc: {reference_tokens_b: 9}\n"
        "cs: {checkpoints: {stage: null, max_tokens_b: 9}}\n" + judge +
        "leakage: {mode: gate, threshold: 0.1}\n")
    return res, ref


def judge_yaml(url: str, mode: str = "gate") -> str:
    return (f"judge: {{mode: {mode}, base_url: '{url}', threshold: 0.5, samples: 10, "
            "retry_base_s: 0.001, max_retries: 1, api_key_file: judge_key.txt}\n")


def test_scoring_reports_checks_and_gates(tmp_path):
    with JudgeServer() as srv:
        res, ref = make_res(tmp_path, n_items=10, marked=8, leaked=0,
                            judge=judge_yaml(srv.base_url))
        (ref / "judge_key.txt").write_text(KEY)
        out = tmp_path / "out"
        scores = score(res, ref, out)
        assert srv.count == 10 and set(srv.auth_headers) == {f"Bearer {KEY}"}
        assert scores["alignment"] == pytest.approx(0.8) and scores["leakage"] == 0.0
        assert scores["score"] > 0
        details = json.loads((out / "scores_details.json").read_text())
        diag = details["diagnostics"]
        assert diag["snr"]["models"] == 2 and diag["snr"]["value"] > 0
        assert diag["above_chance"]["chance"] == pytest.approx(0.25)
        assert diag["decision_accuracy"]["pairs"] == 1
        page = (out / "detailed_results.html").read_text()
        assert "Diagnostics" in page and "signal-to-noise ratio" in page
        # the public page names rejected items by id; their text stays with the organizers
        assert "rejected 2 of 10 sampled items; for example, by document id: task #8, " \
            "task #9." in page
        assert "weather" not in page and "answer8" not in page
        assert "Q8: about weather" in (out / "scores_details.json").read_text()
        for f in out.iterdir():
            assert KEY not in f.read_text()

        again = score(res, ref, out)  # the verdict cache beside the output: no new calls
        assert srv.count == 10 and again == scores


def test_gates_zero_the_score(tmp_path):
    with JudgeServer() as srv:
        res, ref = make_res(tmp_path, n_items=10, marked=10, leaked=3,
                            judge=judge_yaml(srv.base_url))
        (ref / "judge_key.txt").write_text(KEY)
        scores = score(res, ref, tmp_path / "out")
    assert scores["alignment"] == 1.0 and scores["leakage"] == pytest.approx(0.3)
    assert scores["score"] == 0.0
    details = json.loads((tmp_path / "out/scores_details.json").read_text())
    assert any("leakage 0.300 is above the threshold" in n for n in details["notes"])
    page = (tmp_path / "out/detailed_results.html").read_text()
    assert "3 of 10 checked items give the answer away" in page and "task #0" in page
    assert "Hint" not in page and "answer0" not in page
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "leakage a failure sets the score to 0 0.300 ≤ 0.100 no" in text
    assert "alignment a failure sets the score to 0 1.000 ≥ 0.500 yes" in text
    assert "Hint: answer0" in (tmp_path / "out/scores_details.json").read_text()


def test_required_judge_unreachable_fails_scoring(tmp_path):
    res, ref = make_res(tmp_path, n_items=4, marked=4, leaked=0,
                        judge=judge_yaml("http://127.0.0.1:9/v1", mode="required"))
    (ref / "judge_key.txt").write_text(KEY)
    with pytest.raises(UserError, match="alignment check is required") as exc:
        score(res, ref, tmp_path / "out")
    assert KEY not in str(exc.value)
    assert not (tmp_path / "out/scores.json").exists()


def test_report_mode_unreachable_judge_keeps_the_score(tmp_path):
    res, ref = make_res(tmp_path, n_items=4, marked=4, leaked=0,
                        judge=judge_yaml("http://127.0.0.1:9/v1", mode="report"))
    (ref / "judge_key.txt").write_text(KEY)
    scores = score(res, ref, tmp_path / "out")
    assert scores["alignment"] == -1.0 and scores["score"] > 0
