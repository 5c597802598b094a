"""Stand-in hub repos for the stand-in hub (tests/hubstub.py): tiny data in real layouts.

Datasets are laid out as `push_to_hub` writes them (the layout of cais/mmlu and of the
winners' datasets): parquet files with the `datasets` features in their schema,
`CONFIG/SPLIT-00000-of-00001.parquet` (or `data/SPLIT-...` for a single default config),
and a README whose YAML lists `configs` (data files per split) and `dataset_info`.
Columns are those the tasks read: question, subject, choices, answer (MMLU's `answer` is a
ClassLabel A-D, as in cais/mmlu). The rows themselves are synthetic (build.mc_rows).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import yaml

from hubstub import Repo

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

MMLU_FEATURES = {"question": "string", "subject": "string", "choices": ["string"],
                 "answer": ["A", "B", "C", "D"]}  # a list of names: a ClassLabel
PLAIN_FEATURES = {"question": "string", "subject": "string", "choices": ["string"],
                  "answer": "int64"}
WINNER_DATASETS = {  # upstream task folder: (hub dataset, splits its tasks read)
    "mmlu_early_training": ("giovanivaldrighi/mmlu", ("test", "dev")),
    "noor": ("mdahba/noor_final2", ("validation", "test", "dev")),
    "sciknoweval_mcqa": ("ShAIkespear/SciKnowEval_mcqa", ("test", "dev")),
}


def _features(spec: dict):
    from datasets import ClassLabel, Features, Sequence, Value

    def one(v):
        if v == ["string"]:
            return Sequence(Value("string"))
        if isinstance(v, list):
            return ClassLabel(names=v)
        return Value(v)

    return Features({k: one(v) for k, v in spec.items()})


def _card_features(spec: dict) -> list[dict]:
    out = []
    for k, v in spec.items():
        if v == ["string"]:
            out.append({"name": k, "sequence": "string"})
        elif isinstance(v, list):
            out.append({"name": k, "dtype": {"class_label": {"names": {
                str(i): n for i, n in enumerate(v)}}}})
        else:
            out.append({"name": k, "dtype": v})
    return out


def parquet(rows: list[dict], spec: dict) -> bytes:
    """Parquet bytes whose schema carries the `datasets` features, as push_to_hub writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=_features(spec).arrow_schema), buf)
    return buf.getvalue()


def dataset_repo(configs: dict[str, dict[str, list[dict]]], spec: dict = PLAIN_FEATURES,
                 token: str | None = None, extra: dict[str, bytes] | None = None) -> Repo:
    """{config: {split: rows}} as push_to_hub lays it out; `default` alone goes to data/."""
    files: dict[str, bytes] = {}
    card_configs, infos = [], []
    for name, splits in configs.items():
        folder = "data" if list(configs) == ["default"] else name
        for split, rows in splits.items():
            files[f"{folder}/{split}-00000-of-00001.parquet"] = parquet(rows, spec)
        card_configs.append({"config_name": name, "data_files": [
            {"split": s, "path": f"{folder}/{s}-*"} for s in splits]})
        infos.append({"config_name": name, "features": _card_features(spec),
                      "splits": [{"name": s, "num_examples": len(r)} for s, r in splits.items()]})
    meta = {"dataset_info": infos, "configs": card_configs}
    files["README.md"] = ("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
                          "# A stand-in dataset\n").encode()
    files[".gitattributes"] = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    files.update(extra or {})
    return Repo(files, token=token)


def mmlu_rows(subject: str, n: int, seed: int) -> list[dict]:
    return build.mc_rows(n, seed=seed, subject=subject)


def mmlu_repo(subjects: list[str] | tuple[str, ...], n_test: int = 2) -> Repo:
    """cais/mmlu: one config per subject (test, validation, dev), plus `all`."""
    configs = {s: {"test": mmlu_rows(s, n_test, k), "validation": mmlu_rows(s, 1, 100 + k),
                   "dev": mmlu_rows(s, 5, 200 + k)} for k, s in enumerate(subjects)}
    configs["all"] = {split: [r for c in list(configs.values()) for r in c[split]]
                      for split in ("test", "validation", "dev")}
    return dataset_repo(configs, MMLU_FEATURES)


def winner_repo(name: str, leaves: list[str | None], n_test: int) -> Repo:
    """A winner's dataset: one config per leaf task (`None`: the default config)."""
    _, splits = WINNER_DATASETS[name]
    sizes = {"test": n_test, "dev": 5, "validation": 3}
    configs = {leaf or "default": {s: build.mc_rows(sizes[s], seed=10 * k + len(s),
                                                    subject=leaf or "science")
                                   for s in splits}
               for k, leaf in enumerate(leaves)}
    return dataset_repo(configs)


def winner_files(name: str) -> tuple[dict[str, str], str, str, list[str | None]]:
    """The upstream task files unchanged, as {path under lm_eval/tasks/: text}, with the
    task name, metric and the dataset config of each leaf task."""
    import lm_eval

    folder, task_name, metric = build.WINNERS[name]
    src = Path(lm_eval.__file__).parent / "tasks" / "e2lmc" / folder
    files, leaves = {}, []
    for p in sorted(src.iterdir()):
        if p.is_dir() or p.suffix == ".md" or p.name.startswith("_generate"):
            continue
        files[f"e2lmc/{folder}/{p.name}"] = p.read_text()
        doc = yaml.load(p.read_text(), Loader=build._AnyTag) if p.suffix != ".py" else None
        if isinstance(doc, dict) and isinstance(doc.get("task"), str):
            leaves.append(doc.get("dataset_name"))
    return files, task_name, metric, leaves


def model_repo(checkpoints: dict[str, Path], token: str | None = None) -> Repo:
    """A model repo with one subfolder per checkpoint, from saved checkpoint folders."""
    files = {f"{sub}/{p.name}": p.read_bytes() for sub, folder in checkpoints.items()
             for p in sorted(folder.iterdir()) if p.is_file()}
    files["README.md"] = b"# stand-in checkpoints\n"
    return Repo(files, token=token)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()
