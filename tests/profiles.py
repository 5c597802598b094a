"""Platform profiles: the same ingestion run by three kinds of runner.

    root    privileged root (this machine, CI): `ingest()` in the test process
    user    uid/gid 65534 with no capabilities (setpriv around tests/profile_driver.py):
            no namespaces, no user switch; only unprivileged confinement can hold
    worker  Codabench's compute worker: a container of the e2lmc image as root with the
            worker's own settings (e2lmc.bundle.worker.worker_hardening: its cap_drop list,
            no-new-privileges, Docker's default seccomp, network on); the working tree's
            e2lmc is mounted read-only and comes first on PYTHONPATH

Every runner gets the test's extra environment (the secrets, TMPDIR) and returns the
ingestion document and the text the runner printed. A profile that cannot run here skips
with the reason; where E2LMC_REQUIRE_PROFILES names it (CI: .ci/run), it fails instead.
A test marked `@pytest.mark.profiles(...)` (all three when no name is given) gets ids
`test_x[root]`, `test_x[user]`, `test_x[worker]`, the last with the `docker` mark: select
with `-k user`, `-m profiles`, `-m "not docker"`.

For `user`, the runner opens what uid 65534 must reach and nothing more: others may
search the folders above the test's tmp_path and its inputs (pytest makes its base temp
0700; a concurrent pytest session closes /tmp/pytest-of-root again), read the inputs
(submission, manifest, checkpoints), and the test's tmp_path becomes that user's, so the
output and the folder around it are writable for it as on a real host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from e2lmc.bundle.worker import worker_hardening
from e2lmc.ingestion.taskproc import Limits
from e2lmc.manifest import load_manifest

PROFILES = ("root", "user", "worker")
REQUIRE_ENV = "E2LMC_REQUIRE_PROFILES"  # comma-separated profiles that must not skip
NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "profile_driver.py"
RUN_TIMEOUT = 600  # seconds, one ingestion under `user` or `worker`
# What a separate runner keeps from the test's environment besides the test's extra
# variables: hub offline switches and thread counts (the worker passes nothing else).
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
              "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SETPRIV = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           "--inh-caps=-all", "--bounding-set=-all", "--")

BASE_TAG = "e2lmc-base:bookworm"
IMAGE_TAG = "e2lmc:ci"
CPU_TORCH = "torch-2.13.0+cpu-*.whl"

# ingestion(submission, input_data, output, limits, env) -> (doc, printed text)
Runner = Callable[[Path, Path, Path, Limits, dict], tuple[dict, str]]


def cannot_run(profile: str, reason: str) -> None:
    """Skip, or fail where the profile is required (CI)."""
    required = {p.strip() for p in os.environ.get(REQUIRE_ENV, "").split(",")}
    if profile in required:
        pytest.fail(f"profile {profile!r} is required ({REQUIRE_ENV}) but cannot run: {reason}")
    pytest.skip(f"profile {profile!r} cannot run here: {reason}")


# ------------------------------------------------------------------------------- root
def root_runner(monkeypatch) -> Runner:
    """ingest() in this process, its environment patched for the test."""
    from profile_driver import ingest_call

    def run(submission, input_data, output, limits, env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if "TMPDIR" in env:
            monkeypatch.setattr(tempfile, "tempdir", env["TMPDIR"])
        lines: list[str] = []
        doc = ingest_call(submission, input_data, output, dataclasses.asdict(limits),
                          log=lines.append)
        return doc, "\n".join(lines)

    return run


# ------------------------------------------------------------------- user and worker
def _read_only_inputs(submission: Path, input_data: Path) -> list[Path]:
    """The folders a separate runner reads: submission, input data, local checkpoints."""
    sources = {Path(ck.source) for m in load_manifest(input_data).models
               for ck in m.checkpoints if not ck.source.startswith("hf://")}
    return [submission.resolve(), input_data.resolve(), *sorted(sources)]


def _driver_args(submission, input_data, output, limits, doc_path) -> list[str]:
    return [str(DRIVER), str(submission), str(input_data), str(output),
            json.dumps(dataclasses.asdict(limits)), str(doc_path)]


def _runner_env(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    """What a separate runner's environment adds: the test's variables, the repo first on
    PYTHONPATH, no bytecode writes, and torch's compile cache out of TMPDIR (importing
    torch._dynamo, as loading a model does, makes it there; the root profile's process
    made it before the test redirected its temp dir)."""
    return {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
            "TORCHINDUCTOR_CACHE_DIR": str(workdir / "torch-cache"), **env}


def _finish(doc_path: Path, code: int | None, stdout: str, stderr: str) -> tuple[dict, str]:
    """The driver's document and everything the runner printed; a driver that crashed
    fails the test with its stderr."""
    if code != 0 or not doc_path.is_file():
        pytest.fail(f"the profile driver exited with {code}; stderr tail:\n{stderr[-3000:]}")
    return json.loads(doc_path.read_text()), stdout + stderr


def _allow_search(path: Path) -> None:
    """Let others traverse every folder above `path` (pytest's base temp is 0700)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _share_read(path: Path) -> None:
    """World-readable (and folders searchable) from `path` down, reachable from /."""
    _allow_search(path.parent)
    for p in [path, *path.rglob("*")]:
        if p.is_symlink():
            continue
        extra = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
        mode = p.stat().st_mode
        if stat.S_IMODE(mode) & extra != extra:
            p.chmod(stat.S_IMODE(mode) | extra)


def _give_to_nobody(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


def _closed_ancestor(path: Path) -> Path | None:
    """The highest folder above `path` that others cannot search, if any."""
    closed = [p for p in path.parents if not p.stat().st_mode & stat.S_IXOTH]
    return closed[-1] if closed else None


# Inside a private mount namespace: a searchable tmpfs over the closed folder (root's
# home, 0700) with only the interpreter's subtree bound back in; then the command.
_REOPEN = ('set -e; keep=$(mktemp -d); mount --bind "$2" "$keep"; '
           'mount -t tmpfs -o mode=0711 e2lmc-profile "$1"; mkdir -p "$2"; '
           'mount --move "$keep" "$2"; rmdir "$keep"; shift 2; exec "$@"')


def as_nobody(argv: list[str]) -> list[str]:
    """`argv` as uid/gid 65534 without capabilities. Where this interpreter lives under a
    folder others cannot search (a pyenv in /root), that folder is replaced, in a mount
    namespace of the command's own, by one holding just the interpreter's tree: nothing
    on the host changes and the rest of root's home stays out of reach."""
    closed = _closed_ancestor(Path(sys.executable).resolve())
    if closed is None:
        return [*SETPRIV, *argv]
    keep = closed / Path(sys.executable).resolve().relative_to(closed).parts[0]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _REOPEN, "sh",
            str(closed), str(keep), *SETPRIV, *argv]


def user_unavailable() -> str | None:
    """Why the `user` profile cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root, so the tests cannot switch to uid 65534"
    if shutil.which("setpriv") is None:
        return "no setpriv (util-linux) to switch to uid 65534"
    if _closed_ancestor(Path(sys.executable).resolve()) and shutil.which("unshare") is None:
        return f"{sys.executable} is out of uid {NOBODY}'s reach and there is no unshare"
    return None


_user_probe: dict[str, str | None] = {}
# The interpreter must find its own standard library (not a fallback) and e2lmc.
USER_PROBE = ("import os, sys, e2lmc.ingestion.run; "
              "assert os.__file__.startswith(sys.base_prefix), (os.__file__, sys.base_prefix)")


def _probe_user(env: dict[str, str]) -> str | None:
    """Whether uid 65534 can start the driver's interpreter and import what it needs
    (once per session); the reason when not."""
    if "result" not in _user_probe:
        _allow_search(Path(sys.executable).parent)
        _allow_search(REPO)
        proc = subprocess.run(as_nobody([sys.executable, "-c", USER_PROBE]), env=env,
                              capture_output=True, text=True, timeout=120)
        _user_probe["result"] = (None if proc.returncode == 0 else
                                 f"uid {NOBODY} cannot run e2lmc with {sys.executable} "
                                 f"from {REPO}: {proc.stderr.strip()[-500:]}")
    return _user_probe["result"]


def user_runner(workdir: Path) -> Runner:
    """tests/profile_driver.py as uid/gid 65534 with no capabilities. `workdir` (the
    test's tmp_path, holding the output and scratch) is handed to that user, so that a
    write next to the output is stopped by the sandbox, not by file permissions."""

    def run(submission, input_data, output, limits, env):
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        full_env = {**os.environ, **_runner_env(workdir, env), "HOME": str(home)}
        reason = _probe_user(full_env)
        if reason:
            cannot_run("user", reason)
        for path in _read_only_inputs(submission, input_data):
            _share_read(path)
        output.mkdir(parents=True, exist_ok=True)
        _allow_search(workdir)
        _give_to_nobody(workdir)
        doc_path = workdir / "profile-doc.json"
        argv = [sys.executable, *_driver_args(submission, input_data, output, limits, doc_path)]
        proc = subprocess.run(as_nobody(argv), env=full_env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, cwd=workdir)
        return _finish(doc_path, proc.returncode, proc.stdout, proc.stderr)

    return run


# ----------------------------------------------------------------------------- worker
def docker_client():
    """A docker SDK client with a live engine; the reason as a string when there is none."""
    try:
        import docker
    except ImportError:
        return None, "the docker Python package is not installed"
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no socket, permission denied, daemon down
        return None, f"no usable Docker engine ({type(exc).__name__}: {exc})"
    return client, None


def _timed(label: str, timings: dict[str, float], fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    timings[label] = round(time.monotonic() - start, 1)
    return out


def build_image() -> str:
    """The e2lmc image from a debootstrapped base (docker/README.md, offline build), or a
    skip with the reason. Cached layers make a rebuild take seconds; from nothing it takes
    about 3 minutes here (base ~55 s, wheels ~10 s, image ~110 s)."""
    client, reason = docker_client()
    if client is None:
        cannot_run("worker", reason)
    timings: dict[str, float] = {}
    have_base = any(BASE_TAG in (img.tags or []) for img in client.images.list())
    if not have_base and shutil.which("debootstrap") is None:
        cannot_run("worker", "no base image and no debootstrap to make one "
                             "(apt-get install debootstrap)")
    _timed("base", timings, subprocess.run, ["bash", str(REPO / "docker" / "bootstrap_base.sh"),
                                             BASE_TAG], check=True)
    if not (list(Path("/opt/wheels").glob(CPU_TORCH))
            or list((REPO / "docker" / "wheels").glob(CPU_TORCH))):
        cannot_run("worker", "no torch-2.13.0+cpu wheel in /opt/wheels or docker/wheels (the "
                             "tests never download a CUDA build)")
    env = {**os.environ, "CPU_TORCH": "1", "PYTHON": sys.executable}
    _timed("wheels", timings, subprocess.run, ["bash", str(REPO / "docker" / "fetch_wheels.sh")],
           check=True, env=env)
    _timed("image", timings, client.images.build, path=str(REPO), dockerfile="docker/Dockerfile",
           buildargs={"BASE_IMAGE": BASE_TAG}, tag=IMAGE_TAG, rm=True, forcerm=True)
    print(f"\ndocker build timings (s): {timings}", file=sys.stderr)
    return IMAGE_TAG


def worker_runner(workdir: Path, image: str) -> Runner:
    """tests/profile_driver.py in a container with the compute worker's settings. Host
    paths keep their names inside: the repo and the inputs read-only, `workdir` (the
    test's tmp_path) read-write."""
    import requests

    def run(submission, input_data, output, limits, env):
        client, reason = docker_client()
        if client is None:
            cannot_run("worker", reason)
        volumes = {str(p): {"bind": str(p), "mode": "ro"}
                   for p in [REPO, *_read_only_inputs(submission, input_data)]
                   if workdir.resolve() not in [p, *p.parents]}
        volumes[str(workdir.resolve())] = {"bind": str(workdir.resolve()), "mode": "rw"}
        output.mkdir(parents=True, exist_ok=True)
        doc_path = workdir / "profile-doc.json"
        environment = {"PYTHONUNBUFFERED": "1",
                       **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
                       **_runner_env(workdir, env)}
        container = client.containers.create(
            image, command=["python3", *_driver_args(submission, input_data, output, limits,
                                                     doc_path)],
            working_dir=str(workdir.resolve()), volumes=volumes, environment=environment,
            detach=True, **worker_hardening(network=True))
        try:
            container.start()
            try:
                code = int(container.wait(timeout=RUN_TIMEOUT)["StatusCode"])
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.kill()
                code = None
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)
        return _finish(doc_path, code, stdout, stderr)

    return run
