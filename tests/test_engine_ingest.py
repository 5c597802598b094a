"""Task metrics through `e2lmc ingest` are identical with the fast and the stock engine."""

from __future__ import annotations

import pytest

from e2lmc import results as R
from e2lmc.ingestion.run import ingest
from e2lmc.manifest import Manifest, Model
from e2lmc.suite.examples import EXAMPLES_DIR


@pytest.fixture(scope="module")
def small_grid(tiny_grid, tmp_path_factory):
    """Two checkpoints of two different models of the tiny grid."""
    models = [Model(name=m.name, size=m.size, arch=m.arch, data=m.data, params=m.params,
                    checkpoints=m.checkpoints[:1]) for m in tiny_grid.models[:2]]
    root = tmp_path_factory.mktemp("small_grid")
    Manifest(path=None, models=models, defaults=tiny_grid.defaults).write(root / "manifest.yaml")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("example", ["science_cloze", "web_commonsense"])
def test_fast_engine_metrics_equal_stock(example, small_grid, tmp_path):
    metrics, docs = {}, {}
    for engine in ("fast", "hf"):
        docs[engine] = ingest(EXAMPLES_DIR / example, small_grid, tmp_path / engine,
                              engine=engine, log=lambda *a, **k: None)
        assert docs[engine]["status"] == "ok", docs[engine].get("error")
        metrics[engine] = {r.key: r.metrics for r in R.read_results(tmp_path / engine)}
    assert len(metrics["fast"]) == 2
    assert metrics["fast"] == metrics["hf"]
    counters = docs["fast"]["engine"]["counters"]
    assert counters["tokens_forwarded"] == counters["unique_tokens"] > 0
    assert counters["tokens_requested"] > counters["unique_tokens"]
