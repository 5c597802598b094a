"""The example submissions: committed files equal the generator's output, lm-eval loads them."""

from __future__ import annotations

import json

import pytest
import yaml

from e2lmc.errors import UserError
from e2lmc.suite.examples import EXAMPLES, example_dir, render_files
from e2lmc.suite.world import build_world


@pytest.mark.parametrize("name", EXAMPLES)
def test_committed_files_equal_generator_output(name):
    folder = example_dir(name)
    for fname, text in render_files(name).items():
        assert (folder / fname).read_text() == text, (
            f"{folder / fname} is stale: run `python -m e2lmc.suite.examples`")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_valid_submission_folder(name):
    folder = example_dir(name)
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta == {"task_name": name, "task_metric": "acc,none"}
    task = yaml.safe_load((folder / f"{name}.yaml").read_text())
    assert task["task"] == name and task["dataset_path"] == "json"
    assert task["dataset_kwargs"]["data_files"]["test"] == "test.jsonl"
    docs = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    assert 100 <= len(docs) <= 15000
    prompts = set()
    for d in docs:
        assert 0 <= d["label"] < len(d["choices"]) == len(set(d["choices"])) >= 3
        # the leakage gate: the gold answer never appears in the prompt
        assert d["choices"][d["label"]] not in d["question"]
        prompts.add((d["question"], tuple(d["choices"])))
    assert len(prompts) == len(docs), "duplicate items"


def test_science_questions_are_about_world_entities():
    world = build_world()
    names = {e.name for e in world.elements} | {c.name for c in world.compounds} | \
        {p.name for p in world.planets} | {o.name for o in world.organisms}
    docs = [json.loads(x) for x in
            (example_dir("science_cloze") / "test.jsonl").read_text().splitlines()]
    assert {d["subject"] for d in docs} <= names
    assert len({d["relation"] for d in docs}) >= 10


def test_unknown_example_is_a_user_error():
    with pytest.raises(UserError, match="science_cloze"):
        example_dir("nope")


@pytest.mark.parametrize("name", EXAMPLES)
def test_lm_eval_loads_the_task_from_its_folder(name, monkeypatch):
    from lm_eval.tasks import TaskManager, get_task_dict

    folder = example_dir(name)
    monkeypatch.chdir(folder)  # the ingestion resolves data_files against the YAML folder
    tm = TaskManager(include_path=str(folder), include_defaults=False)
    assert name in tm.all_tasks
    task = get_task_dict([name], tm)[name]
    docs = list(task.test_docs())
    assert len(docs) == len((folder / "test.jsonl").read_text().splitlines())
    first = docs[0]
    text = task.doc_to_text(first)
    assert first["question"] in text
    assert task.doc_to_choice(first) == first["choices"]
    assert task.doc_to_target(first) == first["label"]
