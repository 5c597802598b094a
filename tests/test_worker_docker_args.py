"""Docker mode's container settings, checked without a Docker engine (a fake client).

The real engine is exercised by tests/test_docker_worker.py where one is available; this
test pins the worker's hardening everywhere: capabilities, no-new-privileges, user
namespace, mounts, environment, GPU request, network, user. The capability list is the
compute worker's own (codalab/codabench compute_worker/compute_worker.py), spelled out here
so that a change to the constant shows up as a test change.
"""

from __future__ import annotations

import json
import sys
import types
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import make_standin_bundle
from e2lmc.bundle.worker import WORKER_CAP_DROP, run_local

CODABENCH_CAP_DROP = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                      "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP",
                      "SETUID", "SYS_CHROOT"]


class FakeContainer:
    def __init__(self, kwargs: dict) -> None:
        self.kwargs = kwargs

    def start(self) -> None:
        mounts = {v["bind"]: Path(host) for host, v in self.kwargs["volumes"].items()}
        if "/app/input" in mounts:  # the scoring step: produce what score.py would
            (mounts["/app/output"] / "scores.json").write_text(json.dumps({"score": 0.5}))

    def wait(self, timeout=None) -> dict:
        return {"StatusCode": 0}

    def logs(self, stdout=True, stderr=True) -> bytes:
        return b""

    def kill(self) -> None:
        pass

    def remove(self, force=False) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.created: list[dict] = []
        self.images = types.SimpleNamespace(get=lambda name: object())
        self.containers = types.SimpleNamespace(create=self._create)

    def ping(self) -> bool:
        return True

    def _create(self, image, **kwargs):
        self.created.append({"image": image, **kwargs})
        return FakeContainer(kwargs)


@pytest.fixture
def fake_docker(monkeypatch) -> FakeClient:
    import docker

    client = FakeClient()
    monkeypatch.setattr(docker, "from_env", lambda: client)
    return client


def test_container_settings(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    bundle = make_standin_bundle(tmp_path / "bundle")
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\n")
    data = tmp_path / "staged"
    data.mkdir()
    result = run_local(sub, "e2lm", bundle=bundle, docker_image="e2lmc:test", gpus=True,
                       workdir=tmp_path / "w", data=data, network=False, user="1000:1000",
                       env={"HF_HUB_OFFLINE": "1"})
    assert result.leaderboard == {"score": 0.5}
    ingestion, scoring = fake_docker.created
    for call in (ingestion, scoring):
        assert call["image"] == "e2lmc:test"
        assert call["cap_drop"] == CODABENCH_CAP_DROP == list(WORKER_CAP_DROP)
        # no `seccomp=` option: Docker's default profile, as on the worker
        assert call["security_opt"] == ["no-new-privileges"]
        assert call["userns_mode"] == "host"
        assert "cap_add" not in call and "privileged" not in call
        assert call["working_dir"] == "/app/program"
        assert call["environment"] == {"PYTHONUNBUFFERED": "1", "http_proxy": "",
                                       "https_proxy": "", "HF_HUB_OFFLINE": "1"}
        assert call["network_disabled"] is True and call["user"] == "1000:1000"
        (request,) = call["device_requests"]
        assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert ingestion["command"] == ["python3", "ingestion.py"]  # no shell, no host python
    assert scoring["command"] == ["python3", "score.py"]
    binds = {v["bind"]: (host, v["mode"]) for host, v in ingestion["volumes"].items()}
    assert set(binds) == {"/app/program", "/app/ingested_program", "/app/input_data",
                          "/app/output", "/app/data"}
    assert binds["/app/data"] == (str(data.resolve()), "ro")
    # the worker's modes: "z" (read-write, SELinux label shared), "ro", else read-write
    assert {k: m for k, (_, m) in binds.items()} == {
        "/app/program": "z", "/app/output": "z", "/app/data": "ro",
        "/app/ingested_program": "rw", "/app/input_data": "rw"}
    binds = {v["bind"]: v["mode"] for v in scoring["volumes"].values()}
    assert binds == {"/app/program": "z", "/app/output": "z", "/app/data": "ro",
                     "/app/input": "rw", "/app/shared": "rw"}


def test_submission_command_runs_beside_the_ingestion(tmp_path, fake_docker, monkeypatch):
    """A submission's `command` gets its own container in the prediction step, mounted
    as the worker mounts it; the worker's metadata then carries its exit code."""
    monkeypatch.setenv("COMPETITION_CONTAINER_HTTP_PROXY", "http://proxy:3128")
    bundle = make_standin_bundle(tmp_path / "bundle")
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\ncommand: python3 forge.py $output\n")
    result = run_local(sub, "e2lm", bundle=bundle, docker_image="img", workdir=tmp_path / "w")
    ingestion, program, scoring = fake_docker.created
    assert program["command"] == ["python3", "forge.py", "/app/output"]
    assert program["cap_drop"] == CODABENCH_CAP_DROP and program["working_dir"] == "/app/program"
    assert program["environment"]["http_proxy"] == "http://proxy:3128"
    binds = {v["bind"]: (Path(host), v["mode"]) for host, v in program["volumes"].items()}
    shared = {v["bind"]: Path(host) for host, v in ingestion["volumes"].items()}
    assert binds == {"/app/program": (shared["/app/ingested_program"], "z"),
                     "/app/output": (shared["/app/output"], "z"),
                     "/app/data": (shared["/app/data"], "ro"),
                     "/app/input_data": (shared["/app/input_data"], "rw")}
    meta = yaml.safe_load((result.workdir / "app" / "input" / "res" / "metadata").read_text())
    assert meta["exitCode"] == 0 and meta["ingestionExitCode"] == 0
    assert result.submission is not None and result.submission.name == "submission"


def test_no_gpu_request_by_default(tmp_path, fake_docker):
    bundle = make_standin_bundle(tmp_path / "bundle")
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("metadata.yaml", "task_name: t\n")
    run_local(sub, "e2lm", bundle=bundle, docker_image="img", workdir=tmp_path / "w")
    assert all("device_requests" not in c and c["network_disabled"] is False
               for c in fake_docker.created)
    assert sys.executable not in fake_docker.created[0]["command"]
