"""`e2lmc run-local --docker`: the image built from a locally bootstrapped base, end to end.

Needs a Docker engine (skips with the reason otherwise). The image comes from the session
fixture `worker_image` (tests/conftest.py, shared with the `worker` profile): a Debian base
made with debootstrap (docker/bootstrap_base.sh, cached), the wheels built on the host
(docker/fetch_wheels.sh, CPU torch only), then docker/Dockerfile with BASE_IMAGE
overridden. A submission runs through both steps in containers with the worker's
hardening, as root and as a non-root user.
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import REPO, example_zip, make_standin_bundle, require_programs
from profiles import docker_client
from e2lmc.bundle.worker import run_local, worker_hardening
from e2lmc.errors import UserError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_image_runs_commands_as_root_and_non_root(worker_image):
    client, _ = docker_client()
    for user in (None, "1234:1234"):
        out = client.containers.run(worker_image, ["python3", "-c", (
            "import os, torch, lm_eval, e2lmc, pyseccomp; print(e2lmc.__version__,"
            " torch.__version__, os.access(os.environ['HF_HOME'], os.W_OK))")], user=user,
            remove=True, **worker_hardening(network=False))
        version, torch_version, writable = out.decode().split()
        assert torch_version.startswith("2.13.0") and writable == "True"


@pytest.fixture(scope="module")
def standin_bundle(tmp_path_factory) -> Path:
    return make_standin_bundle(tmp_path_factory.mktemp("bundle"))


def _grid(root: Path) -> Path:
    for ckpt in ("c1", "c2", "c3"):
        (root / "weights" / "m" / ckpt).mkdir(parents=True)
    doc = {"version": 1, "models": [{"name": "m", "source": "../weights/m", "data": "science",
                                     "checkpoints": [{"name": c, "subfolder": c,
                                                      "tokens_b": float(i)}
                                                     for i, c in enumerate(("c1", "c2", "c3"))]}]}
    (root / "task").mkdir()
    (root / "task" / "manifest.yaml").write_text(yaml.safe_dump(doc))
    return root / "task"


@pytest.mark.parametrize("user", [None, "1234:1234"])
def test_run_local_in_docker(worker_image, standin_bundle, tmp_path, user):
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n")
    result = run_local(sub, "e2lm", bundle=standin_bundle, docker_image=worker_image,
                       workdir=tmp_path / "w", input_data=_grid(tmp_path), network=False,
                       user=user, env=OFFLINE, timeout=300)
    assert result.prediction.exit_code == 0 and result.leaderboard["score"] == 3.0
    probe = yaml.safe_load((result.workdir / "app" / "output" / "probe.json").read_text())
    assert probe["sources_exist"]  # checkpoint folders mounted read-only and relocated
    res_probe = yaml.safe_load(
        (result.workdir / "app" / "input" / "res" / "probe.json").read_text())
    assert res_probe["cwd"] == "/app/program"
    assert res_probe["e2lmc"] == "/app/program/e2lmc"
    assert "E2LMC_APP_ROOT" not in res_probe["env"]
    assert res_probe["proxies"] == ["", ""]  # the worker always sets both, empty by default
    assert res_probe["mounts"] == {  # the worker's bind modes
        "/app/program": "rw", "/app/output": "rw", "/app/data": "ro",
        "/app/ingested_program": "rw", "/app/input_data": "rw", "/app/local_weights/0": "ro"}


def test_time_limit_in_docker(worker_image, standin_bundle, tmp_path):
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\nstandin_mode: sleep\n")
    with pytest.raises(UserError, match="prediction step: Execution Time Limit exceeded"):
        run_local(sub, "e2lm", bundle=standin_bundle, docker_image=worker_image,
                  workdir=tmp_path / "w", input_data=_grid(tmp_path), network=False,
                  env=OFFLINE, timeout=3)
    assert "killed after 3" in (tmp_path / "w" / "logs" / "ingestion.stderr.txt").read_text()
    assert not (tmp_path / "w" / "logs" / "scoring.stderr.txt").exists()


# A submission program that does what Codabench lets a `command` do: it runs beside the
# ingestion with the same /app/output (read-write) and /app/input_data, rewrites
# results.jsonl while the ingestion runs, then, once the ingestion has given up (it
# refuses a `command`), writes a complete output signed with the key it read from the
# input data. Only the worker's `metadata` (exitCode not null) can tell.
FORGE = '''\
import json, time
from pathlib import Path
from e2lmc import signing
from e2lmc.results import ResultRow, sign_row, signing_context, write_ingestion, write_jsonl

out = Path("/app/output")
key = signing.load_key(Path("/app/input_data"))
sub = {"task": "forged", "metric": "acc,none", "n_docs": 500, "fingerprint": "forged"}
rows = [sign_row(ResultRow("m", c, float(i), "public", "acc,none", 0.3 + 0.2 * i,
                           metrics={"acc,none": 0.3 + 0.2 * i}), key, signing_context(sub))
        for i, c in enumerate(("c1", "c2", "c3"))]


def ingestion_gave_up():
    try:
        return json.loads((out / "ingestion.json").read_text())["status"] == "failed"
    except (OSError, ValueError, KeyError):
        return False


deadline = time.time() + 240
while time.time() < deadline and not ingestion_gave_up():
    (out / "results.jsonl").write_text(json.dumps({"forged": True}) + "\\n")
    time.sleep(0.05)
time.sleep(1)
write_jsonl(out / "results.jsonl", rows)
write_jsonl(out / "items.jsonl", [])
write_ingestion(out, {"status": "ok", "models": {"m": {"size": "s", "arch": "arch1",
                                                      "data": "science"}},
                      "submission": sub}, key)
print("forged", flush=True)
'''


def test_submission_command_cannot_forge_a_score(worker_image, tmp_path):
    """The hostile case: the worker runs the submission's `command` concurrently with the
    real ingestion program; scoring exits non-zero with the named error, no scores."""
    from e2lmc import signing
    from e2lmc.results import read_verified

    require_programs()
    sub = tmp_path / "hostile.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n"
                                     "command: python3 forge.py\n")
        zf.writestr("forge.py", FORGE)
    with pytest.raises(UserError, match="scoring program failed") as e:
        run_local(sub, "e2lm", bundle=REPO, docker_image=worker_image, workdir=tmp_path / "w",
                  input_data=_grid(tmp_path), network=False, env=OFFLINE, timeout=300)
    assert "carries its own command" in str(e.value), str(e.value)
    app = tmp_path / "w" / "app"
    assert not (app / "output" / "scores.json").exists()
    logs = tmp_path / "w" / "logs"
    assert "forged" in (logs / "submission.stdout.txt").read_text()
    assert "has a `command`" in (logs / "ingestion.stdout.txt").read_text() + \
        (logs / "ingestion.stderr.txt").read_text()
    res = app / "input" / "res"
    meta = yaml.safe_load((res / "metadata").read_text())
    assert meta["exitCode"] == 0 and meta["ingestionExitCode"] == 2
    # The forgery is complete: without the worker's metadata it would verify.
    (res / "metadata").unlink()
    doc, rows, _ = read_verified(res, signing.load_key(app / "input" / "ref"))
    assert doc["submission"]["task"] == "forged" and len(rows) == 3


def test_example_on_the_micro_suite_in_docker(worker_image, tmp_path, micro_suite):
    """The real programs and an example submission, both steps in containers running as
    root (Codabench's default; non-root runs are covered with the stand-in programs)."""
    from e2lmc.scoring.program import LEADERBOARD_KEYS

    require_programs()
    grid = micro_suite.parent
    start = time.monotonic()
    result = run_local(example_zip(tmp_path), "e2lm", bundle=REPO, docker_image=worker_image,
                       workdir=tmp_path / "w", input_data=grid, ref=grid, network=False,
                       env={**OFFLINE, "OMP_NUM_THREADS": "2"}, timeout=900)
    print(f"\nrun-local --docker on the micro suite: {time.monotonic() - start:.1f} s",
          file=sys.stderr)
    assert result.prediction.exit_code == 0, result.prediction.stderr.read_text()[-3000:]
    assert set(result.leaderboard) == set(LEADERBOARD_KEYS)
    assert 0.0 <= result.leaderboard["score"] <= 1.0
    res = result.workdir / "app" / "input" / "res"
    assert yaml.safe_load((res / "ingestion.json").read_text())["status"] == "ok"
    assert (result.workdir / "app" / "output" / "detailed_results.html").is_file()
