"""The starting kit's helpers: the real-mode code paths (hub ids, subfolder, bfloat16,
cuda, lm-eval arguments) checked without a GPU or the hub, the MMLU-var baseline task,
official-format patches, the example submissions and the offline judge."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from e2lmc import baseline, kit
from e2lmc.ingestion import submission
from e2lmc.errors import UserError
from e2lmc.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "starting_kit" / "example_submissions"


# --------------------------------------------------------------------------- the switch


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv(kit.MODE_ENV, "demo")
    monkeypatch.setattr(kit, "gpu_available", lambda: True)
    assert kit.detect_mode() == "demo"
    monkeypatch.setenv(kit.MODE_ENV, "Real")
    assert kit.detect_mode() == "real"
    monkeypatch.setenv(kit.MODE_ENV, "gpu")
    with pytest.raises(UserError, match="E2LMC_KIT_MODE"):
        kit.detect_mode()


@pytest.mark.parametrize("gpu, mode", [(True, "real"), (False, "demo")])
def test_mode_follows_the_gpu(monkeypatch, gpu, mode):
    monkeypatch.delenv(kit.MODE_ENV, raising=False)
    monkeypatch.setattr(kit, "gpu_available", lambda: gpu)
    assert kit.detect_mode() == mode


# --------------------------------------------------------------------------- real mode


@pytest.fixture(scope="module")
def real():
    return kit.setup("real")


def test_real_setup_is_the_hub_grid_on_cuda_in_bfloat16(real):
    assert (real.device, real.dtype) == ("cuda", "bfloat16")
    assert real.models == [f"dense-{s}-{a}" for s in ("500m", "1b", "3b")
                           for a in ("arch1", "arch2")]
    assert real.default_model == "dense-500m-arch1"
    ckpts = real.public("dense-1b-arch1")
    assert [c.subfolder for c in ckpts] == [f"iter_{i:07d}" for i in range(2000, 54001, 2000)]
    assert {c.source for c in ckpts} == {"hf://tiiuae/dense-1b-arch1"}
    assert ckpts[0].tokens_b == pytest.approx(2.097, abs=1e-3)
    assert ckpts[-1].tokens_b == pytest.approx(197.6, abs=0.1)


def test_real_lm_eval_arguments(real):
    ckpt = real.public("dense-1b-arch1")[1]
    assert kit.load_kwargs(ckpt) == ("tiiuae/dense-1b-arch1", {"subfolder": "iter_0004000"})
    args = "pretrained=tiiuae/dense-1b-arch1,subfolder=iter_0004000,dtype=bfloat16"
    assert kit.model_args(ckpt, real.dtype) == args
    cmd = kit.lm_eval_command(ckpt, "sciq", device=real.device, dtype=real.dtype,
                              batch_size=real.batch_size, limit=20)
    assert cmd == ["lm_eval", "--model", "hf", "--model_args", args, "--tasks", "sciq",
                   "--device", "cuda", "--batch_size", "auto", "--limit", "20"]


def test_real_loading_uses_repo_subfolder_dtype_and_device(real, monkeypatch):
    import torch
    import transformers

    calls = {}

    class FakeModel:
        def to(self, device):
            calls["device"] = device
            return self

        def eval(self):
            return self

    def fake_model(repo, **kw):
        calls["model"] = (repo, kw)
        return FakeModel()

    def fake_tok(repo, **kw):
        calls["tokenizer"] = (repo, kw)
        return "tokenizer"

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    kit.load_model(real.checkpoint("dense-3b-arch2", 0), real.device, real.dtype)
    assert calls["model"] == ("tiiuae/dense-3b-arch2",
                              {"subfolder": "iter_0002000", "dtype": torch.bfloat16})
    assert calls["tokenizer"] == ("tiiuae/dense-3b-arch2", {"subfolder": "iter_0002000"})
    assert calls["device"] == "cuda"


def test_real_evaluate_calls_lm_eval_with_the_checkpoint(real, monkeypatch):
    import lm_eval

    seen = {}
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: seen.update(kw) or {})
    monkeypatch.setattr(kit, "task_manager", lambda include: ("task manager", include))
    kit.evaluate(real.checkpoint(), "sciq", device=real.device, dtype=real.dtype,
                 batch_size=real.batch_size)
    assert seen["model"] == "hf" and seen["tasks"] == ["sciq"]
    assert seen["model_args"] == ("pretrained=tiiuae/dense-500m-arch1,"
                                  "subfolder=iter_0054000,dtype=bfloat16")
    assert (seen["device"], seen["batch_size"]) == ("cuda", "auto")
    assert seen["task_manager"] == ("task manager", None)  # lm-eval's own tasks


def test_real_manifest_round_trips_for_ingestion(tmp_path):
    grid = kit.real_manifest(models=["dense-500m-arch1"], iterations=range(4000, 54001, 4000))
    m = load_manifest(kit.manifest_dir(grid, tmp_path))
    assert (m.defaults.dtype, m.defaults.device) == ("bfloat16", "cuda")
    ckpts = m.model("dense-500m-arch1").checkpoints
    assert len(ckpts) == 13 and ckpts[0].load_target() == ("tiiuae/dense-500m-arch1",
                                                           "iter_0004000")


def test_real_local_scoring_uses_the_official_sq_selection(tmp_path):
    from e2lmc.scoring.config import load_config

    grid = kit.real_manifest(models=["dense-1b-arch1"])
    cfg = load_config(kit.local_scoring_config(tmp_path, grid))
    assert (cfg.sq.checkpoints.iteration_step, cfg.sq.checkpoints.max_tokens_b) == (4000, 206)
    assert cfg.sq.models.arch == "arch1"
    assert cfg.judge.mode == "off" and cfg.leakage.mode == "report"


def test_subset_spreads_checkpoints(real):
    grid = kit.subset(real.manifest, ["dense-1b-arch2"], n=3)
    assert [c.iteration for c in grid.models[0].checkpoints] == [2000, 28000, 54000]
    assert [c.iteration for c in real.spread(n=2)] == [2000, 54000]


# --------------------------------------------------------------------------- baseline


def test_baseline_task_files_are_mmlu_var():
    files = baseline.task_files()
    assert len(files) == 57 + 2
    tmpl = yaml.safe_load(files[baseline.TEMPLATE])
    assert tmpl["dataset_path"] == "cais/mmlu"
    assert (tmpl["test_split"], tmpl["fewshot_split"], tmpl["num_fewshot"]) == ("test", "dev", 5)
    assert tmpl["fewshot_config"] == {"sampler": "first_n"}
    assert tmpl["doc_to_text"] == "Question: {{question.strip()}}\nAnswer:"
    assert tmpl["doc_to_choice"] == "{{choices}}" and tmpl["output_type"] == "multiple_choice"
    assert [m["metric"] for m in tmpl["metric_list"]] == ["acc"]
    group = yaml.safe_load(files["_mmlu_var.yaml"])
    assert group["group"] == "mmlu_var" and len(group["task"]) == 57
    assert group["aggregate_metric_list"][0]["weight_by_size"] is True
    anatomy = yaml.safe_load(files["mmlu_var_anatomy.yaml"])
    assert anatomy == {"include": baseline.TEMPLATE, "task": "mmlu_var_anatomy",
                       "dataset_name": "anatomy"}


def test_baseline_task_indexes_in_lm_eval(tmp_path):
    tm = kit.task_manager(baseline.write_task(tmp_path / "t"))
    assert {"mmlu_var", "mmlu_var_virology"} <= set(tm.all_tasks)


def _mmlu_like(root: Path, subjects=("alpha", "beta"), n_test=4) -> Path:
    for s in subjects:
        for split, n in (("dev", 5), ("test", n_test)):
            path = root / s / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"question": f" {s} question {i} ",
                                                "subject": s, "choices": ["a", "b", "c"],
                                                "answer": i % 3}) + "\n" for i in range(n)))
    return root


def test_baseline_on_local_data_renders_cloze_items(tmp_path):
    data = _mmlu_like(tmp_path / "data")
    task = baseline.write_task(tmp_path / "task", data_dir=data)
    assert kit.count_docs(task, "mmlu_var") == {"mmlu_var_alpha": 4, "mmlu_var_beta": 4}
    items = kit.render_items(task, "mmlu_var", limit=2)
    assert items[1].prompt == "Question: alpha question 1\nAnswer:"
    assert (items[1].choices, items[1].gold, items[1].gold_index) == (["a", "b", "c"], "b", 1)


# --------------------------------------------------------------------------- submissions


def test_evaluation_patch_applies_with_git_and_ingestion(tmp_path):
    from e2lmc.ingestion.patch import task_files

    files = {"a.yaml": "task: a\n", "sub_utils.py": "x = 1\ny = 2\n", "raw": "no newline"}
    text = submission.evaluation_patch(files, "lm_eval/tasks/demo")
    assert {k.split("/", 1)[1]: v for k, v in task_files(text).items()} == files
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "p.patch").write_text(text)
    subprocess.run(["git", "apply", "p.patch"], cwd=repo, check=True)
    for name, content in files.items():
        assert (repo / "lm_eval/tasks/demo" / name).read_text() == content


def test_official_submission_is_reproducible_and_loads(tmp_path):
    from e2lmc.ingestion.submission import load_submission

    files = baseline.task_files()
    a = submission.official_submission(files, "mmlu_var", "acc,none", tmp_path / "a.zip")
    b = submission.official_submission(files, "mmlu_var", "acc,none", tmp_path / "b.zip")
    assert a.read_bytes() == b.read_bytes()
    sub = load_submission(a, tmp_path / "work")
    assert (sub.format, sub.task_name, sub.metric) == ("official", "mmlu_var", "acc,none")
    assert len(sub.files) == 59


def test_official_submission_that_fails_its_check_leaves_no_zip(tmp_path):
    with pytest.raises(UserError, match="task_metric"):
        submission.official_submission(baseline.task_files(), "mmlu_var", "acc none",
                                       tmp_path / "bad.zip")
    assert list(tmp_path.iterdir()) == []


def _contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_committed_examples_match_a_fresh_generation(tmp_path):
    fresh = kit.write_example_submissions(tmp_path)
    assert sorted(p.name for p in EXAMPLES.glob("*.zip")) == sorted(p.name for p in fresh)
    for path in fresh:
        assert _contents(EXAMPLES / path.name) == _contents(path), (
            f"{path.name} is stale; run python starting_kit/example_submissions/regenerate.py")
    assert (EXAMPLES / "mmlu_var.zip").read_bytes() == fresh[0].read_bytes()


def test_my_task_is_within_the_size_limits(tmp_path):
    rows = kit.element_rows()
    assert len({r["question"] for r in rows}) == len(rows)
    assert all(r["answer"] not in r["distractors"] and len(set(r["distractors"])) == 3
               for r in rows)
    task = kit.write_my_task(tmp_path / "t", "real")
    counts = kit.count_docs(task, kit.MY_TASK)
    assert counts == {kit.MY_TASK: len(rows)}
    assert "within the limits" in kit.check_size(counts)
    assert "too few" in kit.check_size({"x": 99})
    item = kit.render_items(task, kit.MY_TASK, limit=1)[0]
    assert item.prompt == "Question: What is the chemical symbol of hydrogen?\nAnswer:"
    assert item.gold == "H" and item.choices[item.gold_index] == "H"


def test_show_zip_hides_the_token(tmp_path):
    path = submission.write_zip(tmp_path / "s.zip", {"metadata.yaml": yaml.safe_dump(
        {"task_name": "t", "task_metric": "acc,none", "hf_token": "hf_secret"})})
    shown = kit.show_zip(path)
    assert "hf_secret" not in shown and "***" in shown


# --------------------------------------------------------------------------- curves, judge


def test_curves_from_results_feed_score_curves(tmp_path):
    from e2lmc.results import RESULTS_JSONL, ResultRow, append_jsonl
    from e2lmc.scoring.config import CheckpointFilter
    from e2lmc.scoring.curves_file import score_curves

    values = [0.1, 0.2, 0.25, 0.3, 0.32, 0.4, 0.41, 0.5, 0.52]
    for i, v in reversed(list(enumerate(values))):  # out of order on purpose
        append_jsonl(tmp_path / RESULTS_JSONL, ResultRow(
            model="dense-s-arch1", checkpoint=f"iter_{i:07d}", tokens_b=0.1 * (i + 1),
            stage="public", metric="acc,none", value=v, iteration=10 * (i + 1)))
    append_jsonl(tmp_path / RESULTS_JSONL, ResultRow(
        model="dense-s-arch1", checkpoint="late", tokens_b=9.0, stage="hidden",
        metric="acc,none", value=0.0, iteration=900))
    path = kit.curves_from_results(tmp_path, "bench", tmp_path / "curves.json")
    data = kit.load_curves_json(path)["dense-s-arch1"]
    assert data["bench"] == values and data["iteration"][0] == 10
    res = score_curves(path, "bench", models=["dense-s-arch1"],
                       checkpoints=CheckpointFilter(stage=None))
    assert res["models"]["dense-s-arch1"]["monotonicity"] == pytest.approx(1.0)


def test_shared_curves_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(kit.CURVES_ENV, str(tmp_path / "missing.json"))
    assert kit.shared_curves() is None
    (tmp_path / "c.json").write_text("{}")
    monkeypatch.setenv(kit.CURVES_ENV, str(tmp_path / "c.json"))
    assert kit.shared_curves() == tmp_path / "c.json"


def test_stand_in_judge_runs_the_real_judge_offline(tmp_path, monkeypatch):
    from e2lmc.results import Item
    from e2lmc.scoring.config import JudgeConfig
    from e2lmc.scoring.judge import run_judge

    monkeypatch.delenv("E2LMC_KIT_NO_KEY", raising=False)
    items = [Item("t", 0, "Question: What is the atomic number of iron?\nAnswer:", "26"),
             Item("t", 1, "Question: Where do people buy bread?\nAnswer:", "a bakery"),
             Item("t", 2, "Question: Which planet orbits the star Vega?\nAnswer:", "Tir")]
    with kit.StandInJudge(lifetime_s=30) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        cfg = JudgeConfig(mode="report", base_url=srv.base_url, model="stand-in",
                          api_key_env="E2LMC_KIT_NO_KEY", samples=50)
        gate = run_judge(items, cfg, fingerprint="f", ref_dir=None, cache_dir=tmp_path)
        assert srv.requests == 3
    assert gate.value == pytest.approx(2 / 3)
    assert gate.detail["rejected"] == 1



def test_rendered_items_match_the_ingestion_output(tmp_path, tiny_grid):
    """Notebook 7 judges what the scoring's judge will see: the ingestion's items.jsonl."""
    from e2lmc.ingestion.run import ingest
    from e2lmc.results import read_items

    task = kit.write_my_task(tmp_path / "task", "real")
    (task / "metadata.yaml").write_text(f"task_name: {kit.MY_TASK}\ntask_metric: acc,none\n")
    grid = kit.subset(tiny_grid, [tiny_grid.models[0].name], n=1)
    doc = ingest(task, kit.manifest_dir(grid, tmp_path / "input"), tmp_path / "res",
                 device="cpu", log=lambda *a: None)
    assert doc["status"] == "ok", doc.get("error")
    assert read_items(tmp_path / "res") == kit.render_items(task, kit.MY_TASK)
