"""`e2lmc stage`: hub checkpoints downloaded once into the worker's data folder, verified,
resumable; ingestion uses them and refuses hub checkpoints that were not staged.

The hub is a loopback stand-in (tests/hubstub.py) serving tiny random checkpoints.
"""

from __future__ import annotations

import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from e2lmc import stage as S
from e2lmc.cli import main
from e2lmc.errors import UserError
from e2lmc.manifest import load_manifest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402
import hubdata  # noqa: E402
from hubstub import Repo, StubHub, go_online  # noqa: E402

ORGANIZER_TOKEN = "hf_OrganizerSecretToken0123456789"
SUBS = ("iter_0001000", "iter_0002000")


@pytest.fixture(scope="module")
def model_hub(tmp_path_factory):
    """Two tiny checkpoints as one hub repo with a subfolder each (as tiiuae's repos);
    the first also holds an older weight format that staging skips."""
    from e2lmc.suite.tiny import make_tiny_grid

    grid = make_tiny_grid(tmp_path_factory.mktemp("grid"), n_models=1, n_checkpoints=2,
                          n_hidden=0)
    ck = grid.models[0].checkpoints
    repo = hubdata.model_repo({c.subfolder: Path(c.source) / c.subfolder for c in ck})
    repo.files["iter_0001000/pytorch_model.bin"] = b"an older copy of the same weights"
    hub = StubHub()
    hub.add("model", "tiiuae/dense-tiny", repo)
    hub.add("model", "tiiuae/private-tiny", Repo(dict(repo.files), token=ORGANIZER_TOKEN))
    yield hub, grid
    hub.stop()


@pytest.fixture
def hub(model_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return go_online(monkeypatch, model_hub[0])


def hub_manifest(folder: Path, repo: str = "tiiuae/dense-tiny", download: bool = False,
                 local: Path | None = None, subs: tuple[str, ...] = SUBS) -> Path:
    """A manifest with one hub model (and a local one when given)."""
    models = [{"name": "tiny-hub", "source": f"hf://{repo}", "size": "tiny", "arch": "arch1",
               "checkpoints": [{"name": s, "subfolder": s, "tokens_b": 0.001 * (i + 1)}
                               for i, s in enumerate(subs)]}]
    if local is not None:
        models.append({"name": "tiny-local", "source": str(local), "size": "tiny",
                       "arch": "arch2", "checkpoints": [{"name": "iter_0001000",
                                                         "subfolder": "iter_0001000",
                                                         "tokens_b": 0.001}]})
    doc = {"version": 1, "defaults": {"device": "cpu", "dtype": "float32",
                                      "download": download}, "models": models}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(doc))
    return folder / "manifest.yaml"


def test_stage_verifies_records_and_writes_the_worker_manifest(hub, model_hub, tmp_path,
                                                                capsys):
    grid = model_hub[1]
    local = Path(grid.models[0].checkpoints[0].source)
    man = hub_manifest(tmp_path / "in", local=local)
    data, out = tmp_path / "data", tmp_path / "staged.yaml"
    S.stage(man, data, output=out)
    root = data / "hf" / "tiiuae" / "dense-tiny"
    for sub in SUBS:
        src = local / sub
        for f in src.iterdir():
            assert (root / sub / f.name).read_bytes() == f.read_bytes()
    assert not (root / "iter_0001000" / "pytorch_model.bin").exists()  # safetensors win
    assert not (root / "README.md").exists()  # only what from_pretrained reads
    record = S._read_record(root)
    assert record["complete"] == list(SUBS) and record["commit"] == hub.repos[
        ("model", "tiiuae/dense-tiny")].sha
    assert "staging" in capsys.readouterr().err  # the progress bar
    doc = yaml.safe_load(out.read_text())
    assert doc["models"][0]["source"] == "/app/data/hf/tiiuae/dense-tiny"
    assert doc["models"][1]["source"] == str(local)  # local checkpoints untouched
    staged = load_manifest(out, data_dir=data)
    assert staged.checkpoints[0].load_target() == (str(root / SUBS[0]), None)


def test_a_rerun_skips_verified_files_and_repairs_damaged_ones(hub, tmp_path):
    man = hub_manifest(tmp_path / "in")
    data = tmp_path / "data"
    S.stage(man, data)
    hub.reset_hits()
    S.stage(man, data)
    assert hub.downloads() == []  # one metadata query, no file transfer
    root = data / "hf" / "tiiuae" / "dense-tiny"
    (root / "iter_0002000" / "model.safetensors").write_bytes(b"cut short")
    (root / "iter_0001000" / "config.json").unlink()
    hub.reset_hits()
    S.stage(man, data)
    assert sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in hub.downloads()) \
        == ["iter_0001000/config.json", "iter_0002000/model.safetensors"]
    assert S._read_record(root)["complete"] == list(SUBS)


def test_free_disk_is_checked_before_any_download(hub, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(S.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 10**6))
    with pytest.raises(UserError, match=r"staging needs 0\.0 GB more .* only 0\.0 GB are free"):
        S.stage(hub_manifest(tmp_path / "in"), tmp_path / "data")
    assert hub.downloads() == [] and not (tmp_path / "data").exists()


def test_private_repo_with_the_organizers_token_never_written(hub, tmp_path, monkeypatch):
    man = hub_manifest(tmp_path / "in", repo="tiiuae/private-tiny")
    with pytest.raises(UserError, match="hub repo tiiuae/private-tiny was not found, or the "
                                        "token given cannot read it; .* HF_TOKEN"):
        S.stage(man, tmp_path / "data")
    monkeypatch.setenv("HF_TOKEN", ORGANIZER_TOKEN)
    S.stage(man, tmp_path / "data", output=tmp_path / "staged.yaml")
    assert S._read_record(tmp_path / "data" / "hf" / "tiiuae" / "private-tiny")["complete"]
    for p in [*tmp_path.rglob("*")]:
        assert not p.is_file() or ORGANIZER_TOKEN.encode() not in p.read_bytes(), p


def test_a_damaged_transfer_is_refused(hub, tmp_path):
    repo = hub.repos[("model", "tiiuae/dense-tiny")]
    repo.corrupt.add("iter_0002000/config.json")
    try:
        with pytest.raises(UserError, match="iter_0002000/config.json does not match the size "
                                            "and hash the hub lists"):
            S.stage(hub_manifest(tmp_path / "in"), tmp_path / "data")
    finally:
        repo.corrupt.clear()
    root = tmp_path / "data" / "hf" / "tiiuae" / "dense-tiny"
    assert not (root / "iter_0002000" / "config.json").exists()
    assert S._read_record(root)["complete"] == []


def test_ingestion_policy_for_hub_checkpoints(hub, tmp_path):
    """Hub checkpoints load from their staged copy; without one the run stops with a
    message naming `e2lmc stage`, unless the manifest allows downloads."""
    data = tmp_path / "data"
    man = hub_manifest(tmp_path / "in")
    with pytest.raises(UserError, match=r"manifest.yaml: 2 hub checkpoint\(s\) have no staged "
                                        r"copy .* `e2lmc stage .*manifest.yaml --data"):
        S.use_staged(load_manifest(man), data)
    allowed = load_manifest(hub_manifest(tmp_path / "dl", download=True))
    assert S.use_staged(allowed, data).checkpoints[0].source == "hf://tiiuae/dense-tiny"
    S.stage(man, data)
    (ck, _) = S.use_staged(load_manifest(man), data).checkpoints
    assert ck.load_target() == (str(data / "hf" / "tiiuae" / "dense-tiny" / SUBS[0]), None)


def test_download_policy_is_explicit(tmp_path):
    """`download` must be a boolean (a string such as "no" would read as true); the
    starting kit's manifest of public checkpoints downloads them on the participant's
    machine."""
    from e2lmc import kit

    man = hub_manifest(tmp_path)
    man.write_text(man.read_text().replace("download: false", "download: 'no'"))
    with pytest.raises(UserError, match="defaults.download must be true or false"):
        load_manifest(man)
    real = kit.real_manifest(models=["dense-500m-arch1"], iterations=[4000])
    assert S.use_staged(real, None).checkpoints[0].is_hub
    competition = load_manifest(Path(__file__).resolve().parents[1] / "input_data" / "e2lm")
    assert not competition.defaults.download and not competition.defaults.allow_network


def test_cli(hub, tmp_path, capsys):
    man = hub_manifest(tmp_path / "in")
    assert main(["stage", str(man), "--data", str(tmp_path / "data"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 checkpoints in 1 hub repos" in printed and "tiiuae/dense-tiny@" in printed
    assert hub.downloads() == [] and not (tmp_path / "data").exists()
    bad = hub_manifest(tmp_path / "bad", repo="tiiuae/absent")
    assert main(["stage", str(bad), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tiiuae/absent was not found" in err


@pytest.mark.slow
def test_ingest_uses_the_staged_copies(hub, tmp_path):
    from e2lmc.ingestion.run import ingest

    data = tmp_path / "data"
    man = hub_manifest(tmp_path / "in", subs=SUBS[:1])
    doc = ingest(build.SCI_CLOZE, man.parent, tmp_path / "out0", engine="hf", data_dir=data)
    assert doc["status"] == "failed" and "e2lmc stage" in doc["error"]
    S.stage(man, data)
    hub.reset_hits()
    doc = ingest(build.SCI_CLOZE, man.parent, tmp_path / "out", engine="hf", data_dir=data)
    assert doc["status"] == "ok", doc["error"]
    assert doc["checkpoints"]["ok"] == 1 and not hub.hits  # nothing fetched per submission
    shutil.rmtree(data)
