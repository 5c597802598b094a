"""Task-process cost with and without compiling each Jinja template once.

lm-eval recompiles a task's templates for every document it renders; the task process
memoises the compile step (same environment, same output). This measures, in one run on
one machine, loading + building the requests + items + one checkpoint's metrics for a
multiple-choice task of N documents, both ways, and checks that the outputs are equal.

    python benchmarks/ingest_prepare.py [--docs 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

TASK = """task: bench_mc
dataset_path: json
dataset_kwargs: {data_files: {test: data/test.jsonl, dev: data/dev.jsonl}}
test_split: test
fewshot_split: dev
num_fewshot: 3
fewshot_config: {sampler: first_n}
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list: [{metric: acc}, {metric: acc_norm}]
"""


def write_task(root: Path, n: int) -> None:
    rng = random.Random(0)
    (root / "data").mkdir(parents=True)
    (root / "bench_mc.yaml").write_text(TASK)
    for split, count in (("test", n), ("dev", 5)):
        with open(root / "data" / f"{split}.jsonl", "w") as fh:
            for i in range(count):
                fh.write(json.dumps({"question": f"What is item {i} of {split}?",
                                     "choices": [f"answer {rng.randrange(99)}" for _ in range(4)],
                                     "answer": rng.randrange(4)}) + "\n")


def run(root: Path, cached: bool) -> tuple[float, dict]:
    from e2lmc.ingestion import child

    original = child._cache_templates
    if not cached:
        child._cache_templates = lambda: None  # measure lm-eval's own behaviour
    t = time.perf_counter()
    try:
        session = child.Session({"tasks_dir": str(root), "task_name": "bench_mc"})
    finally:
        child._cache_templates = original
    prep = session.prepare()
    answers = [[-1.0 - (i % 5), False] for i in range(len(prep["requests"]))]
    metrics = session.score(answers)
    return time.perf_counter() - t, {"requests": prep["requests"], "items": prep["items"],
                                     "metrics": metrics}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=3000)
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "task"
        write_task(root, args.docs)
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "cache")
        # the uncached run goes first: the cache patches lm-eval for the rest of the process
        base_s, base = run(root, cached=False)
        fast_s, fast = run(root, cached=True)
    assert base == fast, "memoised templates changed the output"
    print(f"documents: {args.docs}")
    print(f"lm-eval templates (baseline): {base_s:8.2f} s")
    print(f"compiled once (task process): {fast_s:8.2f} s")
    print(f"speed-up: {base_s / fast_s:.1f}x (identical requests, items and metrics)")


if __name__ == "__main__":
    main()
