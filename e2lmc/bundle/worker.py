"""`e2lmc run-local`: run one submission the way a Codabench compute worker does.

Followed from codalab/codabench compute_worker/compute_worker.py (`Run.start`,
`Run._run_program_directory`, `Run.push_output`) and the site's `_send_to_compute_worker`
(src/apps/competitions/tasks.py). Two steps, each a separate run under its own time limit:

1. prediction: the ingestion program's container mounts `/app/program` (the ingestion
   program), `/app/ingested_program` (the submission, unzipped as-is), `/app/input_data`,
   `/app/output`, `/app/data` (read-only). When the submission's own metadata carries a
   `command`, the worker starts it at the same time in a second container: the submission
   as `/app/program`, the same `/app/output` and `/app/input_data`, `/app/data`
   read-only. A submission with no metadata file at all is copied into `/app/output`
   first. The worker then writes `metadata` (exitCode: the submission program's, null
   when none ran; elapsedTime; ingestionExitCode; ingestionElapsedTime) into the output;
2. scoring: `/app/program` (scoring program), `/app/input/ref` (reference data),
   `/app/input/res` (the prediction output), `/app/output`, `/app/shared`, `/app/data`.

Each command is split like the worker splits it (its legacy `$output`-style names
replaced, then shlex, no shell) and runs from `/app/program`. Docker mode gives every
container the worker's own settings: mount modes ("z" for program and output, "ro" for
data, read-write for the rest), its `cap_drop` list (WORKER_CAP_DROP, Docker's whole
default set), `no-new-privileges`, the host's user namespace, Docker's default seccomp
profile, the environment `PYTHONUNBUFFERED=1` plus `http_proxy`/`https_proxy` (empty
unless COMPETITION_CONTAINER_HTTP(S)_PROXY is set, as on the worker), network on unless
`network=False`, and a GPU request when asked. In-process mode runs the command as a
subprocess of this Python with `E2LMC_APP_ROOT` pointing at the laid-out folder instead
of `/app`; the few host variables it keeps are listed in HOST_ENV (paths, locale, caches,
offline switches: never tokens or keys); it never runs a submission's own command (that
would run participant code on this machine unconfined): use Docker mode for those.

As on the platform, a failed prediction step does not stop the run (the scoring program
must notice it and fail itself), while a step still running at the time limit ends the
run: the worker removes its containers, uploads nothing and fails the submission.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2lmc import signing
from e2lmc.bundle import timing
from e2lmc.bundle.layout import (COMPETITION_YAML, as_list, copy_clean, default_root,
                                 extract_zip, find_task, install_judge_key, load_competition,
                                 vendor_package)
from e2lmc.errors import UserError

WORKER_ENV = {"PYTHONUNBUFFERED": "1"}
# The compute worker's container settings, as in codalab/codabench
# compute_worker/compute_worker.py (`_run_program_directory`: cap_drop_list, security_opt
# ["no-new-privileges"] under Docker, userns_mode "host"; no seccomp option, so Docker's
# default profile). The tests' `worker` profile (tests/profiles.py) uses the same settings.
WORKER_CAP_DROP = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                   "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                   "SYS_CHROOT")
# Its bind modes: "z" (read-write, SELinux label shared) for /app/program and /app/output,
# "ro" for /app/data, none (read-write) for every other folder.
SHARED_RW, READ_ONLY, READ_WRITE = "z", "ro", "rw"
# In-process mode only: what a subprocess needs to find programs, caches and locales.
HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HF_HOME", "HF_HUB_CACHE",
            "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
            "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "http_proxy", "https_proxy",
            "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
APP_ROOT_ENV = "E2LMC_APP_ROOT"
CONTAINER_APP = "/app"
LOCAL_WEIGHTS = "/app/local_weights"  # where run-local mounts manifest-local checkpoints
METADATA = "metadata"
SCORES_JSON = "scores.json"
REPORT_HTML = "detailed_results.html"
# target -> (host folder, bind mode)
Mounts = dict[str, tuple[Path, str]]


@dataclass
class StepResult:
    name: str
    exit_code: int | None
    elapsed_s: float
    stdout: Path
    stderr: Path


@dataclass
class Step:
    """One container of a step: the logs' name, the argv, the folders it mounts."""

    name: str
    argv: list[str]
    mounts: Mounts


@dataclass
class RunResult:
    workdir: Path
    prediction: StepResult
    scoring: StepResult
    scores: dict[str, float]
    leaderboard: dict[str, float]
    dropped_keys: list[str] = field(default_factory=list)
    submission: StepResult | None = None  # the submission's own command, when it has one


# -- layout ---------------------------------------------------------------------------
def _resolve_bundle(bundle: str | Path | None, workdir: Path) -> Path:
    """A bundle folder: the given folder, an extracted zip, or this checkout."""
    if bundle is None or (str(bundle) == "." and not (Path.cwd() / COMPETITION_YAML).is_file()):
        return default_root()
    path = Path(bundle)
    if path.is_dir():
        return path
    if path.is_file():
        return extract_zip(path, workdir / "bundle")
    raise UserError(f"{path}: no such bundle; pass the bundle folder or zip")


def _program_copy(src: Path, dst: Path) -> None:
    """The program folder as Codabench sees it: a built bundle's copy already carries
    e2lmc; a checkout's program folder gets one, as `e2lmc bundle build` would add."""
    if not (src / "metadata.yaml").is_file() and not (src / METADATA).is_file():
        raise UserError(f"{src}: no metadata.yaml; a program folder needs one with `command:`")
    copy_clean(src, dst)
    if not (dst / "e2lmc").is_dir():
        vendor_package(dst)


def worker_argv(command: str, kind: str, is_scoring: bool) -> list[str]:
    """A metadata `command` as the worker runs it: its legacy names replaced by /app paths
    in the worker's order (`replace_legacy_metadata_command`; `kind` is "ingestion" or
    "program"), then split by docker-py's `split_command` (shlex), never by a shell."""
    names = (("$input", "/app/input_data" if kind == "ingestion" else "/app/input"),
             ("$output", "/app/output"), ("$program", "/app/program"),
             ("$ingestion_program", "/app/program"), ("$hidden", "/app/input/ref"),
             ("$shared", "/app/shared"), ("$submission_program", "/app/ingested_program"),
             ("$tmp", "/app/output"),
             ("$predictions", "/app/input/res" if is_scoring else "/app/output"))
    for name, path in names:
        command = command.replace(name, path)
    return shlex.split(command)


def _read_command(program: Path, kind: str, is_scoring: bool) -> list[str]:
    meta = program / "metadata.yaml"
    if not meta.is_file():
        meta = program / METADATA
    try:
        doc = yaml.safe_load(meta.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{meta}: not valid YAML ({exc})") from None
    command = doc.get("command") if isinstance(doc, dict) else None
    if not isinstance(command, str) or not command.strip():
        raise UserError(f"{meta}: no `command:`; the worker needs the command to run")
    try:
        return worker_argv(command, kind, is_scoring)
    except ValueError as exc:
        raise UserError(f"{meta}: command {command!r} cannot be split ({exc})") from None


def _submission_command(folder: Path) -> tuple[bool, str | None]:
    """As the worker reads an unzipped submission: (whether it has a metadata file,
    metadata.yaml else metadata; its `command`). Unreadable YAML means no command."""
    for name in ("metadata.yaml", METADATA):
        path = folder / name
        if path.exists():
            try:
                doc = yaml.safe_load(path.read_text())
            except (yaml.YAMLError, UnicodeDecodeError, OSError):
                return True, None
            command = doc.get("command") if isinstance(doc, dict) else None
            return True, command if isinstance(command, str) and command else None
    return False, None


def _unzip_submission(submission: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if submission.is_dir():  # convenience: a folder stands for its zip
        copy_clean(submission, dest)
    elif submission.is_file():
        extract_zip(submission, dest)
    else:
        raise UserError(f"{submission}: submission not found; pass the submission zip")


def _stage_manifest(src: Path, dst: Path, docker: bool,
                    limit: float | None) -> list[tuple[Path, str]]:
    """Copy input data; point the manifest's local checkpoint folders at places the
    program can read (absolute host paths, or read-only mounts in Docker mode), and give
    a manifest without a time budget the one that fits `limit`, as `bundle build` does.
    Returns the extra (host path, container path) mounts."""
    if not src.is_dir():
        raise UserError(f"{src}: input data folder not found")
    manifest = src / "manifest.yaml"
    doc = yaml.safe_load(manifest.read_text()) if manifest.is_file() else None
    if not isinstance(doc, dict):
        copy_clean(src, dst)
        return []
    # Checkpoint folders inside the input data are used in place, not copied.
    weights = {str(ref.relative_to(src.resolve())).split(os.sep)[0]
               for ref in (_local(s, src) for s in _sources(doc)) if ref is not None
               and src.resolve() in ref.parents}
    copy_clean(src, dst, extra_ignore=tuple(weights))
    mounts: dict[Path, str] = {}

    def relocate(source: Any) -> Any:
        host = _local(source, src)
        if host is None:
            return source
        if not docker:
            return str(host)
        if host not in mounts:
            mounts[host] = f"{LOCAL_WEIGHTS}/{len(mounts)}"
        return mounts[host]

    for model in as_list(doc.get("models")):
        if isinstance(model, dict):
            if "source" in model:
                model["source"] = relocate(model["source"])
            for ckpt in as_list(model.get("checkpoints")):
                if isinstance(ckpt, dict) and "source" in ckpt:
                    ckpt["source"] = relocate(ckpt["source"])
    if limit is not None:
        timing.fill_budget(doc, limit)
    (dst / "manifest.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return list(mounts.items())


def _sources(doc: dict[str, Any]) -> list[Any]:
    out = []
    for model in as_list(doc.get("models")):
        if isinstance(model, dict):
            out.append(model.get("source"))
            out += [c.get("source") for c in as_list(model.get("checkpoints"))
                    if isinstance(c, dict)]
    return out


def _local(source: Any, base: Path) -> Path | None:
    """The host folder of a manifest source, None for hub or worker-staged sources."""
    if not isinstance(source, str) or source.startswith(("hf://", CONTAINER_APP + "/")):
        return None
    return Path(source) if Path(source).is_absolute() else (base / source).resolve()


def _run_key(*folders: Path | None) -> bytes:
    """The signing key both steps share, as in a built bundle: the first of the folders'
    signing.key, else a fresh one for this run (Docker mode's containers share no home,
    so the per-user key would differ between the steps)."""
    for folder in folders:
        if folder is not None and (folder / signing.KEY_NAME).is_file():
            return signing.load_key(folder)
    return signing.new_key()


def _give_key(folder: Path, key: bytes) -> None:
    if not (folder / signing.KEY_NAME).is_file():
        signing.write_key(folder / signing.KEY_NAME, key)


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    path.chmod(0o777)  # writable for whatever user the program runs as
    return path


def _write_worker_metadata(output: Path, exit_code: int | None, elapsed: float | None,
                           ingestion_exit: int | None, ingestion_elapsed: float | None) -> None:
    """The worker's `metadata` file (it fails the run if a program wrote one itself)."""
    path = output / METADATA
    if path.exists():
        raise UserError(f"{path}: the program wrote a file named `metadata` to its output; "
                        "Codabench reserves that name and fails the submission")
    path.write_text(yaml.dump({"exitCode": exit_code, "elapsedTime": elapsed,
                               "ingestionExitCode": ingestion_exit,
                               "ingestionElapsedTime": ingestion_elapsed},
                              default_flow_style=False))


def _check_time_limit(step: str, results: list[StepResult], timeout: float | None,
                      logs: Path) -> None:
    """A container still running at the limit fails the whole run, as on the platform."""
    late = [r.name for r in results if r.exit_code is None]
    if late:
        after = "" if step == "scoring" else "; scoring does not run"
        raise UserError(f"{step} step: Execution Time Limit exceeded ({timeout:g} s; still "
                        f"running: {', '.join(late)}). On Codabench the worker removes the "
                        "containers, uploads nothing and marks the submission Failed" + after +
                        f". The ingestion's time budget (manifest defaults.time_budget_s) must "
                        f"end it first. Logs in {logs}")


# -- runners --------------------------------------------------------------------------
def worker_hardening(network: bool = True) -> dict[str, Any]:
    """The docker SDK arguments that reproduce the compute worker's container settings."""
    return {"cap_drop": list(WORKER_CAP_DROP), "security_opt": ["no-new-privileges"],
            "userns_mode": "host", "network_disabled": not network}


def worker_environment() -> dict[str, str]:
    """The environment the worker gives every container: PYTHONUNBUFFERED=1 and its
    COMPETITION_CONTAINER_HTTP(S)_PROXY settings as http(s)_proxy, empty when unset."""
    return {"PYTHONUNBUFFERED": "1",
            "http_proxy": os.environ.get("COMPETITION_CONTAINER_HTTP_PROXY", ""),
            "https_proxy": os.environ.get("COMPETITION_CONTAINER_HTTPS_PROXY", "")}


def _wait_all(waits: list[Any], timeout: float | None) -> list[tuple[int | None, float]]:
    """Wait for a step's processes together, as the worker gathers its containers under
    one alarm: per process, (exit code or None when the limit ran out, seconds)."""
    start = time.monotonic()

    def one(wait: Any) -> tuple[int | None, float]:
        code = wait(timeout)
        return code, time.monotonic() - start

    with ThreadPoolExecutor(max_workers=len(waits)) as pool:
        return list(pool.map(one, waits))


def _note_kill(result: StepResult, timeout: float | None) -> None:
    if result.exit_code is None:
        with result.stderr.open("a") as fe:
            fe.write(f"\nrun-local: killed after {timeout} s (execution time limit)\n")


class InProcessRunner:
    """Runs programs as subprocesses of this interpreter, with E2LMC_APP_ROOT set."""

    def __init__(self, app: Path, extra_env: dict[str, str]) -> None:
        self.app = app
        self.extra_env = extra_env

    def _argv(self, argv: list[str]) -> list[str]:
        if argv[0] in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]  # the interpreter that has e2lmc's deps
        root = str(self.app)
        return [root + a[len(CONTAINER_APP):] if a == CONTAINER_APP
                or a.startswith(CONTAINER_APP + "/") else a for a in argv]

    def run(self, steps: list[Step], logs: Path, timeout: float | None) -> list[StepResult]:
        env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
        env.update(WORKER_ENV)
        env.update(self.extra_env)
        env[APP_ROOT_ENV] = str(self.app)
        procs, files = [], []
        try:
            for step in steps:
                out = (logs / f"{step.name}.stdout.txt").open("wb")
                err = (logs / f"{step.name}.stderr.txt").open("wb")
                files += [out, err]
                argv = self._argv(step.argv)
                try:  # its own session: the time limit kills what it started, too
                    procs.append(subprocess.Popen(argv, cwd=self.app / "program", env=env,
                                                  stdout=out, stderr=err,
                                                  start_new_session=True))
                except FileNotFoundError:
                    raise UserError(f"{step.name}: command {argv[0]!r} not found on this "
                                    "machine") from None

            def waiter(proc: subprocess.Popen) -> Any:
                def wait(limit: float | None) -> int | None:
                    try:
                        return proc.wait(timeout=limit)
                    except subprocess.TimeoutExpired:
                        return None
                return wait

            outcomes = _wait_all([waiter(p) for p in procs], timeout)
        finally:  # a container's end ends every process in it: so does its session's
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            for f in files:
                f.close()
        results = [StepResult(step.name, code, elapsed, logs / f"{step.name}.stdout.txt",
                              logs / f"{step.name}.stderr.txt")
                   for step, (code, elapsed) in zip(steps, outcomes)]
        for r in results:
            _note_kill(r, timeout)
        return results


class DockerRunner:
    """Runs programs in containers through the docker SDK, as the worker does."""

    def __init__(self, image: str, gpus: bool, network: bool, user: str | None,
                 extra_env: dict[str, str]) -> None:
        try:
            import docker
        except ImportError:
            raise UserError("Docker mode needs the `docker` Python package: "
                            "pip install docker") from None
        try:
            self.client = docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise UserError(f"cannot reach the Docker engine ({exc}); start dockerd or run "
                            "without --docker") from None
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise UserError(f"image {image!r} not found locally; build it (docker/README.md) "
                            "or docker pull it") from None
        self.docker = docker
        self.image, self.gpus, self.network, self.user = image, gpus, network, user
        self.extra_env = extra_env

    def _create(self, step: Step) -> Any:
        volumes = {str(host.resolve()): {"bind": target, "mode": mode}
                   for target, (host, mode) in step.mounts.items()}
        kwargs: dict[str, Any] = {}
        if self.gpus:
            kwargs["device_requests"] = [self.docker.types.DeviceRequest(
                count=-1, capabilities=[["gpu"]])]
        if self.user:
            kwargs["user"] = self.user
        return self.client.containers.create(
            self.image, command=step.argv, working_dir="/app/program", volumes=volumes,
            environment={**worker_environment(), **self.extra_env}, detach=True,
            **worker_hardening(self.network), **kwargs)

    def run(self, steps: list[Step], logs: Path, timeout: float | None) -> list[StepResult]:
        import requests

        def waiter(container: Any) -> Any:
            def wait(limit: float | None) -> int | None:
                try:
                    return int(container.wait(timeout=limit)["StatusCode"])
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    return None  # the time limit ran out
            return wait

        containers: list[Any] = []
        try:
            for step in steps:
                containers.append(self._create(step))
            for container in containers:
                container.start()
            outcomes = _wait_all([waiter(c) for c in containers], timeout)
            for container, (code, _) in zip(containers, outcomes):
                if code is None:
                    try:
                        container.kill()
                    except self.docker.errors.APIError:
                        pass  # it ended between the time-out and the kill
            results = []
            for step, container, (code, elapsed) in zip(steps, containers, outcomes):
                out, err = logs / f"{step.name}.stdout.txt", logs / f"{step.name}.stderr.txt"
                out.write_bytes(container.logs(stdout=True, stderr=False))
                err.write_bytes(container.logs(stdout=False, stderr=True))
                results.append(StepResult(step.name, code, elapsed, out, err))
        finally:
            for container in containers:
                container.remove(force=True)
        for r in results:
            _note_kill(r, timeout)
        return results


# -- the run --------------------------------------------------------------------------
def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").rstrip().splitlines() if path.is_file() else []
    return "\n".join(text[-lines:])


def _leaderboard_keys(doc: dict[str, Any]) -> list[str]:
    boards = as_list(doc.get("leaderboards"))
    if not boards or not isinstance(boards[0], dict):
        return []
    return [c["key"] for c in as_list(boards[0].get("columns"))
            if isinstance(c, dict) and "key" in c and "computation" not in c]


def _predict(runner: InProcessRunner | DockerRunner, app: Path, logs: Path,
             data_dir: Path, weights: list[tuple[Path, str]], timeout: float | None,
             docker: bool) -> tuple[StepResult, StepResult | None]:
    """The prediction step: the ingestion, and beside it the submission's own command
    when it has one; then the worker's `metadata` file."""
    submission = app / "ingested_program"
    has_metadata, command = _submission_command(submission)
    if not has_metadata:  # the worker copies such a submission into the output
        shutil.copytree(submission, app / "output", dirs_exist_ok=True)
    mounts: Mounts = {"/app/program": (app / "program", SHARED_RW),
                      "/app/output": (app / "output", SHARED_RW),
                      "/app/data": (data_dir, READ_ONLY),
                      "/app/ingested_program": (submission, READ_WRITE),
                      "/app/input_data": (app / "input_data", READ_WRITE)}
    mounts.update({target: (host, READ_ONLY) for host, target in weights})
    steps = [Step("ingestion", _read_command(app / "program", "ingestion", False), mounts)]
    if command:
        if not docker:
            raise UserError("the submission's metadata carries a `command`: Codabench runs it "
                            "in a second container beside the ingestion, with write access "
                            "to its output (and the scoring program then refuses the run). "
                            "run-local runs participant commands only in a container: pass "
                            "--docker IMAGE")
        steps.append(Step("submission", worker_argv(command, "program", False), {
            "/app/program": (submission, SHARED_RW), "/app/output": (app / "output", SHARED_RW),
            "/app/data": (data_dir, READ_ONLY),
            "/app/input_data": (app / "input_data", READ_WRITE)}))
    results = runner.run(steps, logs, timeout)
    _check_time_limit("prediction", results, timeout, logs)
    ingestion, program = results[0], (results[1] if command else None)
    _write_worker_metadata(app / "output", program.exit_code if program else None,
                           program.elapsed_s if program else ingestion.elapsed_s,
                           ingestion.exit_code, ingestion.elapsed_s)
    return ingestion, program


def _score(runner: InProcessRunner | DockerRunner, app: Path, logs: Path, data_dir: Path,
           timeout: float | None) -> StepResult:
    """The scoring step; a failed scoring program fails the submission (no metadata)."""
    mounts: Mounts = {"/app/program": (app / "program", SHARED_RW),
                      "/app/output": (app / "output", SHARED_RW),
                      "/app/data": (data_dir, READ_ONLY),
                      "/app/shared": (app / "shared", READ_WRITE),
                      "/app/input": (app / "input", READ_WRITE)}
    [scoring] = runner.run([Step("scoring", _read_command(app / "program", "program", True),
                                 mounts)], logs, timeout)
    _check_time_limit("scoring", [scoring], timeout, logs)
    if scoring.exit_code != 0:
        raise UserError(f"scoring program failed (exit status {scoring.exit_code}); the "
                        f"submission would be marked Failed. Logs in {logs}. Last lines of "
                        f"its stderr:\n{_tail(scoring.stderr)}")
    _write_worker_metadata(app / "output", scoring.exit_code, scoring.elapsed_s, None, None)
    return scoring


def run_local(submission: str | Path, task: str, bundle: str | Path | None = None,
              docker_image: str | None = None, gpus: bool = False,
              workdir: str | Path | None = None, input_data: str | Path | None = None,
              ref: str | Path | None = None, data: str | Path | None = None,
              judge_key_file: str | Path | None = None, timeout: float | None = None,
              network: bool = True, user: str | None = None,
              env: dict[str, str] | None = None) -> RunResult:
    """Run prediction then scoring for one submission; returns the scores. `timeout`
    (seconds per step) defaults to the platform's: the shortest execution_time_limit of
    the task's phases, capped at 600 s when competition.yaml names no queue."""
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="e2lmc-run-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    root = _resolve_bundle(bundle, work)
    doc = load_competition(root)
    entry = find_task(doc, task)
    if timeout is None:
        timeout = timing.task_limit(doc, entry)
    for key in ("ingestion_program", "scoring_program"):
        if not isinstance(entry.get(key), str):
            raise UserError(f"{root / COMPETITION_YAML}: task {task!r} has no {key}")
    input_src = Path(input_data) if input_data else (
        root / entry["input_data"] if entry.get("input_data") else None)
    ref_src = Path(ref) if ref else (
        root / entry["reference_data"] if entry.get("reference_data") else None)
    extra_env = dict(env or {})
    runner: InProcessRunner | DockerRunner
    app = work / "app"
    docker = docker_image is not None
    runner = (DockerRunner(docker_image, gpus, network, user, extra_env) if docker_image
              else InProcessRunner(app, extra_env))
    logs = _fresh_dir(work / "logs")

    # Prediction step.
    _fresh_dir(app)
    _program_copy(root / entry["ingestion_program"], app / "program")
    _unzip_submission(Path(submission), app / "ingested_program")
    weight_mounts: list[tuple[Path, str]] = []
    if input_src is not None:
        weight_mounts = _stage_manifest(input_src, app / "input_data", docker, timeout)
    else:
        (app / "input_data").mkdir()
    key = _run_key(app / "input_data", ref_src)
    _give_key(app / "input_data", key)
    _fresh_dir(app / "output")
    data_dir = _link_data(app / "data", Path(data) if data else None, docker)
    prediction, program = _predict(runner, app, logs, data_dir, weight_mounts, timeout, docker)

    # Scoring step: the prediction output becomes input/res; prediction-only folders go.
    done = _fresh_dir(work / "prediction")
    for sub in ("program", "ingested_program", "input_data"):
        shutil.move(str(app / sub), str(done / sub))
    (app / "input").mkdir()
    shutil.move(str(app / "output"), str(app / "input" / "res"))
    (app / "input" / "ref").mkdir()
    if ref_src is not None:
        if not ref_src.is_dir():
            raise UserError(f"{ref_src}: reference data folder not found")
        copy_clean(ref_src, app / "input" / "ref")
    _give_key(app / "input" / "ref", key)
    if judge_key_file:
        install_judge_key(app / "input" / "ref", Path(judge_key_file))
    _program_copy(root / entry["scoring_program"], app / "program")
    _fresh_dir(app / "output")
    _fresh_dir(app / "shared")
    scoring = _score(runner, app, logs, data_dir, timeout)
    scores = _read_scores(app / "output" / SCORES_JSON)
    keys = _leaderboard_keys(doc)
    board = {k: scores[k] for k in keys if k in scores}
    dropped = [k for k in scores if k not in keys]
    return RunResult(work, prediction, scoring, scores, board, dropped, program)


def _link_data(target: Path, data: Path | None, docker: bool) -> Path:
    """The worker's /app/data: the given folder (mounted read-only), else an empty one."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    if data is None:
        target.mkdir(parents=True)
        return target
    if not data.is_dir():
        raise UserError(f"{data}: data folder not found")
    if docker:
        return data.resolve()
    target.symlink_to(data.resolve(), target_is_directory=True)
    return target


def _read_scores(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise UserError(f"{path}: the scoring program wrote no scores.json; the submission "
                        "would get no leaderboard entry")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a flat JSON object of scores")
    bad = {k: v for k, v in raw.items() if isinstance(v, bool)
           or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) >= 1e10}
    if bad:
        raise UserError(f"{path}: Codabench needs finite numbers below 1e10; got {bad}")
    return {k: float(v) for k, v in raw.items()}


def _parse_env(items: list[str] | None) -> dict[str, str]:
    env = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--env {item!r}: use KEY=VALUE")
        env[key] = value
    return env


def cli_run_local(args: argparse.Namespace) -> int:
    result = run_local(
        args.submission, args.task, bundle=args.bundle, docker_image=args.docker,
        gpus=args.gpus, workdir=args.workdir, input_data=args.input_data, ref=args.ref,
        data=getattr(args, "data", None), judge_key_file=getattr(args, "judge_key_file", None),
        timeout=getattr(args, "timeout", None), network=not getattr(args, "no_network", False),
        user=getattr(args, "user", None), env=_parse_env(getattr(args, "env", None)))
    steps = [result.prediction, *([result.submission] if result.submission else []),
             result.scoring]
    for step in steps:
        code = "killed (time limit)" if step.exit_code is None else f"exit {step.exit_code}"
        print(f"{step.name}: {code} in {step.elapsed_s:.1f} s (logs: {step.stdout.parent})",
              file=sys.stderr)
    if result.dropped_keys:
        print(f"note: Codabench drops score keys without a leaderboard column: "
              f"{result.dropped_keys}", file=sys.stderr)
    report = result.workdir / "app" / "output" / REPORT_HTML
    if report.is_file():
        print(f"detailed results: {report}", file=sys.stderr)
    print(json.dumps(result.leaderboard, indent=2))
    return 0
