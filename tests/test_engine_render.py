"""Cached template compilation renders exactly what lm-eval renders."""

from __future__ import annotations

import json

from e2lmc.engine.render import cached_templates

TASK_YAML = """task: render_check
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
output_type: multiple_choice
fewshot_split: train
test_split: test
num_fewshot: 3
fewshot_config:
  sampler: first_n
doc_to_text: "Q: {{{{question | upper}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def _requests(task_dir):
    from lm_eval.tasks import TaskManager, get_task_dict

    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    task = get_task_dict(["render_check"], tm)["render_check"]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return [(i.doc_id, i.args) for i in task.instances]


def test_cached_templates_render_identically(tmp_path):
    from lm_eval import utils

    for split, n in (("train", 5), ("test", 12)):
        with open(tmp_path / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"question": f"what is {split} {i}?",
                                     "choices": [f"a{i}", f"b {i}", "c"], "answer": i % 3}) + "\n")
    (tmp_path / "render_check.yaml").write_text(
        TASK_YAML.format(train=tmp_path / "train.jsonl", test=tmp_path / "test.jsonl"))
    stock = _requests(tmp_path)
    original = utils.apply_template
    with cached_templates():
        assert utils.apply_template is not original
        cached = _requests(tmp_path)
    assert utils.apply_template is original
    assert cached == stock and len(stock) == 12 * 3
    assert "Q: WHAT IS TEST 0?\nA:" in stock[0][1][0]
