"""scoring.yaml: defaults, the shipped configs, and clear errors for typos."""

from pathlib import Path

import pytest

from e2lmc.errors import UserError
from e2lmc.scoring.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_when_empty(tmp_path):
    (tmp_path / "scoring.yaml").write_text("")
    cfg = load_config(tmp_path)
    w = cfg.weights
    assert (w.signal_quality, w.ranking_consistency, w.scientific_compliance) == (0.5, 0.1, 0.4)
    assert cfg.sq.models.arch == "arch1" and cfg.sq.models.data == "science"


def test_bare_off_is_the_string_off(tmp_path):
    (tmp_path / "scoring.yaml").write_text("judge: {mode: off}\nleakage: {mode: report}\n")
    assert load_config(tmp_path).judge.mode == "off"


def test_model_list_shorthand(tmp_path):
    (tmp_path / "scoring.yaml").write_text("sq: {models: [a, b]}\n")
    assert load_config(tmp_path).sq.models.names == ["a", "b"]


@pytest.mark.parametrize("text, needle", [
    ("weights: {sq: 1}", "unknown key"),
    ("sq: {short_curve: spline}", "short_curve"),
    ("judge: {mode: maybe}", "judge.mode"),
    ("judge: {samples: many}", "judge.samples"),
    ("weights: {signal_quality: -1}", "weights"),
    ("confidence: {level: 0.2}", "confidence"),
    ("confidence: {replicates: -5}", "confidence"),
    ("sq: [", "not valid YAML"),
])
def test_errors_name_the_file(tmp_path, text, needle):
    (tmp_path / "scoring.yaml").write_text(text)
    with pytest.raises(UserError) as err:
        load_config(tmp_path)
    assert needle in str(err.value) and "scoring.yaml" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path)


def test_shipped_configs_load():
    for path in REPO.glob("reference_data/*/scoring.yaml"):
        load_config(path)
