"""`e2lmc bundle build`: contents of the upload zip, the judge key, atomic failure."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import TEST_QUEUE, make_standin_bundle
from e2lmc.bundle.build import build_bundle
from e2lmc.bundle.check import check_bundle
from e2lmc.bundle.layout import judge_key_name
from e2lmc.cli import main
from e2lmc.errors import UserError
from e2lmc.signing import KEY_NAME


pytestmark = pytest.mark.usefixtures("bundle_package")


@pytest.fixture
def source(tmp_path) -> Path:
    src = make_standin_bundle(tmp_path / "src")
    # A key left in the checkout by mistake must never ship.
    ref = src / "reference_data" / "e2lm"
    (ref / judge_key_name(ref)).write_text("sk-from-the-repo\n")
    (src / "scoring_program" / "__pycache__").mkdir()
    (src / "scoring_program" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    return src


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_build_layout(tmp_path, source):
    out = build_bundle(tmp_path / "dist" / "bundle.zip", root=source)
    files = names(out)
    assert "competition.yaml" in files and "logo.png" in files
    for page in ("overview", "data", "evaluation", "submission", "terms"):
        assert f"pages/{page}.md" in files
    for program in ("ingestion_program", "scoring_program"):
        assert f"{program}/metadata.yaml" in files
        assert f"{program}/e2lmc/__init__.py" in files
        assert f"{program}/e2lmc/bundle/worker.py" in files
    assert "input_data/e2lm/manifest.yaml" in files
    assert "reference_data/e2lm/scoring.yaml" in files
    assert "starting_kit/example_submissions/mmlu_var.zip" in files  # the example solution
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    key_name = judge_key_name(source / "reference_data" / "e2lm")
    assert not [f for f in files if f.endswith(f"/{key_name}")]
    assert check_bundle(out) == []
    assert not list(out.parent.glob("*.tmp"))


def test_judge_key_comes_from_the_organizer_file_only(tmp_path, source):
    key = tmp_path / "judge.key"
    key.write_text("sk-organizer\n")
    out = build_bundle(tmp_path / "b.zip", root=source, judge_key_file=key)
    entry = f"reference_data/e2lm/{judge_key_name(source / 'reference_data' / 'e2lm')}"
    with zipfile.ZipFile(out) as zf:
        assert zf.read(entry).decode().strip() == "sk-organizer"
        mode = (zf.getinfo(entry).external_attr >> 16) & 0o777
    assert mode == 0o600


def test_judge_key_name_follows_scoring_yaml(tmp_path, source):
    (source / "reference_data" / "e2lm" / "scoring.yaml").write_text(
        "judge:\n  api_key_file: openai.key\n")
    key = tmp_path / "k"
    key.write_text("sk-1")
    out = build_bundle(tmp_path / "b.zip", root=source, judge_key_file=key)
    assert "reference_data/e2lm/openai.key" in names(out)


def test_empty_key_file_is_a_user_error(tmp_path, source):
    key = tmp_path / "k"
    key.write_text("\n")
    with pytest.raises(UserError, match="judge key file is empty"):
        build_bundle(tmp_path / "b.zip", root=source, judge_key_file=key)
    assert not (tmp_path / "b.zip").exists()


def test_build_is_deterministic_but_for_the_signing_key(tmp_path, source):
    def contents(path: Path) -> dict[str, tuple]:
        with zipfile.ZipFile(path) as zf:
            return {i.filename: (zf.read(i), (i.date_time, i.external_attr))
                    for i in zf.infolist() if not i.filename.endswith(KEY_NAME)}

    a = contents(build_bundle(tmp_path / "a.zip", root=source))
    b = contents(build_bundle(tmp_path / "b.zip", root=source))
    assert a == b  # tests/test_signing.py: the key is fresh in each build


def test_broken_source_writes_nothing(tmp_path, source):
    doc = yaml.safe_load((source / "competition.yaml").read_text())
    doc["leaderboards"][0]["submission_rule"] = "Add"
    (source / "competition.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="submission_rule"):
        build_bundle(tmp_path / "b.zip", root=source)
    assert not list(tmp_path.glob("*.zip"))


def test_missing_referenced_path_is_a_user_error(tmp_path, source):
    (source / "pages" / "data.md").unlink()
    with pytest.raises(UserError, match="pages/data.md"):
        build_bundle(tmp_path / "b.zip", root=source)


def test_starting_kit_is_attached_to_every_phase(tmp_path, source):
    kit = source / "starting_kit"
    kit.mkdir(exist_ok=True)
    (kit / "README.md").write_text("kit")
    out = build_bundle(tmp_path / "b.zip", root=source)
    with zipfile.ZipFile(out) as zf:
        doc = yaml.safe_load(zf.read("competition.yaml"))
        assert "starting_kit/README.md" in zf.namelist()
    assert all(p["starting_kit"] == "starting_kit/" for p in doc["phases"])


def test_cli_build(tmp_path, source, capsys):
    out = tmp_path / "cli.zip"
    assert main(["bundle", "build", "--root", str(source), "--output", str(out)]) == 0
    assert out.is_file() and "without a judge key" in capsys.readouterr().out


def test_queue_and_a_missing_time_budget_are_written_into_the_bundle(tmp_path, capsys):
    """The checkout's placeholder queue fails the build until the organizer names the GPU
    queue; a manifest without a budget gets the one that fits the phases' 12-hour limit."""
    src = make_standin_bundle(tmp_path / "src", queue=None)
    manifest = src / "input_data" / "e2lm" / "manifest.yaml"
    doc = yaml.safe_load(manifest.read_text())
    del doc["defaults"]["time_budget_s"]
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(UserError, match="still the placeholder"):
        build_bundle(tmp_path / "a.zip", root=src)
    out = tmp_path / "b.zip"
    assert main(["bundle", "build", "--root", str(src), "--output", str(out),
                 "--queue", TEST_QUEUE]) == 0
    with zipfile.ZipFile(out) as zf:
        assert yaml.safe_load(zf.read("competition.yaml"))["queue"] == TEST_QUEUE
        built = yaml.safe_load(zf.read("input_data/e2lm/manifest.yaml"))
    assert built["defaults"]["time_budget_s"] == 43200 - 2160
    assert len(built["models"]) == len(doc["models"])
    capsys.readouterr()
    assert main(["bundle", "check", str(out)]) == 0
