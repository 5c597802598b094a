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


def test_time_limit_in_docker(worker_image, standin_bundle, tmp_path):
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\nstandin_mode: sleep\n")
    with pytest.raises(UserError, match="ingestion failed"):
        run_local(sub, "e2lm", bundle=standin_bundle, docker_image=worker_image,
                  workdir=tmp_path / "w", input_data=_grid(tmp_path), network=False,
                  env=OFFLINE, timeout=3)
    assert "killed after 3" in (tmp_path / "w" / "logs" / "ingestion.stderr.txt").read_text()


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
