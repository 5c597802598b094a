"""The runner's handle on the task process (see `e2lmc.ingestion.child`).

The runner never imports participant code: it starts the child with a whitelisted
environment (no tokens, keys, manifest or checkpoint paths), talks to it in framed JSON,
and checks every reply's shape and size before using it. The child's stdout/stderr go to a
log file in the work dir that is never echoed (a task could print hidden-checkpoint
metrics); only the runner's own one-line messages reach the logs.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import e2lmc
from e2lmc.errors import UserError
from e2lmc.ingestion import validate, wire
from e2lmc.results import Item

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
NOBODY = 65534
GIB = 1 << 30
CAP_CHOWN, CAP_SETGID, CAP_SETUID = 0, 6, 7


@dataclass
class Limits:
    """Resource caps on the task process. Generous by default; tests tighten them."""

    memory_bytes: int = 16 * GIB  # address space (RLIMIT_AS)
    cpu_seconds: int = 4 * 3600  # RLIMIT_CPU over the whole run
    file_bytes: int = 2 * GIB  # largest file it may write (RLIMIT_FSIZE)
    nproc: int = 512  # processes/threads of the unprivileged user
    prepare_timeout: float = 1800.0  # load tasks + build requests (wall clock)
    score_timeout: float = 600.0  # metrics for one checkpoint (wall clock)
    max_message_bytes: int = GIB
    max_prompt_chars: int = 200_000  # ~ 40k tokens: far above max_length 2048
    max_requests: int = 2_000_000
    drop_privileges: bool = True
    namespaces: bool = True  # network/mount/PID namespaces where the platform allows them


class TaskProcessError(UserError):
    """The submission's task failed inside the task process (a contained failure)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Prepared:
    info: dict[str, Any]
    requests: list[tuple[str, tuple]]
    items: list[Item]


def _has_capabilities(*bits: int) -> bool:
    """Whether this process holds these capabilities (root in a container may not)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                return all(eff >> b & 1 for b in bits)
    except (OSError, ValueError):
        pass
    return False


def _world_readable(path: Path) -> bool:
    """Every ancestor searchable and the path readable by others."""
    path = path.resolve()
    try:
        if not path.stat().st_mode & 0o004:
            return False
        return all(p.stat().st_mode & 0o001 for p in path.parents)
    except OSError:
        return False


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class TaskProcess:
    """One child process per ingestion run: tasks loaded and requests built once."""

    def __init__(self, tasks_dir: Path, task_name: str, workdir: Path, *,
                 allow_network: bool = False, hf_token: str | None = None,
                 limits: Limits | None = None, fewshot_seed: int = 1234,
                 hide: list[Path] | None = None, output: Path | None = None):
        self.tasks_dir = Path(tasks_dir)
        self.task_name = task_name
        self.workdir = Path(workdir)
        self.allow_network = allow_network
        self.hf_token = hf_token
        self.limits = limits or Limits()
        self.fewshot_seed = fewshot_seed
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "taskproc.log"
        self._secrets = [hf_token] if hf_token else []
        self.hide = hide or []
        self.output = output

    # ------------------------------------------------------------------ lifecycle
    def _env(self, home: Path) -> dict[str, str]:
        """A whitelist, not a scrub: nothing from the runner's environment leaks by default."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8",
            "PYTHONPATH": str(Path(e2lmc.__file__).resolve().parent.parent),
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "hf" / "datasets"),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        if not self.allow_network:
            env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        else:  # the manifest allows the hub: keep the platform's proxies
            for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                        "NO_PROXY"):
                if key in os.environ:
                    env[key] = os.environ[key]
            if self.hf_token:
                env["HF_TOKEN"] = self.hf_token  # the participant's own, for their dataset
        return env

    def _can_drop(self) -> bool:
        """Run the child as `nobody` when root and the interpreter is world-readable."""
        if not (self.limits.drop_privileges and os.geteuid() == 0
                and _has_capabilities(CAP_CHOWN, CAP_SETGID, CAP_SETUID)):
            return False
        import lm_eval

        needed = [Path(sys.base_prefix), Path(sys.prefix), Path(lm_eval.__file__).parent,
                  Path(e2lmc.__file__).parent]
        return all(_world_readable(p) for p in needed)

    def _hideable(self, home: Path) -> list[str]:
        """Paths to mask in the child (outputs, manifest, weights, hub credentials).

        A path that holds something the child needs (its tasks, home, Python, lm-eval)
        cannot be masked; it is left out (and isolation.md says the file system is then
        only as private as its permissions).
        """
        import lm_eval

        needed = [home, self.tasks_dir, Path(sys.prefix), Path(sys.base_prefix),
                  Path(lm_eval.__file__).parent, Path(e2lmc.__file__).parent]
        needed = [p.resolve() for p in needed]
        out = []
        for p in self.hide:
            p = Path(p).resolve()
            if p.is_dir() and p != Path("/") and not any(n == p or p in n.parents
                                                         for n in needed):
                out.append(str(p))
        return sorted(set(out))

    def start(self) -> Prepared:
        """Start the child, load the tasks, build the requests (no model involved)."""
        home = self.workdir / "taskhome"
        home.mkdir(parents=True, exist_ok=True)
        drop = self._can_drop()
        if drop:  # the unprivileged child reads the tasks and writes only its home
            for p in [self.workdir, *self.tasks_dir.rglob("*"), self.tasks_dir]:
                if p.is_symlink():
                    continue
                p.chmod(0o755 if p.is_dir() else 0o644)
            for parent in self.tasks_dir.parents:
                if parent == self.workdir.parent:
                    break
                parent.chmod(0o755)
            os.chown(home, NOBODY, NOBODY)
            if self.output is not None and self.output.stat().st_uid == os.geteuid():
                # a world-writable output folder (some workers make it so) would let the
                # unprivileged task process plant files next to the results
                self.output.chmod(self.output.stat().st_mode & 0o755)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._out, self._in = to_child_w, from_child_r
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "e2lmc.ingestion.child", str(to_child_r),
                 str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=self._env(home), cwd=str(home),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        os.close(to_child_r)
        os.close(from_child_w)
        cfg = {"op": "prepare", "tasks_dir": str(self.tasks_dir.resolve()),
               "task_name": self.task_name, "allow_network": self.allow_network,
               "home": str(home), "fewshot_seed": self.fewshot_seed,
               "hide": self._hideable(home),
               "doc_bounds": [validate.MIN_DOCS, validate.MAX_DOCS],
               "limits": {**asdict(self.limits), "drop_privileges": drop}}
        wire.send(self._out, cfg)
        reply = self._recv(self.limits.prepare_timeout, "loading the task")
        return self._check_prepared(reply)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            wire.send(self._out, {"op": "close"})
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._kill()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc = None

    def _kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child and anything it spawned
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "TaskProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ messages
    def _recv(self, timeout: float, doing: str) -> dict[str, Any]:
        try:
            reply = wire.recv(self._in, timeout=timeout,
                              max_bytes=self.limits.max_message_bytes)
        except wire.WireTimeout:
            self._kill()
            raise TaskProcessError("timeout", f"the task took longer than {timeout:.0f} s "
                                   f"{doing}; look for an endless loop or slow code "
                                   "in the task's Python helpers") from None
        except wire.WireClosed:
            code = self.proc.wait(timeout=10) if self.proc else None
            self._kill()
            if code is not None and code < 0 and -code in (signal.SIGXCPU, signal.SIGKILL):
                raise TaskProcessError("cpu_limit", f"the task process was stopped while "
                                       f"{doing} (CPU-time limit or killed); look for an "
                                       "endless loop in the task's Python helpers") from None
            raise TaskProcessError("crashed", f"the task process exited (code {code}) while "
                                   f"{doing}; it may have run out of memory or called "
                                   "exit() in the task's Python helpers") from None
        except wire.WireTooLarge as exc:
            self._kill()
            raise TaskProcessError("too_large", f"the task produced too much data while "
                                   f"{doing} ({exc}); reduce prompt sizes") from None
        except (ValueError, UnicodeDecodeError):
            self._kill()
            raise TaskProcessError("protocol", f"the task process sent malformed data while "
                                   f"{doing}; task code must not write to inherited file "
                                   "descriptors") from None
        if not isinstance(reply, dict):
            raise TaskProcessError("protocol", f"malformed reply while {doing}")
        if not reply.get("ok"):
            kind = str(reply.get("kind", "exception"))
            msg = redact(str(reply.get("error", "unknown error"))[:2000], self._secrets)
            raise TaskProcessError(kind, msg)
        return reply

    def _check_prepared(self, reply: dict[str, Any]) -> Prepared:
        raw = reply.get("requests")
        info = reply.get("info")
        if not isinstance(raw, list) or not isinstance(info, dict):
            raise TaskProcessError("protocol", "malformed task description from the task "
                                   "process")
        if len(raw) > self.limits.max_requests:
            raise TaskProcessError("too_large", f"the task makes {len(raw)} requests (limit "
                                   f"{self.limits.max_requests}); use fewer documents or "
                                   "choices")
        requests = [self._check_request(i, r) for i, r in enumerate(raw)]
        items = []
        for d in reply.get("items") or []:
            if not isinstance(d, dict):
                raise TaskProcessError("protocol", "malformed item from the task process")
            choices = d.get("choices")
            items.append(Item(
                task=str(d.get("task", "")), doc_id=int(d.get("doc_id", 0)),
                prompt=redact(str(d.get("prompt", "")), self._secrets),
                gold=redact(str(d.get("gold", "")), self._secrets),
                choices=[redact(str(c), self._secrets) for c in choices]
                if isinstance(choices, list) else None,
                gold_index=d["gold_index"] if isinstance(d.get("gold_index"), int) else None,
            ))
        return Prepared(info=info, requests=requests, items=items)

    def _check_request(self, i: int, r: Any) -> tuple[str, tuple]:
        bad = TaskProcessError("protocol", f"request {i} from the task process is malformed")
        if not (isinstance(r, list) and len(r) == 2 and r[0] in REQUEST_TYPES
                and isinstance(r[1], list)):
            raise bad
        rtype, args = r
        cap = self.limits.max_prompt_chars
        if rtype == "loglikelihood":
            ok = len(args) == 2 and all(isinstance(a, str) for a in args)
        elif rtype == "loglikelihood_rolling":
            ok = len(args) == 1 and isinstance(args[0], str)
        else:
            ok = len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], dict)
        if not ok:
            raise bad
        size = sum(len(a) for a in args if isinstance(a, str))
        if size > cap:
            raise TaskProcessError("huge_prompt", f"request {i} is {size} characters long "
                                   f"(limit {cap}); prompts plus answers must fit in the "
                                   "models' 2048-token window")
        return rtype, tuple(args)

    def score(self, label: str, answers: list[Any]) -> dict[str, float | None]:
        """Metrics for one checkpoint's answers (the child applies lm-eval's pipeline)."""
        wire.send(self._out, {"op": "score", "label": label, "answers": answers})
        reply = self._recv(self.limits.score_timeout, "computing the metrics")
        metrics = reply.get("metrics")
        if not isinstance(metrics, dict):
            raise TaskProcessError("protocol", "malformed metrics from the task process")
        out: dict[str, float | None] = {}
        for k, v in list(metrics.items())[:200]:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[str(k)[:200]] = float(v)
            else:
                out[str(k)[:200]] = None
        return out

    def log_tail(self, n: int = 2000) -> str:
        if not self.log_path.is_file():
            return ""
        return redact(self.log_path.read_text(errors="replace")[-n:], self._secrets)

    def cleanup(self) -> None:
        self.close()
        shutil.rmtree(self.workdir / "taskhome", ignore_errors=True)
