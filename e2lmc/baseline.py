"""The organizers' baseline benchmark, MMLU-var, as an lm-eval task folder.

MMLU-var is MMLU asked in cloze form: the prompt is `Question: ...\\nAnswer:`, the choices
are the full answer texts (scored by log-likelihood, no letters), five shots from each
subject's `dev` split taken in order (`first_n` sampler), metric `acc`. One task per
subject, all 57 subjects, and a group `mmlu_var` whose `acc` is the size-weighted mean
(accuracy over all questions).

The files are generated rather than kept by hand, so the 57 subject tasks cannot drift:
- hub data (`cais/mmlu`), as submitted to the competition: `task_files()`;
- local JSONL data in the same schema (`question`, `subject`, `choices`, `answer`), for the
  offline demo: `task_files(data_dir=...)`; `write_demo_data()` builds such data from the
  demo suite's science world, one "subject" per kind of fact.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import yaml

TASK = "mmlu_var"
METRIC = "acc,none"
HUB_DATASET = "cais/mmlu"
NUM_FEWSHOT = 5
TEMPLATE = f"_{TASK}_template_yaml"

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)


class _Dumper(yaml.SafeDumper):
    """Writes strings with line breaks double-quoted (`"Question: ...\\nAnswer:"`), as
    lm-eval's own task files do."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style='"' if "\n" in s else None))


def _dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def template(local: bool) -> dict:
    """What every subject task shares."""
    doc: dict = {"dataset_path": "json" if local else HUB_DATASET}
    doc.update({
        "output_type": "multiple_choice",
        "test_split": "test",
        "fewshot_split": "dev",
        "num_fewshot": NUM_FEWSHOT,
        "fewshot_config": {"sampler": "first_n"},
        "doc_to_text": "Question: {{question.strip()}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    })
    return doc


def subject_task(subject: str, data_dir: Path | None = None) -> dict:
    doc: dict = {"include": TEMPLATE, "task": f"{TASK}_{subject}"}
    if data_dir is None:
        doc["dataset_name"] = subject
    else:
        doc["dataset_kwargs"] = {"data_files": {
            split: str(Path(data_dir).resolve() / subject / f"{split}.jsonl")
            for split in ("dev", "test")}}
    return doc


def group(subjects: list[str] | tuple[str, ...]) -> dict:
    return {
        "group": TASK,
        "task": [f"{TASK}_{s}" for s in subjects],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean",
                                   "weight_by_size": True}],
        "metadata": {"version": 1.0},
    }


def task_files(subjects: list[str] | tuple[str, ...] | None = None,
               data_dir: str | Path | None = None) -> dict[str, str]:
    """File name -> text of the task folder; hub data unless `data_dir` is given."""
    local = data_dir is not None
    if subjects is None:
        subjects = list_subjects(data_dir) if local else MMLU_SUBJECTS
    files = {TEMPLATE: _dump(template(local)), f"_{TASK}.yaml": _dump(group(subjects))}
    for s in subjects:
        files[f"{TASK}_{s}.yaml"] = _dump(subject_task(s, Path(data_dir) if local else None))
    return dict(sorted(files.items()))


def write_task(out_dir: str | Path, subjects: list[str] | None = None,
               data_dir: str | Path | None = None) -> Path:
    """Write the task folder; returns it (pass it to lm-eval as `include_path`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in task_files(subjects, data_dir).items():
        (out / name).write_text(text)
    return out


def list_subjects(data_dir: str | Path) -> list[str]:
    """Subjects of a local data folder (one sub-folder with dev/test JSONL each)."""
    return sorted(p.parent.name for p in Path(data_dir).glob("*/test.jsonl"))


def write_demo_data(out_dir: str | Path, n_test: int | None = None) -> Path:
    """MMLU-format data from the demo suite's science world, one subject per relation.

    The first five questions of a relation are its `dev` split (the shots), the next
    `n_test` (all when None) its `test` split.
    """
    from e2lmc.suite.examples import example_dir

    docs = [json.loads(line) for line in
            (example_dir("science_cloze") / "test.jsonl").read_text().splitlines() if line]
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_subject[d.get("relation", "science")].append(
            {"question": d["question"], "subject": d.get("relation", "science"),
             "choices": d["choices"], "answer": d["label"]})
    out = Path(out_dir)
    for subject, rows in sorted(by_subject.items()):
        if len(rows) <= NUM_FEWSHOT:
            continue
        splits = {"dev": rows[:NUM_FEWSHOT],
                  "test": rows[NUM_FEWSHOT:][:n_test] if n_test else rows[NUM_FEWSHOT:]}
        for split, part in splits.items():
            path = out / subject / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in part))
    return out
