"""Conformance: what `lm_eval` computes for a task is what `e2lmc ingest` records.

Real task configs shipped with lm-eval 0.4.13 (offline copies in tests/fixtures/
conformance) run through lm-eval's own `simple_evaluate` as the CLI calls it (model `hf`,
batch size 1, its seeds, 100,000 bootstrap resamples) and through `e2lmc ingest` with both
engines, on two checkpoints of the micro demo suite. Every metric and stderr must agree
within TOLERANCE, and every document must get the very same requests (prompts with their
few-shot examples, continuations, generation settings). docs/engine.md shows the table.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from e2lmc import results as R
from e2lmc.ingestion import validate
from e2lmc.ingestion.run import ingest
from e2lmc.ingestion.taskproc import TaskProcess
from e2lmc.manifest import Manifest, load_manifest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "conformance"))
import stock_tasks  # noqa: E402

pytestmark = pytest.mark.slow

ENGINES = ("hf", "fast")
TOLERANCE = {"hf": 1e-6, "fast": 1e-4}  # relative, per metric and stderr
CHECKPOINTS = (("dense-s-arch1", "iter_0000192"), ("dense-m-arch1", "iter_0000160"))


@pytest.fixture(scope="module")
def grid(micro_suite, tmp_path_factory) -> Path:
    """Two trained checkpoints of the micro demo suite (a folder with manifest.yaml)."""
    suite = load_manifest(micro_suite)
    models = [replace(suite.model(m), checkpoints=tuple(
        c for c in suite.model(m).checkpoints if c.name == ck)) for m, ck in CHECKPOINTS]
    root = tmp_path_factory.mktemp("conformance_grid")
    Manifest(path=None, models=models, defaults=suite.defaults).write(root / "manifest.yaml")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared CPU, batch-1 forward passes otherwise spend their time
    waiting for each other (several times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=stock_tasks.ALL)
def run(request, grid, one_thread, tmp_path_factory) -> dict[str, Any]:
    """One task through lm-eval (per checkpoint) and through `e2lmc ingest` (per engine)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    sub = stock_tasks.task_folder(name, root / "task")
    manifest = load_manifest(grid)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "MIN_DOCS", stock_tasks.min_docs(name))
        reference = {c.key: lm_eval_run(sub, c.load_target()[0], mp)
                     for c in manifest.checkpoints}
        prepared: list[dict] = []
        real = TaskProcess._check_prepared
        mp.setattr(TaskProcess, "_check_prepared",
                   lambda self, reply: prepared.append(reply) or real(self, reply))
        rows = {}
        for engine in ENGINES:
            doc = ingest(sub.folder, grid, root / engine, engine=engine, log=lambda line: None)
            assert doc["status"] == "ok", doc["error"]
            rows[engine] = {r.key: r for r in R.read_results(root / engine)}
    return {"name": name, "task": sub.task, "metric": sub.metric, "reference": reference,
            "rows": rows, "prepared": prepared[0]}


def lm_eval_run(sub: stock_tasks.Submission, pretrained: str, mp: pytest.MonkeyPatch) -> dict:
    """`lm_eval --model hf --model_args pretrained=... --include_path . --tasks TASK` run
    beside the task's YAMLs (the CLI resolves data files against the working directory)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    mp.chdir(sub.yaml_dir)
    res = simple_evaluate(model="hf", model_args={"pretrained": pretrained}, tasks=[sub.task],
                          task_manager=TaskManager(include_path=str(sub.folder),
                                                   include_defaults=False),
                          batch_size=1, device="cpu", log_samples=True)
    top = res["results"].get(sub.task) or res.get("groups", {}).get(sub.task)
    return {"metrics": {k: float(v) for k, v in top.items() if "," in k and _finite(v)},
            "samples": res["samples"]}


def _finite(v: Any) -> bool:
    return not isinstance(v, (bool, str)) and hasattr(v, "__float__") and math.isfinite(v)


def deviation(a: float, b: float) -> float:
    """Relative difference (0 when equal, including both 0)."""
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def deviations(run: dict, engine: str) -> dict[str, float]:
    """Per results key, the largest relative deviation from lm-eval over the checkpoints."""
    out: dict[str, float] = {}
    for key, ref in run["reference"].items():
        row = run["rows"][engine][key]
        assert row.status == "ok", row.error
        got = {k: v for k, v in row.metrics.items() if "," in k and v is not None}
        assert set(got) == set(ref["metrics"]), f"{engine} {key}: results keys differ"
        for k, v in ref["metrics"].items():
            out[k] = max(out.get(k, 0.0), deviation(v, got[k]))
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_metrics_equal_lm_eval(run, engine):
    devs = deviations(run, engine)
    values = [f"{ref['metrics'][run['metric']]:.4g}" for ref in run["reference"].values()]
    print(f"\n{run['name']} {engine} ({run['metric']} = {', '.join(values)}): "
          + ", ".join(f"{k} {d:.1e}" for k, d in devs.items()))
    assert run["metric"] in devs
    bad = {k: d for k, d in devs.items() if d > TOLERANCE[engine]}
    assert not bad, f"{run['name']} through the {engine} engine: {bad}"


def test_same_requests_per_document(run):
    """Each document's requests (few-shot prompt, continuation or generation settings) are
    the ones `lm_eval` sends for it, for every task of a group."""
    prepared = run["prepared"]
    mine = {(task, doc): sorted(_args(prepared["requests"][i][1]) for i in idx)
            for task, docs in prepared["documents"].items() for doc, idx in docs}
    for ref in run["reference"].values():
        theirs = {}
        for task, samples in ref["samples"].items():
            for s in samples:
                theirs[(task, s["doc_id"])] = sorted(_args(a) for a in s["arguments"])
        assert mine == theirs


def _args(args: Any) -> str:
    return json.dumps(list(args), sort_keys=True, default=str)
