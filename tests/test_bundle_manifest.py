"""The real competition manifest: generated, loadable, token counts as published."""

from __future__ import annotations

import json

import yaml

from e2lmc.bundle.competition_manifest import (competition_manifest, render,
                                               tokens_b_at_iteration)
from e2lmc.bundle.layout import default_root
from e2lmc.manifest import load_manifest

MANIFEST = default_root() / "input_data" / "e2lm" / "manifest.yaml"


def test_committed_manifest_is_the_generated_one():
    assert yaml.safe_load(MANIFEST.read_text()) == yaml.safe_load(render())


def test_tokens_match_the_published_curves(public_curves):
    data = json.loads(public_curves.read_text())["data"]
    for curves in data.values():
        for it, gtokens in zip(curves["iteration"], curves["gtokens"]):
            assert abs(tokens_b_at_iteration(it) - gtokens) < 1e-9


def test_manifest_loads_with_the_expected_grid(tmp_path):
    m = load_manifest(MANIFEST, data_dir=tmp_path)
    science = [x for x in m.models if x.data == "science"]
    assert sorted(x.name for x in science) == sorted(
        f"dense-{s}-{a}" for s in ("500m", "1b", "3b") for a in ("arch1", "arch2"))
    for model in science:
        public = [c for c in model.checkpoints if c.stage == "public"]
        hidden = [c for c in model.checkpoints if c.stage == "hidden"]
        assert [c.subfolder for c in public] == [f"iter_{i:07d}" for i in range(2000, 54001, 2000)]
        assert all(c.is_hub and c.source == f"hf://tiiuae/{model.name}" for c in public)
        assert abs(public[-1].tokens_b - 197.60353) < 1e-5
        assert hidden and all(not c.is_hub for c in hidden)
        assert all(c.source.startswith(str(tmp_path)) for c in hidden)  # /app/data staged
        assert hidden[0].tokens_b > 200 and hidden[-1].tokens_b > 900
    web = [x for x in m.models if x.data == "web"]
    assert len(web) == 1 and web[0].size == "500m" and not web[0].checkpoints[0].is_hub
    assert all(c.stage == "hidden" for c in web[0].checkpoints)
    assert m.defaults.max_length == 2048 and m.defaults.dtype == "bfloat16"


def test_document_is_deterministic():
    assert competition_manifest() == competition_manifest()
