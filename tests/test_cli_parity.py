"""The task process computes what `lm_eval` computes: seeds, bootstrapped stderr, documents.

(tests/test_conformance.py runs real tasks through both; these tests pin each mechanism.)
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc.ingestion import cli_parity
from e2lmc.ingestion.run import ingest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

NOISY = Path(__file__).parent / "fixtures" / "cli_parity" / "noisy_ppl"


def lm_eval_bootstrap(f, xs, iters: int) -> float:
    """lm-eval's own `bootstrap_stderr`, serial path (the pool path gives the same)."""
    from lm_eval.api import metrics

    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        return metrics.bootstrap_stderr(f, xs, iters)
    finally:
        del os.environ["DISABLE_MULTIPROC"]


@pytest.mark.parametrize("name,iters", [("perplexity", 5000), ("median", 3000),
                                        ("bleu", 100)])
def test_forked_bootstrap_is_lm_evals_to_the_bit(name, iters):
    """Chunks spread over workers (5 and 3), and one chunk of 100 (bleu's cap) run here."""
    from lm_eval.api import metrics

    rng = random.Random(name)
    xs = {"perplexity": [-5 * rng.random() for _ in range(80)],
          "median": [rng.random() for _ in range(80)],
          "bleu": [([" ".join(rng.sample("abcdefgh", 4))], " ".join(rng.sample("abcdefgh", 4)))
                   for _ in range(20)]}[name]
    f = getattr(metrics, name)
    assert cli_parity.bootstrap_stderr(f, xs, iters) == lm_eval_bootstrap(f, xs, iters)


def test_forked_bootstrap_without_spare_processes_and_with_a_failing_metric(monkeypatch):
    from lm_eval.api import metrics

    xs = [random.Random(1).random() for _ in range(50)]
    expected = lm_eval_bootstrap(metrics.median, xs, 3000)

    def no_fork():
        raise OSError("EAGAIN")

    with monkeypatch.context() as m:
        m.setattr(os, "fork", no_fork)
        assert cli_parity.bootstrap_stderr(metrics.median, xs, 3000) == expected

    def broken(items):
        raise ValueError("metric broke")

    with pytest.raises(RuntimeError, match="ValueError: metric broke"):
        cli_parity.bootstrap_stderr(broken, xs, 3000)


def test_random_state_restores_every_generator():
    import numpy as np
    import torch

    cli_parity.seed_globals()
    state = cli_parity.RandomState()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    state.restore()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


@pytest.fixture(scope="module")
def two_checkpoints(tiny_grid, tmp_path_factory) -> Path:
    return build.subset_manifest(tiny_grid, tmp_path_factory.mktemp("two"), models=1,
                                 checkpoints=2)


@pytest.mark.slow
def test_seeds_and_bootstrapped_stderr_as_the_cli(two_checkpoints, tmp_path, monkeypatch):
    """A task drawing from random, numpy and torch in its metrics, with a bootstrapped
    perplexity: every checkpoint's numbers are the CLI's (its seeds, 100,000 resamples)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from e2lmc.manifest import load_manifest

    doc = ingest(NOISY, two_checkpoints, tmp_path / "out", engine="hf", log=lambda s: None)
    assert doc["status"] == "ok", doc["error"]
    rows = R.read_results(tmp_path / "out")
    assert len(rows) == 2 and all(r.stderr for r in rows)

    manifest = load_manifest(two_checkpoints)
    monkeypatch.chdir(NOISY)  # the CLI resolves data files against the working directory
    for row, ck in zip(rows, manifest.checkpoints):
        res = simple_evaluate(model="hf", model_args={"pretrained": ck.load_target()[0]},
                              tasks=["noisy_ppl"], batch_size=manifest.defaults.hf_batch_size,
                              task_manager=TaskManager(include_path=str(NOISY),
                                                       include_defaults=False),
                              device="cpu")
        cli = {k: float(v) for k, v in res["results"]["noisy_ppl"].items() if "," in k}
        mine = {k: v for k, v in row.metrics.items() if "," in k}
        assert mine == pytest.approx(cli, rel=1e-12)


@pytest.mark.slow
def test_process_docs_drawing_from_the_global_random_is_refused(tiny_grid, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(NOISY, sub)
    utils = sub / "utils.py"
    utils.write_text(utils.read_text().replace("random.Random(0).shuffle", "random.shuffle"))
    man = build.subset_manifest(tiny_grid, tmp_path / "man")
    doc = ingest(sub, man, tmp_path / "out", engine="hf", log=lambda s: None)
    assert doc["status"] == "failed" and doc["error_kind"] == "process_docs_random"
    assert ("task noisy_ppl: process_docs gives different documents on each run; seed your "
            "own random.Random") in doc["error"]


def test_hf_batch_size_reaches_the_stock_engine(tiny_grid, monkeypatch):
    import e2lmc.engine
    from e2lmc.ingestion.run import engine_answers
    from e2lmc.manifest import Defaults

    seen = {}

    def make_lm(engine, checkpoint, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("not loaded")

    monkeypatch.setattr(e2lmc.engine, "make_lm", make_lm)
    out = engine_answers(tiny_grid.checkpoints[0], "cpu", {}, requests=[], engine="hf",
                         defaults=Defaults(hf_batch_size=8))
    assert "not loaded" in out["error"] and seen["hf_batch_size"] == 8


@pytest.mark.slow
def test_manifest_bootstrap_iters_reaches_the_task_process(tiny_grid, tmp_path):
    """bootstrap_iters: 0 is lm-eval's `--bootstrap_iters 0`: no stderr at all."""
    from dataclasses import replace

    from e2lmc.manifest import Manifest

    m = tiny_grid.models[0]
    Manifest(path=None, models=[replace(m, checkpoints=m.checkpoints[:1])],
             defaults=replace(tiny_grid.defaults, bootstrap_iters=0)
             ).write(tmp_path / "grid" / "manifest.yaml")
    doc = ingest(NOISY, tmp_path / "grid", tmp_path / "out", engine="hf", log=lambda s: None)
    assert doc["status"] == "ok", doc["error"]
    (row,) = R.read_results(tmp_path / "out")
    assert row.value and row.stderr is None
    assert not [k for k in row.metrics if "_stderr" in k]
