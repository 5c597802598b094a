"""The manifest loader: valid files load, user mistakes give one clear error."""

from pathlib import Path

import pytest

from e2lmc.errors import UserError
from e2lmc.manifest import load_manifest

GOOD = """
version: 1
defaults: {device: cpu}
models:
  - name: m1
    source: hf://org/m1
    size: 1b
    arch: arch1
    data: science
    checkpoints:
      - {name: iter_0002000, subfolder: iter_0002000, tokens_b: 2.1, stage: public}
      - {name: iter_0004000, subfolder: iter_0004000, tokens_b: 4.2, stage: hidden}
  - name: local
    source: weights/local
    data: web
    checkpoints:
      - {name: c1, subfolder: c1, tokens_b: 1}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "manifest.yaml").write_text(text)
    return tmp_path


def test_loads_hub_and_local_sources(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    hub, hidden, local = m.checkpoints
    assert hub.load_target() == ("org/m1", "iter_0002000")
    assert hidden.stage == "hidden"
    assert local.load_target() == (str((tmp_path / "weights/local/c1").resolve()), None)
    assert m.defaults.device == "cpu" and m.defaults.max_length == 2048
    # the lm_eval CLI's batch size and bootstrap resamples
    assert (m.defaults.hf_batch_size, m.defaults.bootstrap_iters) == (1, 100_000)


def test_round_trip(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    out = tmp_path / "copy" / "manifest.yaml"
    m.write(out)
    again = load_manifest(out)
    assert [c.load_target() for c in again.checkpoints] == [c.load_target() for c in m.checkpoints]


@pytest.mark.parametrize("bad, needle", [
    ("models: []", "non-empty"),
    ("models: [{name: a, checkpoints: [{name: c, tokens_b: 1}]}]", "source"),
    ("models: [{name: a, source: x, checkpoints: [{name: c}]}]", "tokens_b"),
    ("models: [{name: a, source: x, checkpoints: [{name: c, tokens_b: 1, stage: secret}]}]",
     "stage"),
    ("models: [{name: a, source: x, checkpoints: [{name: c, tokens_b: 2}, {name: d, tokens_b: 1}]}]",
     "training order"),
    ("models: [: bad", "YAML"),
    ("defaults: {gpu: 1}\nmodels: []", "unknown keys"),
    ("defaults: {hf_batch_size: 0}\nmodels: []", "hf_batch_size must be a whole number >= 1"),
    ("defaults: {bootstrap_iters: 1.5}\nmodels: []", "bootstrap_iters must be a whole number"),
])
def test_errors_name_file_and_fix(tmp_path, bad, needle):
    write(tmp_path, bad)
    with pytest.raises(UserError) as err:
        load_manifest(tmp_path)
    assert needle in str(err.value) and "manifest.yaml" in str(err.value)
