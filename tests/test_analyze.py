"""`e2lmc analyze`: per-item statistics, the SQ-guided subset and the filtered submission.

The end-to-end part runs the demo's `noisy_hard` example on the micro suite, analyses its
public checkpoints, and ingests the filtered submission it writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from e2lmc.analyze import analyze
from e2lmc.errors import UserError
from e2lmc.ingestion.submission import official_submission
from e2lmc.item_stats import item_stats
from e2lmc.outcomes import OUTCOMES_FILE, CheckpointRef, Outcomes, read_outcomes, write_outcomes
from e2lmc.results import INGESTION_JSON, RESULTS_JSONL, read_results, write_json
from e2lmc.scoring.config import SQConfig
from e2lmc.subset import choose_subset, split_models

HELD_OUT_MARGIN = 0.2  # measured on the micro suite: held-out SQ 0.188 -> 0.707
SIZES = {"s": 1e6, "m": 2e6, "l": 4e6}


# --------------------------------------------------------------------------- synthetic


def synthetic(n_items: int, n_ck: int, seed: int = 0, hidden: int = 0) -> tuple[Outcomes, dict]:
    """Two architectures x three sizes; item j's margin rises with training at a rate
    that depends on the item alone (shared by every model), plus noise per model."""
    rng = np.random.default_rng(seed)
    learnable = rng.uniform(-0.5, 1.5, n_items)
    models = [(f"dense-{s}-{a}", s, a) for a in ("arch1", "arch2") for s in SIZES]
    cks, margins = [], []
    for m, s, _ in models:
        for t in range(n_ck + hidden):
            stage = "public" if t < n_ck else "hidden"
            cks.append(CheckpointRef(m, f"iter_{(t + 1) * 32:07d}", stage, (t + 1) * 0.01))
            rate = learnable * (1 + np.log2(SIZES[s] / 1e6)) / n_ck
            margins.append(rate * t - 0.8 + rng.normal(0, 0.6, n_items))
    margin = np.array(margins, np.float32)
    value = (margin > 0).astype(np.float32)
    attrs = {m: {"size": s, "arch": a, "data": "science", "params": SIZES[s]}
             for m, s, a in models}
    return Outcomes(cks, [("synth", j) for j in range(n_items)], value, margin), attrs


def write_res(res: Path, o: Outcomes, attrs: dict) -> Path:
    """An ingestion output holding just what analyze reads."""
    res.mkdir(parents=True, exist_ok=True)
    write_outcomes(res / OUTCOMES_FILE, o)
    write_json(res / INGESTION_JSON, {"status": "ok", "models": attrs,
                                      "submission": {"task": "synth", "fingerprint": None}})
    (res / RESULTS_JSONL).write_text("")
    return res


def test_flags_name_what_each_item_does():
    o, attrs = synthetic(8, 10)
    n = o.value.shape[0]
    o.value[:, 0], o.margin[:, 0] = 0, -1  # never learned
    o.value[:, 1], o.margin[:, 1] = 1, 1  # always right
    o.value[:, 2] = np.arange(n) % 2  # flips at every step
    ramp = np.tile(np.linspace(-1, 1, 10), 6)
    o.margin[:, 3], o.value[:, 3] = -ramp, (-ramp > 0)  # unlearned by training
    o.margin[:, 4], o.value[:, 4] = ramp, (ramp > 0)  # learned by training
    big = np.array([c.model.startswith("dense-l") for c in o.checkpoints])
    o.value[:, 5] = big  # only the largest models get it
    models = list(attrs)
    st = item_stats(o, models, attrs)
    assert list(np.flatnonzero(st.flags["never_learned"])) == [0]
    assert list(np.flatnonzero(st.flags["always_right"])) == [1]
    assert st.flags["noisy"][2] and st.flip_rate[2] == 1.0
    assert st.flags["anti_correlated"][3] and st.trend[3] < -0.9
    assert st.trend[4] > 0.9 and not st.flags["anti_correlated"][4]
    assert st.last[4] == 1 and st.first[4] == 0
    assert st.discrimination[5] == 1.0 and st.discrimination[1] == 0.0


def test_held_out_models_never_take_part_in_the_choice():
    o, attrs = synthetic(400, 10, seed=1)
    split = split_models(attrs, SQConfig())
    assert (split.fit_arch, split.held_arch) == ("arch1", "arch2")
    first = choose_subset(o, attrs, SQConfig(), split)
    held = [i for i, c in enumerate(o.checkpoints) if c.model in split.held]
    o.value[held] = np.random.default_rng(5).integers(0, 2, o.value[held].shape)
    o.margin[held] = np.random.default_rng(6).normal(size=o.margin[held].shape)
    second = choose_subset(o, attrs, SQConfig(), split)
    assert np.array_equal(first.keep, second.keep)
    assert second.full["held"] != first.full["held"]
    assert first.keep.sum() >= 100
    assert first.subset["fit"] >= max(first.fit_sq) - 1e-12 >= first.full["fit"]


def test_only_public_checkpoints_are_read(tmp_path):
    o, attrs = synthetic(300, 8, seed=2, hidden=3)
    hidden = [i for i, c in enumerate(o.checkpoints) if c.stage == "hidden"]
    a = analyze(write_res(tmp_path / "a", o, attrs), tmp_path / "out_a")
    o.value[hidden] = 1 - o.value[hidden]
    o.margin[hidden] = -o.margin[hidden]
    b = analyze(write_res(tmp_path / "b", o, attrs), tmp_path / "out_b")
    same = ("kept", "sq_full", "sq_subset", "flags")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert (tmp_path / "out_a" / "items.csv").read_text() == \
        (tmp_path / "out_b" / "items.csv").read_text()
    report = (tmp_path / "out_a" / "report.md").read_text()
    assert all(o.checkpoints[i].checkpoint not in report for i in hidden)


def test_fifteen_thousand_items_take_seconds(tmp_path):
    """15,000 items x 102 public checkpoints (6 models x 17), report included."""
    o, attrs = synthetic(15_000, 17, seed=3)
    res = write_res(tmp_path / "res", o, attrs)
    t0 = time.perf_counter()
    s = analyze(res, tmp_path / "out")
    seconds = time.perf_counter() - t0
    print(f"analyze on 15,000 items x {len(o.checkpoints)} checkpoints: {seconds:.1f} s")
    assert s["items"] == 15_000 and 100 <= s["kept"] <= 15_000
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 10_000
    assert seconds < 60


def test_cli_names_a_missing_outcomes_file(tmp_path, capsys):
    from e2lmc.cli import main

    res = tmp_path / "res"
    res.mkdir()
    write_json(res / INGESTION_JSON, {"status": "ok", "models": {}})
    assert main(["analyze", "--res", str(res)]) == 2
    assert OUTCOMES_FILE in capsys.readouterr().err


# --------------------------------------------------------------------------- filtered task

BASE_YAML = """\
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
process_docs: !function helpers.utils.evens_reversed
doc_to_text: "Q: {{q}}\\nA:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
"""
UTILS = '''\
def evens_reversed(dataset):
    """Every other row, last first: doc ids are positions after this."""
    return dataset.select(list(range(len(dataset) - 2, -1, -2)))
'''


def task_files(n: int = 240) -> dict[str, str]:
    rows = "".join(json.dumps({"q": f"question {i}", "choices": ["a", "b"], "label": i % 2})
                   + "\n" for i in range(n))
    return {"_base.yaml": BASE_YAML, "sub/chained.yaml": "include: ../_base.yaml\n"
            "task: chained\n", "helpers/utils.py": UTILS, "data.jsonl": rows}


@pytest.mark.parametrize("fmt", ["task_folder", "official"])
def test_filtered_submission_keeps_the_ids_after_the_tasks_own_process_docs(tmp_path, fmt):
    from e2lmc import kit
    from e2lmc.filtered_task import write_filtered
    from e2lmc.ingestion.submission import load_submission

    files = task_files()
    if fmt == "official":
        sub = official_submission(files, "chained", "acc,none", tmp_path / "sub.zip")
    else:
        sub = tmp_path / "sub"
        for rel, text in {**files, "metadata.yaml": "task_name: chained\n"
                          "task_metric: acc,none\n"}.items():
            (sub / rel).parent.mkdir(parents=True, exist_ok=True)
            (sub / rel).write_text(text)
    original = load_submission(sub, tmp_path / "orig")
    keep = list(range(0, 120, 2)) + [119]
    out = write_filtered(sub, {"chained": keep}, tmp_path / "out", original.fingerprint)
    assert out.format == fmt and out.documents == len(keep)
    filtered = load_submission(out.zip, tmp_path / "filtered")
    assert filtered.format == fmt and filtered.task_name == "chained"
    folder = "chained" if fmt == "official" else ""  # the patch adds lm_eval/tasks/chained/
    before = kit.render_items(original.tasks_dir / folder, "chained")
    after = kit.render_items(filtered.tasks_dir / folder, "chained")
    assert len(before) == 120
    assert [i.prompt for i in after] == [before[j].prompt for j in keep]
    with pytest.raises(UserError, match="not the submission"):
        write_filtered(sub, {"chained": keep}, tmp_path / "again", "0" * 64)


# --------------------------------------------------------------------------- demo suite


@pytest.fixture(scope="module")
def noisy(micro_suite, demo_runs, tmp_path_factory):
    """noisy_hard through the demo on the micro suite, then analysed with its scoring.yaml."""
    from e2lmc.suite.examples import example_dir

    out = tmp_path_factory.mktemp("analyze")
    run = demo_runs["noisy_hard"]
    res = run["paths"]["ingestion_output"]
    summary = analyze(res, out / "analysis", submission=example_dir("noisy_hard"),
                      ref=micro_suite.parent)
    return {"run": run, "res": res, "summary": summary, "out": out / "analysis"}


@pytest.mark.slow
def test_noisy_hard_subset_beats_the_full_task_on_the_held_out_architecture(noisy):
    s = noisy["summary"]
    print(f"noisy_hard: {s['items']} -> {s['kept']} items; SQ {s['fit_arch']} "
          f"{s['sq_full']['fit']:.4f} -> {s['sq_subset']['fit']:.4f}, {s['held_arch']} "
          f"(held out) {s['sq_full']['held']:.4f} -> {s['sq_subset']['held']:.4f}")
    assert (s["fit_arch"], s["held_arch"]) == ("arch1", "arch2")
    assert 100 <= s["kept"] < s["items"] == 200
    assert s["documents"]["all"] == noisy["run"]["scores"]["documents"] == 198  # 2 repeats
    assert s["sq_subset"]["held"] > s["sq_full"]["held"] + HELD_OUT_MARGIN
    assert s["sq_subset"]["fit"] > s["sq_full"]["fit"]
    # the full task's fit SQ is the leaderboard's SQ: the official formula and selection
    assert s["sq_full"]["fit"] == pytest.approx(noisy["run"]["scores"]["signal_quality"],
                                                abs=1e-9)
    assert s["curve_is_item_mean"]
    assert json.loads((noisy["out"] / "analysis.json").read_text()) == s
    report = (noisy["out"] / "report.md").read_text()
    assert "holds on the held-out architecture" in report
    for name in ("heatmap.png", "curves.png", "sweep.png"):
        assert (noisy["out"] / name).stat().st_size > 10_000


@pytest.mark.slow
def test_filtered_noisy_hard_ingests_exactly_the_kept_items(noisy, micro_suite, tmp_path):
    from e2lmc import kit
    from e2lmc.ingestion.run import ingest
    from e2lmc.manifest import load_manifest

    grid = kit.subset(load_manifest(micro_suite), ["dense-s-arch1", "dense-l-arch2"], 3)
    inp = kit.manifest_dir(grid, tmp_path / "input")
    doc = ingest(Path(noisy["summary"]["filtered_zip"]), inp, tmp_path / "res")
    documents = noisy["summary"]["documents"]  # as the ingestion counts: repeats once
    assert doc["status"] == "ok" and doc["submission"]["n_docs"] == documents["kept"] >= 100
    items = read_outcomes(noisy["res"] / OUTCOMES_FILE)
    kept = np.flatnonzero(np.loadtxt(noisy["out"] / "items.csv", delimiter=",", skiprows=1,
                                     usecols=2))
    mine = read_outcomes(tmp_path / "res" / OUTCOMES_FILE)
    rows = [items.keys.index(k) for k in mine.keys]
    np.testing.assert_array_equal(mine.value, items.value[rows][:, kept])
    for r in read_results(tmp_path / "res"):
        assert r.value == pytest.approx(items.value[items.keys.index(r.key), kept].mean(),
                                        abs=1e-9)


@pytest.mark.slow
def test_cli_prints_both_architectures(noisy, tmp_path, capsys):
    from e2lmc.cli import main

    assert main(["analyze", "--res", str(noisy["res"]), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SQ arch1 (fit)" in out and "SQ arch2 (held out)" in out
    assert (tmp_path / "report.md").is_file()
    assert not (tmp_path / "filtered_submission.zip").exists()  # no --submission given
