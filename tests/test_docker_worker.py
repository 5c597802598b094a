"""`e2lmc run-local --docker`: the image built from a locally bootstrapped base, end to end.

Needs a Docker engine (skips with the reason otherwise). Builds a Debian base with
debootstrap (docker/bootstrap_base.sh, cached), the wheels on the host
(docker/fetch_wheels.sh, CPU torch only), then the image from docker/Dockerfile with
BASE_IMAGE overridden, and runs a submission through both steps in containers with the
worker's hardening, as root and as a non-root user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import REPO, example_zip, make_standin_bundle, require_programs
from e2lmc.bundle.worker import run_local
from e2lmc.errors import UserError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE_TAG = "e2lmc-base:bookworm"
IMAGE_TAG = "e2lmc:ci"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _client():
    try:
        import docker
    except ImportError:
        pytest.skip("the docker Python package is not installed")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no socket, permission denied, daemon down
        pytest.skip(f"no usable Docker engine ({type(exc).__name__}: {exc})")
    return client


def _timed(label: str, timings: dict[str, float], fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    timings[label] = round(time.monotonic() - start, 1)
    return out


@pytest.fixture(scope="module")
def image() -> str:
    client = _client()
    timings: dict[str, float] = {}
    have_base = any(BASE_TAG in (img.tags or []) for img in client.images.list())
    if not have_base and subprocess.run(["which", "debootstrap"], capture_output=True).returncode:
        pytest.skip("no base image and no debootstrap to make one (apt-get install debootstrap)")
    _timed("base", timings, subprocess.run, ["bash", str(REPO / "docker" / "bootstrap_base.sh"),
                                             BASE_TAG], check=True)
    if not (list(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl"))
            or list((REPO / "docker" / "wheels").glob("torch-2.13.0+cpu-*.whl"))):
        pytest.skip("no torch-2.13.0+cpu wheel in /opt/wheels or docker/wheels (the test "
                    "never downloads a CUDA build)")
    env = {**os.environ, "CPU_TORCH": "1", "PYTHON": sys.executable}
    _timed("wheels", timings, subprocess.run, ["bash", str(REPO / "docker" / "fetch_wheels.sh")],
           check=True, env=env)
    _timed("image", timings, client.images.build, path=str(REPO), dockerfile="docker/Dockerfile",
           buildargs={"BASE_IMAGE": BASE_TAG}, tag=IMAGE_TAG, rm=True, forcerm=True)
    print(f"\ndocker build timings (s): {timings}", file=sys.stderr)
    return IMAGE_TAG


def test_image_runs_commands_as_root_and_non_root(image):
    client = _client()
    for user in (None, "1234:1234"):
        out = client.containers.run(image, ["python3", "-c", (
            "import os, torch, lm_eval, e2lmc; print(e2lmc.__version__, torch.__version__,"
            " os.access(os.environ['HF_HOME'], os.W_OK))")], user=user, remove=True,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], network_disabled=True)
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
def test_run_local_in_docker(image, standin_bundle, tmp_path, user):
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n")
    result = run_local(sub, "e2lm", bundle=standin_bundle, docker_image=image,
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


def test_time_limit_in_docker(image, standin_bundle, tmp_path):
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\nstandin_mode: sleep\n")
    with pytest.raises(UserError, match="ingestion failed"):
        run_local(sub, "e2lm", bundle=standin_bundle, docker_image=image, workdir=tmp_path / "w",
                  input_data=_grid(tmp_path), network=False, env=OFFLINE, timeout=3)
    assert "killed after 3" in (tmp_path / "w" / "logs" / "ingestion.stderr.txt").read_text()


def test_example_on_the_micro_suite_in_docker(image, tmp_path, micro_suite):
    """The real programs and an example submission, both steps in containers running as
    root (Codabench's default; non-root runs are covered with the stand-in programs)."""
    from e2lmc.scoring.program import LEADERBOARD_KEYS

    require_programs()
    grid = micro_suite.parent
    start = time.monotonic()
    result = run_local(example_zip(tmp_path), "e2lm", bundle=REPO, docker_image=image,
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
