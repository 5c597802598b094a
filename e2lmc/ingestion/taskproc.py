"""The runner's handle on the task process (see `e2lmc.ingestion.child`).

The runner never imports participant code: it starts the child with a whitelisted
environment (no tokens, keys, manifest or checkpoint paths) and the sandbox policy (what it
may read and write), talks to it in framed JSON, and checks every reply against the schema
in `e2lmc.ingestion.replies` before using it. The child's stdout/stderr go to a log file in
the work dir that is never echoed while checkpoints are evaluated (a task could print
hidden-checkpoint metrics); only the runner's own one-line messages reach the logs.

The runner is the subreaper of the task's process tree: a task that daemonises
(`setsid`, double fork) is re-parented to the runner and killed with the rest, so nothing
of it outlives the task process and the runner writes the outputs alone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import e2lmc
from e2lmc.errors import UserError
from e2lmc.ingestion import replies, sandbox, validate, wire
from e2lmc.ingestion.replies import Prepared

GIB = 1 << 30
CAP_CHOWN, CAP_SETGID, CAP_SETUID = 0, 6, 7
PR_SET_CHILD_SUBREAPER = 36
# What the interpreter needs besides its own prefix: shared libraries, locale and time
# zone data, the loader cache; and /proc, /sys, /dev for the runtime (other processes'
# /proc entries stay closed: Landlock refuses ptrace-style access outside the sandbox).
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime",
               "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl", "/proc", "/sys",
               "/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")


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
    require_file_barrier: bool = True  # refuse to run task code that could read the key


class TaskProcessError(UserError):
    """The submission's task failed inside the task process (a contained failure)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


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


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.update(int(c) for c in fh.read().split())
    except OSError:
        pass
    return out


def kill_orphans(keep: set[int]) -> int:
    """Kill and reap every child of this process not in `keep`: what a task left behind,
    re-parented here because the runner is the subreaper. Returns how many."""
    killed = 0
    for _ in range(50):
        stray = _children(os.getpid()) - keep
        if not stray:
            break
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        for pid in stray:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        time.sleep(0.01)
    return killed


class TaskProcess:
    """One child process per ingestion run: tasks loaded and requests built once."""

    def __init__(self, tasks_dir: Path, task_name: str, workdir: Path, *,
                 allow_network: bool = False, hf_token: str | None = None,
                 limits: Limits | None = None, fewshot_seed: int = 1234,
                 hide: list[Path] | None = None, output: Path | None = None,
                 max_gen_toks: int = 256, hub_dir: Path | None = None,
                 hub_datasets: dict[str, dict[str, str]] | None = None,
                 bootstrap_iters: int = 100_000, metric: str | None = None):
        self.tasks_dir = Path(tasks_dir)
        self.task_name = task_name
        self.metric = metric  # the declared metric, kept per document too
        self.workdir = Path(workdir)
        self.allow_network = allow_network
        self.hub_dir = Path(hub_dir) if hub_dir else None  # datasets the runner fetched
        self.hub_datasets = hub_datasets or {}
        self.limits = limits or Limits()
        self.fewshot_seed = fewshot_seed
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "taskproc.log"
        self._secrets = [hf_token] if hf_token else []
        self.hide = hide or []
        self.output = output
        self.max_gen_toks = max_gen_toks
        self.bootstrap_iters = bootstrap_iters  # lm-eval's default; the manifest may lower it
        self.metric_keys: list[str] = []
        self.doc_requests: dict[str, list[tuple[int, list[int]]]] = {}
        self.isolation: dict[str, str] = {}
        self._keep: set[int] = set()

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
        return env  # never a token: the runner fetched the hub datasets with it

    def _root_reason(self) -> str | None:
        """Why the child cannot run as `nobody` (None: it can): it must be root now, hold
        the capabilities to hand its files over and switch, and find the interpreter and
        libraries readable by `nobody`."""
        if not self.limits.drop_privileges:
            return "kept root by the runner's limits"
        if os.geteuid() != 0:
            return "the runner is not root"
        if not _has_capabilities(CAP_CHOWN, CAP_SETGID, CAP_SETUID):
            return "no CAP_CHOWN/CAP_SETUID/CAP_SETGID here"
        import lm_eval

        needed = [Path(sys.base_prefix), Path(sys.prefix), Path(lm_eval.__file__).parent,
                  Path(e2lmc.__file__).parent]
        if not all(_world_readable(p) for p in needed):
            return "the runner's files are not readable by nobody"
        return None

    def _trees(self) -> list[Path]:
        """The submission's files and the hub datasets fetched for it."""
        return [self.tasks_dir, *([self.hub_dir] if self.hub_dir else [])]

    def _readable(self) -> list[str]:
        """What the task process may read: the interpreter, its libraries, the task and
        its fetched datasets."""
        import lm_eval

        paths = {sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix),
                 os.path.realpath(sys.base_prefix), str(Path(sys.executable).resolve().parent),
                 str(Path(lm_eval.__file__).resolve().parent.parent),
                 str(Path(e2lmc.__file__).resolve().parent),
                 *(str(t.resolve()) for t in self._trees()), *SYSTEM_READ}
        return sorted(paths)

    def _hideable(self, home: Path) -> list[str]:
        """Paths to mask in the child (outputs, manifest, weights, hub credentials).

        A path that holds something the child needs (its tasks, home, Python, lm-eval)
        cannot be masked; it is left out (and isolation.md says the file system is then
        only as private as its permissions).
        """
        import lm_eval

        needed = [home, *self._trees(), Path(sys.prefix), Path(sys.base_prefix),
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
        root_reason = self._root_reason()
        drop = root_reason is None
        if drop:  # the unprivileged child reads the tasks and writes only its home
            for p in [self.workdir, *(q for t in self._trees() for q in (t, *t.rglob("*")))]:
                if p.is_symlink():
                    continue
                p.chmod(0o755 if p.is_dir() else 0o644)
            for parent in {q for t in self._trees() for q in t.parents}:
                if self.workdir in parent.parents:  # between the work dir and a tree
                    parent.chmod(0o755)
            os.chown(home, sandbox.NOBODY, sandbox.NOBODY)
            if self.output is not None and self.output.stat().st_uid == os.geteuid():
                # a world-writable output folder (some workers make it so) would let the
                # unprivileged task process plant files next to the results
                self.output.chmod(self.output.stat().st_mode & 0o755)
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self._keep = _children(os.getpid()) | {p.pid for p in multiprocessing.active_children()}
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
               "task_name": self.task_name, "metric": self.metric,
               "allow_network": self.allow_network,
               "hub_datasets": self.hub_datasets,
               "home": str(home), "fewshot_seed": self.fewshot_seed,
               "bootstrap_iters": self.bootstrap_iters,
               "hide": self._hideable(home), "read": self._readable(),
               "write": [str(home.resolve()), "/dev/null"],
               "doc_bounds": [validate.MIN_DOCS, validate.MAX_DOCS],
               "limits": {**asdict(self.limits), "root_reason": root_reason or ""}}
        wire.send(self._out, cfg)
        first = self._recv(self.limits.prepare_timeout, "confining the task process")
        isolation = first.get("isolation")
        self.isolation = {replies.clean_text(str(k), [], 40): replies.clean_text(str(v), [], 300)
                          for k, v in (isolation.items() if isinstance(isolation, dict) else [])}
        if self.limits.require_file_barrier and not sandbox.file_barrier(self.isolation):
            self._kill()
            raise UserError("this worker offers no file-system barrier for participant code "
                            "(no mount namespace, no Landlock): it could read the signing key "
                            "and forge results. Run the worker on a kernel with Landlock "
                            "(Linux 5.13+) or give the ingestion container CAP_SYS_ADMIN")
        reply = self._recv(self.limits.prepare_timeout, "loading the task", show=True)
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
        # what left the process group (setsid daemons); never the engine's GPU workers
        kill_orphans(self._keep | {p.pid for p in multiprocessing.active_children()})

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "TaskProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ messages
    def _recv(self, timeout: float, doing: str, show: bool = False,
              slow: str = "slow code in the task's Python helpers") -> dict[str, Any]:
        """The next reply. A failure keeps the task's own message only when `show` (no
        checkpoint has been evaluated yet); otherwise the runner's words for its kind.
        `slow` names what, besides an endless loop, can take that long."""
        try:
            reply = wire.recv(self._in, timeout=timeout,
                              max_bytes=self.limits.max_message_bytes)
        except wire.WireTimeout:
            self._kill()
            raise TaskProcessError("timeout", f"the task took longer than {timeout:.0f} s "
                                   f"{doing}; look for an endless loop or {slow}") from None
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
        except wire.WireMalformed:
            self._kill()
            raise TaskProcessError("protocol", f"the task process sent malformed data while "
                                   f"{doing} (not JSON, non-finite numbers such as a NaN "
                                   "generation setting, or task code writing to inherited "
                                   "file descriptors)") from None
        if not isinstance(reply, dict):
            self._kill()
            raise TaskProcessError("protocol", f"malformed reply while {doing}")
        if not reply.get("ok"):
            kind = replies.error_kind(reply)
            message = replies.ERROR_KINDS[kind]
            if show:
                message = replies.clean_text(str(reply.get("error", message)), self._secrets,
                                             2000)
            raise TaskProcessError(kind, message)
        return reply

    def _check_prepared(self, reply: dict[str, Any]) -> Prepared:
        """The task's preparation, every field checked; the runner counts the documents."""
        try:
            raw = reply.get("requests")
            info = reply.get("info")
            if not isinstance(raw, list) or not isinstance(info, dict):
                raise replies.ProtocolError("malformed task description from the task "
                                            "process")
            if len(raw) > self.limits.max_requests:
                raise UserError(f"the task makes {len(raw)} requests (limit "
                                f"{self.limits.max_requests}); use fewer documents or "
                                "choices")
            requests = [replies.request(i, r, self.limits.max_prompt_chars, self.max_gen_toks)
                        for i, r in enumerate(raw)]
            docs = replies.documents(reply.get("documents"), len(requests))
            types = info.get("task_types")
            if not (isinstance(types, dict) and set(types) == set(docs)
                    and all(t in replies.SUPPORTED_OUTPUT_TYPES for t in types.values())):
                raise replies.ProtocolError("malformed task types from the task process")
            self.metric_keys = replies.metric_keys(info.get("metric_keys"))
            items = replies.items(reply.get("items"), reply["documents"],
                                  self.limits.max_prompt_chars, self._secrets)
            self.doc_requests = replies.document_requests(reply["documents"])
        except TaskProcessError:
            raise
        except UserError as exc:
            self._kill()
            raise TaskProcessError(getattr(exc, "kind", "invalid_request"), str(exc)) from None
        return Prepared(task_types=dict(types), docs=docs, metric_keys=self.metric_keys,
                        requests=requests, items=items, isolation=self.isolation,
                        doc_requests=self.doc_requests)

    def score(self, answers: list[Any]
              ) -> tuple[dict[str, float | None], dict[str, list[float]] | None]:
        """Metrics for one checkpoint's answers (the child applies lm-eval's pipeline), and
        the declared metric per document (`replies.per_item`).

        The child is not told which checkpoint the answers come from."""
        wire.send(self._out, {"op": "score", "answers": answers})
        reply = self._recv(self.limits.score_timeout, "computing the metrics",
                           slow=f"slow code in the task's Python helpers; each metric's "
                           f"stderr is bootstrapped with {self.bootstrap_iters} resamples, "
                           "costly for corpus-level metrics on many documents (organizers "
                           "set this: manifest `bootstrap_iters`)")
        try:
            return (replies.metrics(reply.get("metrics"), self.metric_keys),
                    replies.per_item(reply.get("per_item"), self.doc_requests))
        except replies.ProtocolError as exc:
            raise TaskProcessError("protocol", str(exc)) from None

    def log_tail(self, n: int = 2000) -> str:
        """The end of the task's output, read from the end (the log may be huge), cleaned."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - n))
                text = fh.read(n).decode("utf-8", errors="replace")
        except OSError:
            return ""
        return replies.shown_text(text, self._secrets, n)

    def cleanup(self) -> None:
        self.close()
        shutil.rmtree(self.workdir / "taskhome", ignore_errors=True)
