"""`e2lmc run-local`: run one submission the way a Codabench compute worker does.

Two steps, as on the platform:

1. prediction: `/app/program` (ingestion program), `/app/ingested_program` (the submission,
   unzipped as-is), `/app/input_data`, `/app/output`, `/app/data` (read-only);
2. scoring: `/app/program` (scoring program), `/app/input/ref` (reference data),
   `/app/input/res` (the prediction output plus the worker's `metadata` file with
   `ingestionExitCode`), `/app/output`, `/app/shared`.

Each program's metadata.yaml `command` runs without a shell, from `/app/program`, with only
`PYTHONUNBUFFERED=1` set, like the worker. Docker mode mounts the same folders into the
image with the worker's own container settings (`worker_hardening`): root, the worker's
explicit `cap_drop` list (WORKER_CAP_DROP, which is Docker's whole default set, so nothing
is left), `no-new-privileges`, the host's user namespace, Docker's default seccomp profile,
network on unless `network=False`, and a GPU request when asked. In-process mode runs the
command as a subprocess of this Python with `E2LMC_APP_ROOT` pointing at the laid-out
folder instead of `/app`; the few host variables it keeps are listed in HOST_ENV (paths,
locale, caches, offline switches: never tokens or keys).

Like the worker, a failed prediction step does not stop the run: the scoring program must
notice it (from `ingestionExitCode` or the ingestion output) and fail itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2lmc import signing
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


@dataclass
class StepResult:
    name: str
    exit_code: int | None
    elapsed_s: float
    stdout: Path
    stderr: Path


@dataclass
class RunResult:
    workdir: Path
    prediction: StepResult
    scoring: StepResult
    scores: dict[str, float]
    leaderboard: dict[str, float]
    dropped_keys: list[str] = field(default_factory=list)


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


def _read_command(program: Path) -> list[str]:
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
        return shlex.split(command)
    except ValueError as exc:
        raise UserError(f"{meta}: command {command!r} cannot be split ({exc})") from None


def _unzip_submission(submission: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if submission.is_dir():  # convenience: a folder stands for its zip
        copy_clean(submission, dest)
    elif submission.is_file():
        extract_zip(submission, dest)
    else:
        raise UserError(f"{submission}: submission not found; pass the submission zip")


def _stage_manifest(src: Path, dst: Path, docker: bool) -> list[tuple[Path, str]]:
    """Copy input data; point the manifest's local checkpoint folders at places the
    program can read (absolute host paths, or read-only mounts in Docker mode).
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


def _write_worker_metadata(output: Path, exit_code: int | None, elapsed: float,
                           ingestion_exit: int | None, ingestion_elapsed: float | None) -> None:
    """The worker's `metadata` file (it fails the run if the program wrote one itself)."""
    path = output / METADATA
    if path.exists():
        raise UserError(f"{path}: the program wrote a file named `metadata` to its output; "
                        "Codabench reserves that name and fails the submission")
    path.write_text(yaml.dump({"exitCode": exit_code, "elapsedTime": elapsed,
                               "ingestionExitCode": ingestion_exit,
                               "ingestionElapsedTime": ingestion_elapsed},
                              default_flow_style=False))


# -- runners --------------------------------------------------------------------------
def worker_hardening(network: bool = True) -> dict[str, Any]:
    """The docker SDK arguments that reproduce the compute worker's container settings."""
    return {"cap_drop": list(WORKER_CAP_DROP), "security_opt": ["no-new-privileges"],
            "userns_mode": "host", "network_disabled": not network}


class InProcessRunner:
    """Runs a program as a subprocess of this interpreter, with E2LMC_APP_ROOT set."""

    def __init__(self, app: Path, extra_env: dict[str, str]) -> None:
        self.app = app
        self.extra_env = extra_env

    def run(self, name: str, argv: list[str], mounts: dict[str, Path],
            logs: Path, timeout: float | None) -> StepResult:
        if argv[0] in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]  # the interpreter that has e2lmc's deps
        env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
        env.update(WORKER_ENV)
        env.update(self.extra_env)
        env[APP_ROOT_ENV] = str(self.app)
        out, err = logs / f"{name}.stdout.txt", logs / f"{name}.stderr.txt"
        start = time.monotonic()
        with out.open("wb") as fo, err.open("wb") as fe:
            try:
                proc = subprocess.run(argv, cwd=self.app / "program", env=env, stdout=fo,
                                      stderr=fe, timeout=timeout, check=False)
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                fe.write(f"\nrun-local: killed after {timeout} s (execution time limit)\n"
                         .encode())
                code = None
            except FileNotFoundError:
                raise UserError(f"{name}: command {argv[0]!r} not found on this machine") \
                    from None
        return StepResult(name, code, time.monotonic() - start, out, err)


class DockerRunner:
    """Runs a program in a container through the docker SDK, as the worker does."""

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

    def run(self, name: str, argv: list[str], mounts: dict[str, Path],
            logs: Path, timeout: float | None) -> StepResult:
        volumes = {}
        for target, host in mounts.items():
            mode = "ro" if target.startswith(("/app/data", LOCAL_WEIGHTS)) else "rw"
            volumes[str(host.resolve())] = {"bind": target, "mode": mode}
        kwargs: dict[str, Any] = {}
        if self.gpus:
            kwargs["device_requests"] = [self.docker.types.DeviceRequest(
                count=-1, capabilities=[["gpu"]])]
        if self.user:
            kwargs["user"] = self.user
        container = self.client.containers.create(
            self.image, command=argv, working_dir="/app/program", volumes=volumes,
            environment={**WORKER_ENV, **self.extra_env}, detach=True,
            **worker_hardening(self.network), **kwargs)
        out, err = logs / f"{name}.stdout.txt", logs / f"{name}.stderr.txt"
        import requests

        start = time.monotonic()
        code: int | None
        try:
            container.start()
            try:
                code = int(container.wait(timeout=timeout)["StatusCode"])
            except (requests.exceptions.ReadTimeout,
                    requests.exceptions.ConnectionError):  # the time limit ran out
                container.kill()
                code = None
            out.write_bytes(container.logs(stdout=True, stderr=False))
            err.write_bytes(container.logs(stdout=False, stderr=True))
            if code is None:
                with err.open("a") as fe:
                    fe.write(f"\nrun-local: killed after {timeout} s (execution time limit)\n")
        finally:
            container.remove(force=True)
        return StepResult(name, code, time.monotonic() - start, out, err)


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


def run_local(submission: str | Path, task: str, bundle: str | Path | None = None,
              docker_image: str | None = None, gpus: bool = False,
              workdir: str | Path | None = None, input_data: str | Path | None = None,
              ref: str | Path | None = None, data: str | Path | None = None,
              judge_key_file: str | Path | None = None, timeout: float | None = None,
              network: bool = True, user: str | None = None,
              env: dict[str, str] | None = None) -> RunResult:
    """Run prediction then scoring for one submission; returns the scores."""
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="e2lmc-run-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    root = _resolve_bundle(bundle, work)
    doc = load_competition(root)
    entry = find_task(doc, task)
    if timeout is None:
        limits = [p.get("execution_time_limit") for p in as_list(doc.get("phases"))
                  if isinstance(p, dict) and entry.get("index") in as_list(p.get("tasks"))]
        timeout = float(max(limits)) if limits and all(limits) else None
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
    runner = (DockerRunner(docker_image, gpus, network, user, extra_env) if docker_image
              else InProcessRunner(app, extra_env))
    logs = _fresh_dir(work / "logs")

    # Prediction step.
    _fresh_dir(app)
    _program_copy(root / entry["ingestion_program"], app / "program")
    _unzip_submission(Path(submission), app / "ingested_program")
    weight_mounts: list[tuple[Path, str]] = []
    if input_src is not None:
        weight_mounts = _stage_manifest(input_src, app / "input_data", docker_image is not None)
    else:
        (app / "input_data").mkdir()
    key = _run_key(app / "input_data", ref_src)
    _give_key(app / "input_data", key)
    _fresh_dir(app / "output")
    data_dir = _link_data(app / "data", Path(data) if data else None, docker_image is not None)
    mounts = {"/app/program": app / "program", "/app/ingested_program": app / "ingested_program",
              "/app/input_data": app / "input_data", "/app/output": app / "output",
              "/app/data": data_dir}
    mounts.update({target: host for host, target in weight_mounts})
    prediction = runner.run("ingestion", _read_command(app / "program"), mounts, logs, timeout)
    _write_worker_metadata(app / "output", None, prediction.elapsed_s, prediction.exit_code,
                           prediction.elapsed_s)

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
    mounts = {"/app/program": app / "program", "/app/input": app / "input",
              "/app/output": app / "output", "/app/shared": app / "shared", "/app/data": data_dir}
    scoring = runner.run("scoring", _read_command(app / "program"), mounts, logs, timeout)
    if scoring.exit_code != 0:
        status = "timed out" if scoring.exit_code is None else f"exit status {scoring.exit_code}"
        raise UserError(f"scoring program failed ({status}); the submission would be marked "
                        f"Failed. Logs in {logs}. Last lines of its stderr:\n"
                        f"{_tail(scoring.stderr)}")
    _write_worker_metadata(app / "output", scoring.exit_code, scoring.elapsed_s,
                           prediction.exit_code, prediction.elapsed_s)
    scores = _read_scores(app / "output" / SCORES_JSON)
    keys = _leaderboard_keys(doc)
    board = {k: scores[k] for k in keys if k in scores}
    dropped = [k for k in scores if k not in keys]
    return RunResult(work, prediction, scoring, scores, board, dropped)


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
    for step in (result.prediction, result.scoring):
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
