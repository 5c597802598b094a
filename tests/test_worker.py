"""`e2lmc run-local` in-process: the worker's layout, commands, metadata and hygiene.

Runs against stand-in programs (tests/bundle_standins.py) that follow the program contract
and record what they saw.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import column_keys, make_standin_bundle, write_program
from e2lmc.bundle.layout import judge_key_name
from e2lmc.bundle.worker import run_local, worker_argv
from e2lmc.cli import main
from e2lmc.errors import UserError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_standin_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def input_data(tmp_path_factory) -> Path:
    """A manifest whose checkpoints are local folders given relative to it."""
    root = tmp_path_factory.mktemp("grid")
    for model in ("m1", "m2"):
        for ckpt in ("c1", "c2"):
            (root / "weights" / model / ckpt).mkdir(parents=True)
    doc = {"version": 1, "models": [
        {"name": m, "source": f"../weights/{m}", "size": "1b", "arch": "arch1",
         "data": "science", "checkpoints": [
             {"name": c, "subfolder": c, "tokens_b": float(i + 1), "stage": "public"}
             for i, c in enumerate(("c1", "c2"))]} for m in ("m1", "m2")]}
    (root / "task").mkdir()
    (root / "task" / "manifest.yaml").write_text(yaml.safe_dump(doc))
    return root / "task"


def submission(tmp_path: Path, mode: str = "ok") -> Path:
    path = tmp_path / f"sub_{mode}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.yaml", yaml.safe_dump(
            {"task_name": "demo_task", "task_metric": "acc,none", "standin_mode": mode}))
        zf.writestr("nested/task.yaml", "task: demo_task\n")
    return path


def run(tmp_path, bundle, input_data, mode="ok", **kw):
    return run_local(submission(tmp_path, mode), "e2lm", bundle=bundle,
                     workdir=tmp_path / "work", input_data=input_data, **kw)


def test_scores_and_layout(tmp_path, bundle, input_data, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("E2LMC_JUDGE_API_KEY", "sk-secret")
    result = run(tmp_path, bundle, input_data)
    keys = column_keys(bundle / "competition.yaml")
    assert list(result.leaderboard) == list(keys)
    assert result.leaderboard["score"] == 4.0  # stand-in: one row per checkpoint
    assert result.dropped_keys == ["not_a_column"]
    assert result.prediction.exit_code == 0 and result.scoring.exit_code == 0

    app = result.workdir / "app"
    res = app / "input" / "res"
    meta = yaml.safe_load((res / "metadata").read_text())
    assert meta["ingestionExitCode"] == 0 and meta["exitCode"] is None
    assert {"results.jsonl", "ingestion.json", "probe.json"} <= {p.name for p in res.iterdir()}
    assert (app / "output" / "scores.json").is_file()
    # the scoring step's own metadata: the scoring program's exit code, no ingestion
    scored = yaml.safe_load((app / "output" / "metadata").read_text())
    assert scored["exitCode"] == 0 and scored["ingestionExitCode"] is None
    assert scored["ingestionElapsedTime"] is None and scored["elapsedTime"] > 0
    # The submission was unzipped as-is (no flattening), then left out of the scoring step.
    done = result.workdir / "prediction"
    assert (done / "ingested_program" / "nested" / "task.yaml").is_file()
    assert not (app / "ingested_program").exists() and not (app / "input_data").exists()
    # a layout without signing keys gets one fresh key, the same for both steps
    key = (app / "input" / "ref" / "signing.key").read_text()
    assert (done / "input_data" / "signing.key").read_text() == key
    # a manifest without a time budget gets the one that fits the 12-hour step limit
    staged = yaml.safe_load((done / "input_data" / "manifest.yaml").read_text())
    assert staged["defaults"]["time_budget_s"] == 43200 - 2160

    probe = json.loads((res / "probe.json").read_text())
    assert probe["argv"] == ["ingestion.py"]
    assert probe["cwd"] == str(done / "program").replace("/prediction/", "/app/")
    assert probe["e2lmc"].endswith("app/program/e2lmc")  # the program folder's own copy
    assert probe["unbuffered"] == "1"
    for secret in ("HF_TOKEN", "E2LMC_JUDGE_API_KEY", "PYTHONPATH"):
        assert secret not in probe["env"]
    scoring_probe = json.loads((app / "output" / "probe.json").read_text())
    assert scoring_probe["sources_exist"]  # manifest-relative weights were relocated
    assert "scoring.yaml" in scoring_probe["ref_files"] and "metadata" in scoring_probe["res_files"]
    assert "HF_TOKEN" not in scoring_probe["env"]


def test_failed_ingestion_is_caught_by_scoring(tmp_path, bundle, input_data):
    expected = r"(?s)exit status 1.*ingestion failed \(exit code 3\)"
    with pytest.raises(UserError, match=expected) as e:
        run(tmp_path, bundle, input_data, mode="fail")
    assert "would be marked Failed" in str(e.value)
    meta = yaml.safe_load((tmp_path / "work" / "app" / "input" / "res" / "metadata").read_text())
    assert meta["ingestionExitCode"] == 3


def test_program_writing_metadata_fails_like_the_worker(tmp_path, bundle, input_data):
    with pytest.raises(UserError, match="wrote a file named `metadata`"):
        run(tmp_path, bundle, input_data, mode="write_metadata")


def test_time_limit_ends_the_run_without_scoring(tmp_path, bundle, input_data):
    """As on the platform: the step's processes are killed, nothing is kept, the
    submission fails and scoring never runs."""
    with pytest.raises(UserError, match=r"prediction step: Execution Time Limit exceeded "
                                        r"\(3 s; still running: ingestion\)") as e:
        run(tmp_path, bundle, input_data, mode="sleep", timeout=3)
    assert "uploads nothing and marks the submission Failed; scoring does not run" in str(e.value)
    logs = tmp_path / "work" / "logs"
    assert "killed after 3" in (logs / "ingestion.stderr.txt").read_text()
    assert not (logs / "scoring.stderr.txt").exists()
    assert not (tmp_path / "work" / "app" / "output" / "metadata").exists()


def test_submission_command_runs_only_in_a_container(tmp_path, bundle, input_data):
    sub = tmp_path / "cmd.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n"
                                     "command: python3 forge.py\n")
    with pytest.raises(UserError, match="runs participant commands only in a container"):
        run_local(sub, "e2lm", bundle=bundle, workdir=tmp_path / "w", input_data=input_data)
    assert not (tmp_path / "w" / "logs" / "ingestion.stdout.txt").exists()


def test_submission_without_metadata_is_copied_into_the_output(tmp_path, bundle, input_data):
    """The worker copies a submission that has no metadata file into /app/output before
    the ingestion starts (results-style submissions); the stand-in ingestion then fails
    for want of metadata.yaml, and scoring reports it."""
    sub = tmp_path / "bare.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("task.yaml", "task: demo_task\n")
    with pytest.raises(UserError, match="ingestion failed"):
        run_local(sub, "e2lm", bundle=bundle, workdir=tmp_path / "w", input_data=input_data)
    res = tmp_path / "w" / "app" / "input" / "res"
    assert (res / "task.yaml").read_text() == "task: demo_task\n"
    assert yaml.safe_load((res / "metadata").read_text())["exitCode"] is None


def test_commands_are_split_as_the_worker_splits_them():
    assert worker_argv("python3 $program/score.py $input $output 'a b'", "program", True) == [
        "python3", "/app/program/score.py", "/app/input", "/app/output", "a b"]
    assert worker_argv("python3 ingest.py $input $predictions $submission_program $hidden",
                       "ingestion", False) == [
        "python3", "ingest.py", "/app/input_data", "/app/output", "/app/ingested_program",
        "/app/input/ref"]


def test_commands_run_without_a_shell(tmp_path, bundle, input_data):
    prog = tmp_path / "bundle"
    import shutil
    shutil.copytree(bundle, prog)
    meta = prog / "ingestion_program" / "metadata.yaml"
    meta.write_text("command: python3 ingestion.py 'two words' '*' '$HOME'\n")
    result = run_local(submission(tmp_path), "e2lm", bundle=prog, workdir=tmp_path / "w",
                       input_data=input_data)
    probe = json.loads((result.workdir / "app" / "input" / "res" / "probe.json").read_text())
    assert probe["argv"] == ["ingestion.py", "two words", "*", "$HOME"]


def test_judge_key_and_extra_env(tmp_path, bundle, input_data):
    key = tmp_path / "key"
    key.write_text("sk-local\n")
    result = run(tmp_path, bundle, input_data, judge_key_file=key, env={"E2LMC_FLAG": "1"})
    ref = result.workdir / "app" / "input" / "ref"
    name = judge_key_name(ref)
    assert (ref / name).read_text().strip() == "sk-local"
    probe = json.loads((result.workdir / "app" / "output" / "probe.json").read_text())
    assert name in probe["ref_files"] and "E2LMC_FLAG" in probe["env"]


def test_bundle_zip_and_data_folder(tmp_path, bundle, input_data):
    import shutil
    archive = Path(shutil.make_archive(str(tmp_path / "bundle"), "zip", bundle))
    data = tmp_path / "staged"
    (data / "weights").mkdir(parents=True)
    result = run_local(submission(tmp_path), "e2lm", bundle=archive, workdir=tmp_path / "w",
                       input_data=input_data, data=data)
    assert (result.workdir / "app" / "data").resolve() == data.resolve()
    assert result.leaderboard["score"] == 4.0


def test_unknown_task_and_missing_submission(tmp_path, bundle, input_data):
    with pytest.raises(UserError, match="no task named 'nope'"):
        run_local(submission(tmp_path), "nope", bundle=bundle, workdir=tmp_path / "w")
    with pytest.raises(UserError, match="submission not found"):
        run_local(tmp_path / "missing.zip", "e2lm", bundle=bundle, workdir=tmp_path / "w",
                  input_data=input_data)


def test_scores_must_be_finite(tmp_path, bundle, input_data):
    import shutil
    prog = tmp_path / "b"
    shutil.copytree(bundle, prog)
    write_program(prog / "scoring_program", "score.py",
                  "import json, os\nfrom pathlib import Path\n"
                  "root = Path(os.environ['E2LMC_APP_ROOT'])\n"
                  "scores = json.dumps({'score': float('nan')})\n"
                  "(root / 'output' / 'scores.json').write_text(scores)\n")
    with pytest.raises(UserError, match="finite numbers"):
        run_local(submission(tmp_path), "e2lm", bundle=prog, workdir=tmp_path / "w",
                  input_data=input_data)


def test_cli_prints_the_leaderboard_row(tmp_path, bundle, input_data, capsys):
    code = main(["run-local", "--submission", str(submission(tmp_path)), "--task", "e2lm",
                 "--bundle", str(bundle), "--workdir", str(tmp_path / "w"),
                 "--input-data", str(input_data)])
    out = capsys.readouterr()
    assert code == 0
    row = json.loads(out.out)
    assert row["score"] == 4.0 and "not_a_column" not in row
    assert "ingestion: exit 0" in out.err and "detailed results:" in out.err


def test_checkpoints_inside_the_input_data_are_not_copied(tmp_path, bundle):
    suite = tmp_path / "suite"
    (suite / "model_a" / "c1").mkdir(parents=True)
    (suite / "notes.txt").write_text("kept")
    (suite / "manifest.yaml").write_text(yaml.safe_dump({"version": 1, "models": [
        {"name": "a", "source": "model_a", "checkpoints": [
            {"name": "c1", "subfolder": "c1", "tokens_b": 1.0}]}]}))
    result = run_local(submission(tmp_path), "e2lm", bundle=bundle, workdir=tmp_path / "w",
                       input_data=suite)
    staged = result.workdir / "prediction" / "input_data"
    assert (staged / "notes.txt").is_file() and not (staged / "model_a").exists()
    manifest = yaml.safe_load((staged / "manifest.yaml").read_text())
    assert manifest["models"][0]["source"] == str((suite / "model_a").resolve())
    assert result.leaderboard["score"] == 1.0
