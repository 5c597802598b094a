"""A leaderboard nobody can forge: each test attempts a forgery and checks that it fails.

Participant code (or a container the platform starts from a submission's own `command`)
may rewrite the ingestion output. Ingestion signs what it writes (e2lmc.signing); scoring
refuses, with exit status 2 and one line naming the file and the cause, whatever it cannot
verify; a re-run never resumes rows it cannot verify; `bundle build` / `check` keep the
key where only the two programs read it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from e2lmc import results as R
from e2lmc import signing
from e2lmc.cli import main
from e2lmc.errors import UserError
from e2lmc.ingestion.run import ingest
from e2lmc.ingestion.submission import load_submission
from e2lmc.manifest import load_manifest
from e2lmc.outcomes import OUTCOMES_FILE, read_outcomes
from e2lmc.scoring.program import LEADERBOARD_KEYS, score

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

SCORING_YAML = "judge: {mode: off}\nleakage: {mode: report}\n"


@pytest.fixture(scope="module", autouse=True)
def user_key(tmp_path_factory) -> Path:
    """The per-user fallback key of this module's runs lives in a temp folder."""
    path = tmp_path_factory.mktemp("config") / "e2lmc" / signing.KEY_NAME
    mp = pytest.MonkeyPatch()
    mp.setenv(signing.KEY_FILE_ENV, str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def one_ckpt(tiny_grid, tmp_path_factory) -> Path:
    return build.subset_manifest(tiny_grid, tmp_path_factory.mktemp("one_ckpt"))


@pytest.fixture(scope="module")
def honest(one_ckpt, tmp_path_factory) -> Path:
    """An honest ingestion output (the input data has no key: the user's key signs it)."""
    out = tmp_path_factory.mktemp("honest") / "res"
    doc = ingest(build.SCI_CLOZE, one_ckpt, out, engine="hf", log=lambda line: None)
    assert doc["status"] == "ok", doc["error"]
    return out


@pytest.fixture
def ref(tmp_path) -> Path:
    folder = tmp_path / "ref"
    folder.mkdir()
    (folder / "scoring.yaml").write_text(SCORING_YAML)
    return folder


@pytest.fixture
def res(honest, tmp_path) -> Path:
    """A copy of the honest output to tamper with."""
    return Path(shutil.copytree(honest, tmp_path / "res"))


def refused(res: Path, ref: Path, tmp_path: Path, capsys, *needles: str) -> str:
    """Score through the CLI: exit status 2, one line naming the cause, no scores."""
    code = main(["score", "--res", str(res), "--ref", str(ref), "--output",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("e2lmc score: error:"), err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out" / "scores.json").exists()
    return err


def rows_of(res: Path) -> list[dict]:
    return list(R.iter_jsonl(res / R.RESULTS_JSONL))


def write_rows(res: Path, rows: list[dict]) -> None:
    (res / R.RESULTS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in rows))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingestion_doc(res: Path) -> dict:
    return json.loads((res / R.INGESTION_JSON).read_text())


# --------------------------------------------------------------------------- honest runs
def test_honest_run_is_signed_and_scores(res, ref, tmp_path, user_key):
    assert stat.S_IMODE(user_key.stat().st_mode) == 0o600  # created on first use
    doc = ingestion_doc(res)
    assert doc["signature"] and doc["outputs"]["rows"] == 1
    assert all(r["signature"] for r in rows_of(res))
    scores = score(res, ref, tmp_path / "out")
    assert tuple(scores) == LEADERBOARD_KEYS
    # the platform's record of a run without a submission program is accepted
    (res / R.PLATFORM_METADATA).write_text(yaml.safe_dump(
        {"exitCode": None, "ingestionExitCode": 0}))
    assert score(res, ref, tmp_path / "out2") == scores


def test_resumed_honest_run_keeps_its_rows(honest, one_ckpt, ref, tmp_path):
    out = Path(shutil.copytree(honest, tmp_path / "again"))
    doc = ingest(build.SCI_CLOZE, one_ckpt, out, engine="hf", log=lambda line: None)
    assert doc["status"] == "ok" and doc["checkpoints"]["resumed"] == 1
    assert rows_of(out) == rows_of(honest)  # the very same row: timing and signature too
    assert score(out, ref, tmp_path / "out") == score(honest, ref, tmp_path / "out0")


# --------------------------------------------------------------------------- forgeries
def _edit_value(res: Path) -> None:
    rows = rows_of(res)
    rows[0]["value"] = rows[0]["metrics"]["acc,none"] = 0.99
    write_rows(res, rows)


def _append_forged_row_to(res: Path, row: dict) -> None:
    with (res / R.RESULTS_JSONL).open("a") as fh:
        fh.write(json.dumps({**row, "checkpoint": "iter_0099000", "tokens_b": 99.0}) + "\n")


def _append_forged_row(res: Path) -> None:
    _append_forged_row_to(res, rows_of(res)[0])


def _drop_row(res: Path) -> None:
    write_rows(res, rows_of(res)[1:])


def _add_item(res: Path) -> None:
    with (res / R.ITEMS_JSONL).open("a") as fh:
        fh.write(json.dumps({"task": "t", "doc_id": 999, "prompt": "Q", "gold": "A"}) + "\n")


@pytest.mark.parametrize("tamper, file", [
    (_edit_value, R.RESULTS_JSONL), (_append_forged_row, R.RESULTS_JSONL),
    (_drop_row, R.RESULTS_JSONL), (_add_item, R.ITEMS_JSONL)])
def test_edited_output_files_are_refused(res, ref, tmp_path, capsys, tamper, file):
    tamper(res)
    refused(res, ref, tmp_path, capsys, f"{res / file}:", "SHA-256 differs")


def test_edited_results_with_matching_digests_are_refused(res, ref, tmp_path, capsys):
    """The forger also writes the new file's SHA-256 and row count into ingestion.json."""
    _edit_value(res)
    doc = ingestion_doc(res)
    doc["outputs"]["sha256"][R.RESULTS_JSONL] = sha256(res / R.RESULTS_JSONL)
    R.write_json(res / R.INGESTION_JSON, doc)
    refused(res, ref, tmp_path, capsys, f"{res / R.INGESTION_JSON}:", "does not verify")


@pytest.mark.parametrize("change", ["status", "models", "unsigned", "own key"])
def test_forged_ingestion_json_is_refused(res, ref, tmp_path, capsys, change):
    doc = ingestion_doc(res)
    if change == "status":  # a genuinely partial run passed off as finished
        R.write_ingestion(res, {**doc, "status": "partial", "error": "time budget"},
                          signing.load_key(ref))
        doc = {**ingestion_doc(res), "status": "ok", "error": None}
    elif change == "models":  # a web model passed off as a science model (CS)
        for attrs in doc["models"].values():
            attrs["data"] = "web" if attrs["data"] == "science" else "science"
    elif change == "unsigned":
        del doc["signature"]
    if change == "own key":  # signed, but with a key of the forger's
        R.write_ingestion(res, doc, signing.new_key())
    else:
        R.write_json(res / R.INGESTION_JSON, doc)
    cause = "is not signed" if change == "unsigned" else "does not verify"
    refused(res, ref, tmp_path, capsys, f"{res / R.INGESTION_JSON}:", cause)


def test_stripped_signatures_are_refused(res, ref, tmp_path, capsys):
    write_rows(res, [{k: v for k, v in r.items() if k != "signature"} for r in rows_of(res)])
    doc = ingestion_doc(res)
    del doc["signature"]
    doc["outputs"]["sha256"][R.RESULTS_JSONL] = sha256(res / R.RESULTS_JSONL)
    R.write_json(res / R.INGESTION_JSON, doc)
    refused(res, ref, tmp_path, capsys, f"{res / R.INGESTION_JSON}:", "is not signed")


def test_another_key_in_the_reference_data_is_refused(res, ref, tmp_path, capsys):
    signing.write_key(ref / signing.KEY_NAME, signing.new_key())
    refused(res, ref, tmp_path, capsys, f"{res / R.INGESTION_JSON}:", "does not verify")


def test_row_moved_from_another_submission_is_refused(res, ref, tmp_path, capsys, user_key):
    """Even with a valid ingestion.json over the file (as only the key's holder could
    write), a row signed for another submission does not verify."""
    key = signing.load_key(ref)
    doc = ingestion_doc(res)
    other = {**doc["submission"], "fingerprint": "0" * 64}
    row = R.sign_row(R.result_row(rows_of(res)[0]), key, R.signing_context(other))
    R.write_jsonl(res / R.RESULTS_JSONL, [row])
    R.write_ingestion(res, doc, key)
    refused(res, ref, tmp_path, capsys, f"{res / R.RESULTS_JSONL}:",
            "row 1 has a signature that does not verify")


def test_row_count_must_match(res, ref, tmp_path, capsys):
    key = signing.load_key(ref)
    doc = ingestion_doc(res)
    doc["outputs"]["rows"] += 1
    doc.pop("signature")
    doc["signature"] = signing.sign(key, doc)
    R.write_json(res / R.INGESTION_JSON, doc)
    refused(res, ref, tmp_path, capsys, f"{res / R.RESULTS_JSONL}:", "1 rows where")


@pytest.mark.parametrize("exit_code", [0, 1])
def test_a_submission_program_that_ran_is_refused(res, ref, tmp_path, capsys, exit_code):
    """Codabench ran the submission's own `command` beside the ingestion (exitCode set)."""
    (res / R.PLATFORM_METADATA).write_text(yaml.safe_dump(
        {"exitCode": exit_code, "ingestionExitCode": 0}))
    refused(res, ref, tmp_path, capsys, f"{res / R.PLATFORM_METADATA}:",
            "the submission carries its own command")


def test_unreadable_platform_metadata_is_refused(res, ref, tmp_path, capsys):
    (res / R.PLATFORM_METADATA).write_text("[not, a, mapping]\n")
    refused(res, ref, tmp_path, capsys, f"{res / R.PLATFORM_METADATA}:")


# ----------------------------------------------------------------- the runner's copy, resume
def test_writes_during_the_run_are_replaced_by_the_runners_copy(one_ckpt, ref, tmp_path,
                                                                monkeypatch):
    """Whatever reaches the output folder while the task runs (here: a forged row and a
    forged item, written as each checkpoint is scored) is gone from the final files."""
    from e2lmc.ingestion import run

    out = tmp_path / "out"
    score_row = run._score_row

    def meddling(*args, **kwargs):
        row, per_item = score_row(*args, **kwargs)
        _append_forged_row_to(out, {**asdict(row), "value": 0.99})
        _add_item(out)
        (out / OUTCOMES_FILE).write_bytes(b"forged")
        return row, per_item

    monkeypatch.setattr(run, "_score_row", meddling)
    doc = ingest(build.SCI_CLOZE, one_ckpt, out, engine="hf", log=lambda line: None)
    assert doc["status"] == "ok"
    (row,) = rows_of(out)
    assert row["value"] != 0.99
    assert not any(i["doc_id"] == 999 for i in R.iter_jsonl(out / R.ITEMS_JSONL))
    assert read_outcomes(out / OUTCOMES_FILE).keys == [row["model"] + "/" + row["checkpoint"]]
    score(out, ref, tmp_path / "scores")


@pytest.mark.parametrize("plant", ["edited", "unsigned"])
def test_planted_results_are_not_resumed(honest, one_ckpt, tmp_path, plant):
    """A genuine ingestion.json (same fingerprint, grid and engine) beside a planted
    results.jsonl: the run scores the checkpoint again instead of keeping the plant."""
    out = Path(shutil.copytree(honest, tmp_path / "out"))
    (genuine,) = rows_of(honest)
    planted = {**genuine, "value": 0.99, "metrics": {**genuine["metrics"], "acc,none": 0.99}}
    if plant == "unsigned":
        del planted["signature"]
    write_rows(out, [planted])
    doc = ingest(build.SCI_CLOZE, one_ckpt, out, engine="hf", log=lambda line: None)
    assert doc["status"] == "ok" and doc["checkpoints"]["resumed"] == 0
    (row,) = rows_of(out)
    assert row["value"] == genuine["value"] != 0.99  # recomputed


# --------------------------------------------------------------------------- submissions
def test_metadata_with_command_is_refused(tmp_path, one_ckpt):
    folder = build.task_folder(tmp_path / "sub")
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    (folder / "metadata.yaml").write_text(yaml.safe_dump({**meta, "command": "python x.py"}))
    doc = ingest(folder, one_ckpt, tmp_path / "out", engine="hf", log=lambda line: None)
    assert doc["status"] == "failed"
    assert "metadata.yaml" in doc["error"] and "remove the `command` line" in doc["error"]
    assert R.read_results(tmp_path / "out") == []


def test_codabench_metadata_with_command_is_refused(tmp_path):
    """Codabench reads the `metadata` at the top of the unzipped submission when no
    metadata.yaml sits there (here: the task is under a top folder)."""
    z = tmp_path / "s.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(build.SCI_CLOZE.rglob("*")):
            if p.is_file():
                zf.write(p, "task/" + p.relative_to(build.SCI_CLOZE).as_posix())
        zf.writestr("metadata", "command: python3 -c 'print(1)'\n")
    with pytest.raises(UserError, match=r"submission metadata: has a `command`"):
        load_submission(z, tmp_path / "w")


def test_examples_carry_no_command(tmp_path):
    from e2lmc.ingestion.submission import make_submission
    from e2lmc.suite.examples import EXAMPLES, example_dir

    kit = Path(__file__).resolve().parents[1] / "starting_kit" / "example_submissions"
    zips = sorted(kit.glob("*.zip"))
    zips.append(make_submission(build.SCI_CLOZE, "sci_cloze", "acc,none", tmp_path / "m.zip"))
    for z in zips:
        load_submission(z, tmp_path / z.stem)  # refuses a command
    for name in EXAMPLES:
        load_submission(example_dir(name), tmp_path / name)


# --------------------------------------------------------------------------- the key
def test_user_key_is_created_once_private_and_shared(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / signing.KEY_NAME
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(path))
    key = signing.load_key(tmp_path / "no_key_here")
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_key(None) == key  # ingestion and scoring share it
    folder = tmp_path / "bundle_data"
    signing.write_key(folder / signing.KEY_NAME, signing.new_key())
    assert signing.load_key(folder) != key  # a folder's own key comes first


@pytest.mark.parametrize("text", ["not hex at all\n", "abcd\n", ""])
def test_malformed_key_file_is_a_named_user_error(tmp_path, monkeypatch, text):
    user = tmp_path / "user" / signing.KEY_NAME
    user.parent.mkdir()
    user.write_text(text)
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(user))
    with pytest.raises(UserError, match=re.escape(str(user)) + ": .*delete it"):
        signing.load_key(None)
    folder = tmp_path / "input_data"
    folder.mkdir()
    (folder / signing.KEY_NAME).write_text(text or "zz")
    with pytest.raises(UserError, match=re.escape(str(folder / signing.KEY_NAME))
                       + ": .*rebuild the bundle"):
        signing.load_key(folder)


def test_signatures_cover_every_field():
    key = signing.new_key()
    doc = {"a": 1.5, "b": [1, None, "x"], "c": {"d": True}}
    sig = signing.sign(key, doc)
    assert signing.verify(key, json.loads(json.dumps(doc, indent=2)), sig)  # any layout
    assert not signing.verify(key, {**doc, "a": 1.6}, sig)
    assert not signing.verify(signing.new_key(), doc, sig)
    assert not signing.verify(key, doc, None)
    with pytest.raises(ValueError):
        signing.sign(key, {"x": float("nan")})


# --------------------------------------------------------------------------- the bundle
@pytest.fixture
def source(tmp_path, bundle_package) -> Path:
    """A bundle source with signing keys left in it by mistake."""
    from bundle_standins import make_standin_bundle

    src = make_standin_bundle(tmp_path / "src")
    for rel in ("input_data/e2lm", "reference_data/e2lm", "starting_kit"):
        signing.write_key(src / rel / signing.KEY_NAME, b"\1" * 32)
    return src


def zip_keys(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n.endswith(signing.KEY_NAME)}


def test_build_writes_one_fresh_key_for_both_steps(tmp_path, source):
    from e2lmc.bundle.build import build_bundle

    first = zip_keys(build_bundle(tmp_path / "a.zip", root=source))
    assert set(first) == {f"input_data/e2lm/{signing.KEY_NAME}",
                          f"reference_data/e2lm/{signing.KEY_NAME}"}  # none in the kit
    assert len(set(first.values())) == 1
    key = bytes.fromhex(next(iter(first.values())).decode())
    assert len(key) == 32 and key != b"\1" * 32  # not the one found in the repository
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        info = zf.getinfo(f"reference_data/e2lm/{signing.KEY_NAME}")
    assert (info.external_attr >> 16) & 0o777 == 0o600
    second = zip_keys(build_bundle(tmp_path / "b.zip", root=source))
    assert set(second.values()).isdisjoint(first.values())  # fresh in each build


@pytest.fixture
def staged(tmp_path, source) -> Path:
    from e2lmc.bundle.build import stage_bundle
    from e2lmc.bundle.check import check_bundle_dir

    dest = tmp_path / "staged"
    dest.mkdir()
    stage_bundle(source, dest)
    assert check_bundle_dir(dest) == []
    return dest


def _drop_input_key(root: Path) -> None:
    (root / "input_data" / "e2lm" / signing.KEY_NAME).unlink()


def _mismatch(root: Path) -> None:
    signing.write_key(root / "reference_data" / "e2lm" / signing.KEY_NAME, signing.new_key())


def _kit_key(root: Path) -> None:
    signing.write_key(root / "starting_kit" / "sub" / signing.KEY_NAME, signing.new_key())


def _malformed(root: Path) -> None:
    (root / "reference_data" / "e2lm" / signing.KEY_NAME).write_text("oops\n")


@pytest.mark.parametrize("breakage, needle", [
    (_drop_input_key, f"input_data/e2lm/{signing.KEY_NAME} is missing"),
    (_mismatch, "hold different signing.key files"),
    (_kit_key, f"starting_kit/sub/{signing.KEY_NAME}: a signing key in what participants"),
    (_malformed, "not a readable signing key"),
])
def test_check_refuses_missing_mismatched_or_exposed_keys(staged, capsys, breakage, needle):
    breakage(staged)
    assert main(["bundle", "check", str(staged)]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_run_local_with_a_built_bundle(tmp_path, tiny_grid):
    """The real programs from a built zip: both steps read the bundle's one key."""
    from bundle_standins import make_standin_bundle, require_programs
    from e2lmc.bundle.build import build_bundle
    from e2lmc.bundle.worker import run_local

    require_programs()
    src = make_standin_bundle(tmp_path / "src", use_real_programs=True)
    grid = build.subset_manifest(tiny_grid, tmp_path / "grid", engine="hf")
    (src / "input_data" / "e2lm" / "manifest.yaml").write_text(  # absolute weight paths
        yaml.safe_dump(load_manifest(grid).to_dict(), sort_keys=False))
    (src / "reference_data" / "e2lm" / "scoring.yaml").write_text(SCORING_YAML)
    bundle = build_bundle(tmp_path / "bundle.zip", root=src)
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        for p in sorted(build.SCI_CLOZE.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(build.SCI_CLOZE).as_posix())
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_local(sub, "e2lm", bundle=bundle, workdir=tmp_path / "w", env=env,
                       timeout=600)
    assert result.prediction.exit_code == 0, result.prediction.stderr.read_text()[-2000:]
    assert set(result.leaderboard) == set(LEADERBOARD_KEYS)
    key = next(iter(zip_keys(bundle).values())).decode().strip()
    app = result.workdir / "app"
    assert (app / "input" / "ref" / signing.KEY_NAME).read_text().strip() == key
    assert (result.workdir / "prediction" / "input_data" / signing.KEY_NAME
            ).read_text().strip() == key
