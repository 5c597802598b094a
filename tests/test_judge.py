"""The alignment judge end to end, through the openai client, against a loopback server."""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace

import pytest

from e2lmc.cli import main
from e2lmc.errors import UserError
from e2lmc.results import Item
from e2lmc.scoring.combine import MEASURED, NOT_MEASURED, OFF, apply_gates
from e2lmc.scoring.config import JudgeConfig
from e2lmc.scoring.judge import parse_verdict, run_judge, sample_items
from e2lmc.scoring.rubric import RUBRIC_VERSION, SYSTEM_PROMPT, render_item

from judge_server import MARKER, JudgeServer

KEY = "sk-test-0123456789abcdefSECRET"
FP = "fingerprint-abc"


def make_items(n: int = 40, marked_every: int = 3) -> list[Item]:
    items = []
    for i in range(n):
        word = MARKER if i % marked_every == 0 else "breakfast"
        items.append(Item(task="t", doc_id=i, prompt=f"Question {i}: what about {word}?\nAnswer:",
                          gold=f"answer {i}", choices=[f"answer {i}", f"other {i}"],
                          gold_index=0))
    return items


def rule_fraction(items: list[Item]) -> float:
    return sum(MARKER in it.prompt for it in items) / len(items)


@pytest.fixture
def cfg() -> JudgeConfig:
    return JudgeConfig(samples=30, seed=7, concurrency=4, mode="gate", threshold=0.5,
                       timeout_s=5.0, max_retries=4, retry_base_s=0.001)


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv("E2LMC_JUDGE_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_fraction_follows_rule_then_cache_makes_no_calls(cfg, tmp_path):
    items = make_items()
    expected = rule_fraction(sample_items(items, cfg.samples, cfg.seed, FP))
    with JudgeServer() as srv:
        c = replace(cfg, base_url=srv.base_url)
        gate = run_judge(items, c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert gate.state == MEASURED and gate.name == "alignment" and gate.higher_is_better
        assert gate.value == pytest.approx(expected)
        assert srv.count == 30
        assert gate.detail["accepted"] + gate.detail["rejected"] == 30
        assert gate.detail["rubric_version"] == RUBRIC_VERSION
        first = srv.requests[0]
        assert first["temperature"] == 0
        assert first["response_format"]["type"] == "json_schema"
        assert first["messages"][0]["content"] == SYSTEM_PROMPT
        assert set(srv.auth_headers) == {f"Bearer {KEY}"}
        rejected = gate.detail["rejected_examples"]
        assert 0 < len(rejected) <= 5 and all(MARKER not in r["text"] for r in rejected)

        again = run_judge(items, c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert srv.count == 30  # second run: zero requests
        assert again.value == gate.value and again.detail["cache_hits"] == 30
        assert again.detail["requests"] == 0

        # The cache is keyed by the model: another judge model asks again.
        other = run_judge(items, replace(c, model="other-judge"), fingerprint=FP,
                          ref_dir=None, cache_dir=tmp_path)
        assert srv.count == 60 and other.value == gate.value


def test_sample_is_reproducible_and_depends_on_fingerprint():
    items = make_items(100)
    a = sample_items(items, 20, 1, "fp1")
    assert [i.doc_id for i in a] == [i.doc_id for i in sample_items(items[::-1], 20, 1, "fp1")]
    assert [i.doc_id for i in a] != [i.doc_id for i in sample_items(items, 20, 1, "fp2")]
    assert [i.doc_id for i in a] != [i.doc_id for i in sample_items(items, 20, 2, "fp1")]
    assert len(sample_items(items, 500, 1, "fp1")) == 100


def test_500_429_and_timeout_are_retried(cfg, tmp_path):
    items = make_items(12)
    faults = [500, 429, "stall", 503]
    with JudgeServer(faults=faults, stall_s=1.0) as srv:
        c = replace(cfg, base_url=srv.base_url, concurrency=1, timeout_s=0.3)
        gate = run_judge(items, c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert gate.state == MEASURED
        assert gate.value == pytest.approx(rule_fraction(items))
        assert srv.count == len(items) + len(faults)
        assert gate.detail["requests"] == srv.count


def test_retry_after_is_honoured(cfg, tmp_path):
    with JudgeServer(faults=[(429, 0.3)]) as srv:
        c = replace(cfg, base_url=srv.base_url, concurrency=1)
        t0 = time.monotonic()
        gate = run_judge(make_items(2), c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert time.monotonic() - t0 >= 0.3  # not the 1 ms of our own backoff
        assert gate.state == MEASURED and srv.count == 3


def test_unwritable_cache_still_measures(cfg, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with JudgeServer() as srv:
        gate = run_judge(make_items(6), replace(cfg, base_url=srv.base_url), fingerprint=FP,
                         ref_dir=None, cache_dir=blocker)
    assert gate.state == MEASURED and gate.value == pytest.approx(rule_fraction(make_items(6)))


@pytest.mark.parametrize("reply", ["text", "fenced", "refuse_schema"])
def test_servers_without_structured_output_still_work(cfg, tmp_path, reply):
    items = make_items(15)
    with JudgeServer(reply=reply) as srv:
        gate = run_judge(items, replace(cfg, base_url=srv.base_url), fingerprint=FP,
                         ref_dir=None, cache_dir=tmp_path)
        assert gate.state == MEASURED
        assert gate.value == pytest.approx(rule_fraction(items))
        if reply == "refuse_schema":  # switched to plain replies after the refusal
            assert "response_format" not in srv.requests[-1]


@pytest.mark.parametrize("mode", ["report", "gate", "required"])
def test_unreachable_judge_yields_configured_state(cfg, tmp_path, mode):
    c = replace(cfg, base_url=closed_port_url(), mode=mode, max_retries=2)
    gate = run_judge(make_items(10), c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
    assert gate.state == NOT_MEASURED and gate.value is None
    assert "unreachable" in gate.reason and "connection failed" in gate.reason
    assert gate.leaderboard_value == -1.0
    if mode == "required":
        with pytest.raises(UserError, match="alignment check is required"):
            apply_gates(0.7, [gate])
    else:
        score, notes = apply_gates(0.7, [gate])
        assert score == 0.7 and "not measured" in notes[0]


def test_server_that_keeps_failing_is_bounded(cfg, tmp_path):
    with JudgeServer(fail_always=500) as srv:
        c = replace(cfg, base_url=srv.base_url, max_retries=3, concurrency=2)
        gate = run_judge(make_items(30), c, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert gate.state == NOT_MEASURED and "HTTP 500" in gate.reason
        # The first item to give up stops the others: far fewer than 30 x 4 requests.
        assert srv.count <= 2 * (c.max_retries + 1)


def test_gate_zeroes_score_below_threshold(cfg, tmp_path):
    items = make_items(20, marked_every=5)  # 20% accepted
    with JudgeServer() as srv:
        gate = run_judge(items, replace(cfg, base_url=srv.base_url), fingerprint=FP,
                         ref_dir=None, cache_dir=tmp_path)
    assert gate.value == pytest.approx(0.2) and gate.passed is False
    score, notes = apply_gates(0.8, [gate])
    assert score == 0.0 and "alignment" in notes[0]


def test_off_makes_no_calls_and_needs_no_key(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("E2LMC_JUDGE_API_KEY")
    with JudgeServer() as srv:
        gate = run_judge(make_items(), replace(cfg, base_url=srv.base_url, mode="off"),
                         fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
        assert gate.state == OFF and srv.count == 0
    assert apply_gates(0.5, [gate]) == (0.5, [])


def test_key_file_and_key_never_leaks(cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("E2LMC_JUDGE_API_KEY")
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "judge_key.txt").write_text(KEY + "\n")
    caplog.set_level(logging.DEBUG)
    with JudgeServer(fail_always="echo401") as srv:
        c = replace(cfg, base_url=srv.base_url, api_key_file="judge_key.txt")
        gate = run_judge(make_items(), c, fingerprint=FP, ref_dir=ref,
                         cache_dir=tmp_path / "cache")
        assert srv.auth_headers[0] == f"Bearer {KEY}"
    assert gate.state == NOT_MEASURED and "401" in gate.reason
    assert KEY not in json.dumps(gate.summary())
    assert KEY not in caplog.text and "SECRET" not in caplog.text


def test_missing_key_is_not_measured(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("E2LMC_JUDGE_API_KEY")
    gate = run_judge(make_items(), cfg, fingerprint=FP, ref_dir=None, cache_dir=tmp_path)
    assert gate.state == NOT_MEASURED and "E2LMC_JUDGE_API_KEY" in gate.reason
    c = replace(cfg, api_key_file="absent.txt")
    gate = run_judge(make_items(), c, fingerprint=FP, ref_dir=tmp_path, cache_dir=tmp_path)
    assert gate.state == NOT_MEASURED and "absent.txt" in gate.reason


@pytest.mark.parametrize("content,verdict", [
    ('{"verdict": "Accept"}', "Accept"),
    ('{"verdict":"reject"}', "Reject"),
    ('```json\n{"verdict": "Reject"}\n```', "Reject"),
    ('Sure. {"verdict": "Accept"} because it is physics.', "Accept"),
    ("Verdict: Reject", "Reject"),
    ("I accept this item.", "Accept"),
    ("Do not reject; verdict - Accept", "Accept"),
    ("Accept or reject? Hard to say.", None),
    ("", None),
    (None, None),
])
def test_parse_verdict(content, verdict):
    assert parse_verdict(content) == verdict


def test_render_item_shows_options_and_answer():
    text = render_item(Item(task="t", doc_id=0, prompt="What is H2O?", gold="water",
                            choices=["water", "salt"], gold_index=0))
    assert "What is H2O?" in text and "A. water\nB. salt" in text
    assert text.startswith("<item>\n") and text.endswith("Expected answer:\nwater\n</item>")


def test_cli_judge(tmp_path, capsys):
    items = make_items(10)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(it.__dict__) + "\n" for it in items))
    out = tmp_path / "verdicts.json"
    with JudgeServer() as srv:
        rc = main(["judge", "--items", str(path), "--base-url", srv.base_url, "--samples", "8",
                   "--model", "local-judge", "--output", str(out),
                   "--cache-dir", str(tmp_path / "c")])
        assert rc == 0 and srv.count == 8
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert printed.startswith(f"alignment: {doc['alignment']:.3f}")
    assert "rejected: t #" in printed and KEY not in printed and KEY not in out.read_text()
    assert len(doc["verdicts"]) == 8 and doc["config"]["model"] == "local-judge"


def test_cli_judge_without_key_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("E2LMC_JUDGE_API_KEY")
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(make_items(1)[0].__dict__) + "\n")
    rc = main(["judge", "--items", str(path), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2 and "OPENAI_API_KEY" in capsys.readouterr().err


def test_cli_judge_rejects_a_file_that_is_not_items(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_text('{"model": "m", "value": 0.5}\n')
    assert main(["judge", "--items", str(path)]) == 2
    assert "not an items file" in capsys.readouterr().err
