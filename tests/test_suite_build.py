"""The demo suite: layout, cache, determinism, and curves that behave for real reasons."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from e2lmc.manifest import load_manifest
from e2lmc.scoring.config import load_config
from e2lmc.suite import build as suite_build
from e2lmc.suite.build import build_suite, cache_root, suite_config, token_stream
from e2lmc.suite.examples import science_docs, web_docs
from e2lmc.suite.training import count_params, train_model
from e2lmc.suite.world import micro_world

sys.path.insert(0, str(Path(__file__).parent))
from suite_eval import cloze_accuracy  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_config_shapes_and_schedule():
    for micro in (False, True):
        cfg = suite_config(micro=micro)
        sizes = {}
        for spec in cfg.models:
            sizes.setdefault((spec.size, spec.data), {})[spec.arch] = \
                count_params(spec, cfg.vocab_size)
            assert spec.hidden % spec.heads == 0
        for size in "sml":
            a1, a2 = sizes[(size, "science")]["arch1"], sizes[(size, "science")]["arch2"]
            assert abs(a1 - a2) / a1 < 0.15, f"{size}: arch1 {a1} vs arch2 {a2}"
        deep = {s.size: s.layers for s in cfg.models if s.arch == "arch1"}
        wide = {s.size: s.layers for s in cfg.models if s.arch == "arch2"}
        assert all(deep[s] > wide[s] for s in wide)
        assert sizes[("s", "science")]["arch1"] < sizes[("m", "science")]["arch1"] < \
            sizes[("l", "science")]["arch1"]
        assert sizes[("s", "web")]["arch1"] == sizes[("s", "science")]["arch1"]
        assert max(cfg.public_steps) < min(cfg.hidden_steps)
    full = suite_config()
    assert len(full.public_steps) >= 8 and len(full.hidden_steps) >= 3
    assert suite_config(seed=1).key() != suite_config(seed=2).key()
    assert suite_config(micro=True).key() != full.key()


def test_cache_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("E2LMC_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "suite"
    assert cache_root(tmp_path / "x") == tmp_path / "x"


def test_packaged_scoring_matches_the_full_suite():
    cfg = load_config(suite_build.DEMO_SCORING)
    assert cfg.rc.reference_tokens_b == pytest.approx(suite_config().boundary_tokens_b)
    assert cfg.judge.mode == "off" and cfg.leakage.mode == "gate"
    assert cfg.sq.models.arch == "arch1" and cfg.sq.checkpoints.stage == "public"


def test_manifest_layout(micro_suite):
    man = load_manifest(micro_suite)
    cfg = suite_config(micro=True)
    assert [m.name for m in man.models] == [s.name for s in cfg.models]
    assert {m.name for m in man.models} >= {"dense-s-arch1", "dense-l-arch2",
                                            "dense-s-arch1-web"}
    raw = yaml.safe_load(micro_suite.read_text())
    for m, rm in zip(man.models, raw["models"]):
        assert not Path(rm["source"]).is_absolute()  # relocatable
        assert m.params and m.size in "sml" and m.arch in ("arch1", "arch2")
        assert [c.stage for c in m.checkpoints] == \
            ["public"] * len(cfg.public_steps) + ["hidden"] * len(cfg.hidden_steps)
        for c in m.checkpoints:
            path = Path(c.load_target()[0])
            assert path.name == c.name and c.name == f"iter_{c.iteration:07d}"
            for f in ("config.json", "model.safetensors", "tokenizer.json"):
                assert (path / f).is_file(), path / f
    assert [m.data for m in man.models].count("web") == 1
    suite = micro_suite.parent
    assert (suite / "tokenizer" / "tokenizer.json").is_file()
    scoring = load_config(suite)
    last_public = man.models[0].checkpoints[len(cfg.public_steps) - 1].tokens_b
    assert scoring.rc.reference_tokens_b == pytest.approx(last_public)
    assert not list(suite.parent.glob(".*tmp*")), "temporary build folder left behind"


def test_cached_build_is_reused(micro_suite):
    root = micro_suite.parent.parent
    stamp = micro_suite.stat().st_mtime_ns
    t0 = time.time()
    assert build_suite(root=root, micro=True, progress=False) == micro_suite
    assert time.time() - t0 < 5
    assert micro_suite.stat().st_mtime_ns == stamp


def test_cli_prints_the_manifest_path_last(micro_suite, capsys):
    from e2lmc.cli import main

    assert main(["suite", "build", "--micro", "--dir", str(micro_suite.parent.parent)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(micro_suite)


def test_interrupted_build_leaves_nothing_that_looks_cached(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("e2lmc.suite.parallel.train_all", boom)
    with pytest.raises(KeyboardInterrupt):
        build_suite(root=tmp_path, micro=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_same_seed_gives_identical_weights(micro_suite, tmp_path):
    """Retrain one model of the suite from scratch: every checkpoint is bit-identical."""
    from e2lmc.suite.parallel import model_seed
    from e2lmc.suite.tokenizer import train_tokenizer

    cfg = suite_config(micro=True)
    suite = micro_suite.parent
    tok = train_tokenizer(tmp_path / "tok", micro_world(), cfg.seed, cfg.vocab_size)
    assert _sha(tmp_path / "tok" / "tokenizer.json") == _sha(suite / "tokenizer" /
                                                             "tokenizer.json")
    index = [s.name for s in cfg.models].index("dense-s-arch1-web")
    spec = cfg.models[index]
    need = cfg.train.steps * cfg.train.batch * (cfg.train.seq_len + 1)
    stream = token_stream(micro_world(), spec.data, cfg.seed, tok, need)
    train_model(spec, cfg.train, stream, tmp_path / "tok", tmp_path / spec.name,
                seed=model_seed(cfg.seed, index))
    for step in cfg.train.checkpoints:
        name = f"iter_{step:07d}"
        assert _sha(tmp_path / spec.name / name / "model.safetensors") == \
            _sha(suite / spec.name / name / "model.safetensors"), name
    # and another seed gives other weights
    short = type(cfg.train)(**{**cfg.train.__dict__, "steps": 5, "checkpoints": (5,)})
    train_model(spec, short, stream, tmp_path / "tok", tmp_path / "other",
                seed=model_seed(cfg.seed + 1, index))
    train_model(spec, short, stream, tmp_path / "tok", tmp_path / "same",
                seed=model_seed(cfg.seed, index))
    assert _sha(tmp_path / "other" / "iter_0000005" / "model.safetensors") != \
        _sha(tmp_path / "same" / "iter_0000005" / "model.safetensors")


def test_token_stream_is_deterministic_and_mixed():
    from e2lmc.suite.tiny import make_tokenizer

    from e2lmc.suite.corpora import documents
    import itertools
    import tempfile

    world = micro_world()
    with tempfile.TemporaryDirectory() as d:
        texts = list(itertools.islice(documents(world, "science", 0), 300))
        tok = make_tokenizer(d, texts, vocab_size=400)
        a = token_stream(world, "science", 3, tok, 5000)
        b = token_stream(world, "science", 3, tok, 5000)
        c = token_stream(world, "science", 4, tok, 5000)
    assert a.dtype == np.uint16 and len(a) == 5000
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.fixture(scope="module")
def science_curves(micro_suite):
    """Cloze accuracy on example (a)'s questions about the micro world, per checkpoint."""
    man = load_manifest(micro_suite)
    docs = science_docs(micro_world(), n=None)
    return {m.name: {c.name: cloze_accuracy(c.load_target()[0], docs) for c in m.checkpoints}
            for m in man.models}, man


def test_science_models_learn_the_facts(science_curves):
    curves, man = science_curves
    for m in man.models:
        if m.data == "science":
            first, last = (curves[m.name][c.name] for c in (m.checkpoints[0], m.checkpoints[-1]))
            assert last - first >= 0.08, f"{m.name}: {first:.2f} -> {last:.2f}"


def test_science_model_ends_far_ahead_of_the_web_model(science_curves):
    curves, man = science_curves
    sci, web = man.model("dense-s-arch1"), man.model("dense-s-arch1-web")
    for c_sci, c_web in zip(sci.checkpoints, web.checkpoints):  # never clearly behind
        assert curves[sci.name][c_sci.name] > curves[web.name][c_web.name] - 0.02
    last = sci.checkpoints[-1].name
    assert curves[sci.name][last] > curves[web.name][last] + 0.2


def test_science_signal_rises_during_the_public_checkpoints(science_curves):
    curves, man = science_curves
    for m in man.models:
        public = [c.name for c in m.checkpoints if c.stage == "public"]
        first, last = curves[m.name][public[0]], curves[m.name][public[-1]]
        if m.data == "science":
            assert last - first >= 0.08, f"{m.name}: {first:.2f} -> {last:.2f}"
        else:  # the web model never sees the facts: it stays near its first value
            assert abs(last - first) < 0.08, f"{m.name}: {first:.2f} -> {last:.2f}"


def test_bigger_models_lead_at_the_hidden_checkpoints(science_curves):
    """Mean accuracy of the two shapes of each size, at each hidden checkpoint."""
    curves, man = science_curves
    hidden = [c.name for c in man.models[0].checkpoints if c.stage == "hidden"]
    for name in hidden:
        by_size = {size: np.mean([curves[f"dense-{size}-{a}"][name] for a in ("arch1", "arch2")])
                   for size in "sml"}
        assert by_size["l"] > by_size["s"] + 0.1, (name, by_size)
        assert by_size["m"] > by_size["s"] + 0.03, (name, by_size)
    assert by_size["l"] > by_size["m"], (name, by_size)  # at the last hidden checkpoint
