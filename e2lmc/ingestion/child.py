"""The task process: the only place where participant code runs.

Started by `e2lmc.ingestion.taskproc.TaskProcess` as `python -m e2lmc.ingestion.child
IN_FD OUT_FD` with a scrubbed environment. It first confines itself (network namespace,
unprivileged user, resource limits), then loads the submission's tasks with lm-eval, builds
the requests once, and answers the runner's messages:

    runner -> {"op": "prepare", ...config}      child -> {"ok", "info", "requests", "items"}
    runner -> {"op": "score", "label", "answers"} child -> {"ok", "results"}
    runner -> {"op": "close"}                   (child exits)

Every reply is {"ok": false, "kind", "error"} on failure. Checkpoints are opaque labels.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from e2lmc.ingestion import wire

PACKAGED_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas"}
SUPPORTED_OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling",
                          "generate_until")
NOBODY = 65534
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
_LIBC = ctypes.CDLL(None, use_errno=True)


class TaskError(Exception):
    """A problem with the submitted task; `kind` names it for the runner's message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- confinement
def confine(cfg: dict[str, Any]) -> dict[str, str]:
    """Apply the isolation the platform allows; return what was achieved (for the docs)."""
    done: dict[str, str] = {}
    libc = _LIBC
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # die with the runner
    use_ns = cfg.get("limits", {}).get("namespaces", True)
    if not cfg.get("allow_network"):
        if use_ns and libc.unshare(CLONE_NEWNET) == 0:
            done["network"] = "namespace"  # only a loopback device, down
        else:
            done["network"] = "not isolated (no privilege for a network namespace)"
    else:
        done["network"] = "allowed by the manifest"
    if use_ns:
        done.update(_confine_files(cfg))
    else:
        done.update(filesystem="not isolated (namespaces switched off)", hidden="none",
                    processes="visible")
    lim = cfg.get("limits", {})
    done["user"] = "same as the runner"
    if os.geteuid() == 0 and lim.get("drop_privileges", True):
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            done["user"] = "nobody"
        except OSError:  # no CAP_SETUID/CAP_SETGID in this container
            done["user"] = "same as the runner (could not switch to nobody)"
        os.chdir(cfg["home"])
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_CPU", "cpu_seconds"),
                      ("RLIMIT_FSIZE", "file_bytes")):
        value = lim.get(key)
        if value:
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))
    if lim.get("nproc") and done["user"] == "nobody":
        resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["nproc"]), int(lim["nproc"])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return done


def _mount(src, target, fstype, flags, data=None) -> bool:
    enc = (lambda x: None if x is None else str(x).encode())
    return _LIBC.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) == 0


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4]
            points.append(re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return points


def _confine_files(cfg: dict[str, Any]) -> dict[str, str]:
    """Private mount namespace: hidden paths under empty tmpfs, all read-only but home.

    Needs CAP_SYS_ADMIN (root outside a locked-down container); otherwise nothing changes
    and the report says so.
    """
    home = cfg["home"]
    own_pids = _LIBC.unshare(CLONE_NEWNS | CLONE_NEWPID) == 0
    if not own_pids and _LIBC.unshare(CLONE_NEWNS) != 0:
        return {"filesystem": "not isolated (no privilege for a mount namespace)",
                "hidden": "none", "processes": "visible"}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if own_pids:
        _become_pid_namespace_init()
        # a /proc of our own: other processes (and their environments) are not visible
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    hidden = []
    for path in cfg.get("hide", []):
        if os.path.isdir(path) and _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
                                          "size=64k,mode=755"):
            hidden.append(path)
    _mount(home, home, None, MS_BIND | MS_REC)
    failed = []
    for mp in sorted(set(_mount_points()), key=len):
        if mp == home or mp.startswith(home + "/"):
            continue
        if not _mount(None, mp, None, MS_BIND | MS_REMOUNT | MS_RDONLY):
            failed.append(mp)
    ro = "/" not in failed
    return {"filesystem": "read-only except the task's home" if ro
            else "not isolated (read-only remount refused)",
            "hidden": ", ".join(hidden) or "none",
            "processes": "own PID namespace" if own_pids else "visible"}


def _become_pid_namespace_init() -> None:
    """After unshare(CLONE_NEWPID) only children enter the new namespace: fork once.

    The parent stays behind as a relay: it waits and exits the way the child did, so the
    runner sees the task's exit status or signal, and killing the process group kills both.
    """
    pid = os.fork()
    if pid == 0:
        _LIBC.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        return
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


# --------------------------------------------------------------------------- lm-eval guards
def _install_guards(root: Path, allow_network: bool) -> None:
    """Refuse hub metrics and hub datasets; resolve data paths against each task's YAML."""
    sys.modules["evaluate"] = None  # type: ignore[assignment]  # no hub metric downloads
    import lm_eval.api.registry as registry
    import lm_eval.api.task as task_mod

    def get_metric(name, hf_evaluate_metric: bool = False):
        if len(registry.metric_registry) == 0:
            import lm_eval.api.metrics  # noqa: F401
        if hf_evaluate_metric or name not in registry.metric_registry:
            raise TaskError("unknown_metric",
                            f"metric {name!r} is not one of lm-eval's built-in metrics "
                            "(Hugging Face `evaluate` metrics are not downloaded); use a "
                            "built-in metric or compute it in `process_results`")
        return registry.metric_registry[name]

    task_mod.get_metric = get_metric

    original = task_mod.ConfigurableTask.download

    def download(self, dataset_kwargs=None, **kwargs):
        source = (self.config.metadata or {}).get("config_source")
        base = Path(source).parent if source and source != "inline" else root
        kw = dict(dataset_kwargs or {})
        name = self.config.task
        if not callable(self.config.custom_dataset):
            path = self.DATASET_PATH
            local = base / str(path) if path else None
            if path in PACKAGED_BUILDERS:
                pass
            elif local is not None and local.exists():
                self.DATASET_PATH = str(_inside(local, root, name))
            elif not allow_network:
                raise TaskError("hub_dataset",
                                f"task {name}: dataset_path {path!r} is on the Hugging Face "
                                "hub, which this evaluation does not reach; bundle your data "
                                "with the submission (dataset_path: json, dataset_kwargs: "
                                "{data_files: {test: data/test.jsonl}})")
            for key in ("data_files", "data_dir"):
                if key in kw:
                    kw[key] = _resolve_files(kw[key], base, root, name, allow_network)
        return original(self, dataset_kwargs=kw, **kwargs)

    task_mod.ConfigurableTask.download = download
    _cache_templates()


def _cache_templates() -> None:
    """Compile each Jinja template once (lm-eval recompiles it for every document).

    Same environment, same rendering: only the compile step is memoised. Without it,
    templates dominate the run (about 2 ms per render; 15,000 documents x several
    templates, again for every checkpoint's metrics).
    """
    import functools

    import lm_eval.utils as utils

    compiled = functools.lru_cache(maxsize=512)(utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    utils.apply_template = apply_template


def _inside(path: Path, root: Path, task: str) -> Path:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise TaskError("data_outside",
                        f"task {task}: data path {str(path)!r} points outside the "
                        "submission; keep data files inside the submission folder")
    return resolved


def _resolve_files(value: Any, base: Path, root: Path, task: str,
                   allow_network: bool = False) -> Any:
    if isinstance(value, str):
        if "://" in value:
            if not allow_network:
                raise TaskError("hub_dataset",
                                f"task {task}: data file {value!r} is remote, which this "
                                "evaluation does not reach; bundle your data with the "
                                "submission")
            return value
        return str(_inside(base / value, root, task))
    if isinstance(value, (list, tuple)):
        return [_resolve_files(v, base, root, task, allow_network) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_files(v, base, root, task, allow_network)
                for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the session
class Session:
    """Tasks loaded once, requests built once, metrics computed per checkpoint."""

    def __init__(self, cfg: dict[str, Any]):
        from lm_eval.api.model import LM
        from lm_eval.tasks import TaskManager

        self.cfg = cfg
        root = Path(cfg["tasks_dir"]).resolve()
        _install_guards(root, bool(cfg.get("allow_network")))
        self.task_name = cfg["task_name"]
        tm = TaskManager(include_path=str(root), include_defaults=False)
        if self.task_name not in tm.all_tasks:
            known = ", ".join(sorted(tm.all_tasks)[:20]) or "none"
            raise TaskError("task_not_found",
                            f"task or group {self.task_name!r} is not defined by the "
                            f"submission (found: {known}); set task_name in metadata.yaml "
                            "to one of them")
        try:
            self.loaded = tm.load([self.task_name])
        except (TaskError, MemoryError):
            raise
        except Exception as exc:  # participant YAML/code failed while building the task
            raise TaskError("task_load", f"loading task {self.task_name!r} failed: "
                                         f"{type(exc).__name__}: {exc}") from None
        self.tasks = self.loaded["tasks"]
        self.answers: list[Any] = []
        session = self

        class ProxyLM(LM):
            """Answers lm-eval's requests with the runner's answers for one checkpoint."""

            def _answer(self, requests):
                return [session.answers[r._e2lmc_idx] for r in requests]

            loglikelihood = _answer
            loglikelihood_rolling = _answer
            generate_until = _answer

        self.lm = ProxyLM()

    def prepare(self) -> dict[str, Any]:
        seed = int(self.cfg.get("fewshot_seed", 1234))
        keys: dict[str, int] = {}
        requests: list[list[Any]] = []
        types: dict[str, str] = {}
        docs = {name: len(task.eval_docs) for name, task in self.tasks.items()}
        bounds = self.cfg.get("doc_bounds")
        if bounds and not bounds[0] <= sum(docs.values()) <= bounds[1]:
            from e2lmc.ingestion.validate import doc_count_error

            raise TaskError("doc_count", doc_count_error(self.task_name, docs))
        for name, task in self.tasks.items():
            types[name] = getattr(task, "OUTPUT_TYPE", "?")
            if types[name] not in SUPPORTED_OUTPUT_TYPES:
                raise TaskError("output_type", f"task {name}: output_type {types[name]!r} is "
                                f"not supported; use one of {SUPPORTED_OUTPUT_TYPES}")
            if getattr(task, "MULTIMODAL", False):
                raise TaskError("output_type", f"task {name}: multimodal tasks are not "
                                "supported")
            if hasattr(task, "set_fewshot_seed"):
                task.set_fewshot_seed(seed=seed)
            task.build_all_requests(limit=None, rank=0, world_size=1, cache_requests=False,
                                    rewrite_requests_cache=False)
            for inst in task.instances:
                args = [inst.request_type, list(inst.args)]
                key = json.dumps(args, sort_keys=True, default=str)
                if key not in keys:
                    keys[key] = len(requests)
                    requests.append(args)
                inst._e2lmc_idx = keys[key]
            task.build_all_requests = _reuse(task)
        items = self._items()
        return {"info": {"task_types": types, "docs": docs,
                         "metric_keys": self._metric_keys(requests),
                         "groups": sorted(self.loaded.get("groups", {}))},
                "requests": requests, "items": items}

    def _metric_keys(self, requests: list[list[Any]]) -> list[str]:
        """The task's results keys, from a dry run on placeholder answers.

        If the task's own code cannot digest placeholders, fall back to the keys its
        metrics and filters declare (`metric,filter`), so a valid task is not refused.
        """
        try:
            return sorted(self.score(self._dummy_answers(requests))["metrics"])
        except Exception:  # noqa: BLE001 - participant code; the real answers will tell
            keys = set()
            for task in self.tasks.values():
                filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
                for metric in getattr(task, "_metric_fn_list", {}):
                    keys.update(f"{metric},{flt}" for flt in filters)
            return sorted(keys)

    @staticmethod
    def _dummy_answers(requests: list[list[Any]]) -> list[Any]:
        out: list[Any] = []
        for i, (rtype, _args) in enumerate(requests):
            if rtype == "loglikelihood":
                out.append([-1.0 - (i % 7) * 0.1, False])
            elif rtype == "loglikelihood_rolling":
                out.append(-1.0)
            else:
                out.append("")
        return out

    def _items(self) -> list[dict[str, Any]]:
        items = []
        for name, task in self.tasks.items():
            for doc_id, doc in enumerate(task.eval_docs):
                prompt = task.doc_to_text(doc)
                choices = None
                gold_index = None
                target = task.doc_to_target(doc)
                if task.OUTPUT_TYPE == "multiple_choice":
                    choices = [str(c) for c in task.doc_to_choice(doc)]
                    if isinstance(target, int) and 0 <= target < len(choices):
                        gold_index = target
                    elif isinstance(target, str) and target in choices:
                        gold_index = choices.index(target)
                    if isinstance(prompt, int) and 0 <= prompt < len(choices):
                        prompt = choices[prompt]
                gold = choices[gold_index] if gold_index is not None else target
                if isinstance(gold, list):
                    gold = gold[0] if gold else ""
                items.append({"task": name, "doc_id": doc_id, "prompt": str(prompt),
                              "gold": str(gold), "choices": choices,
                              "gold_index": gold_index})
        return items

    def score(self, answers: list[Any]) -> dict[str, Any]:
        from lm_eval.evaluator import evaluate

        self.answers = [tuple(a) if isinstance(a, list) else a for a in answers]
        res = evaluate(lm=self.lm, task_dict=self.loaded, limit=None, cache_requests=False,
                       bootstrap_iters=int(self.cfg.get("bootstrap_iters", 1000)),
                       log_samples=False, confirm_run_unsafe_code=False)
        table = (res or {}).get("results", {})
        top = table.get(self.task_name) or {}
        if not top and "groups" in (res or {}):
            top = res["groups"].get(self.task_name) or {}
        metrics = {k: _num(v) for k, v in top.items() if k != "alias" and _is_num(v)}
        return {"metrics": metrics}


def _reuse(task):
    """Replace build_all_requests: requests were built once; clear the last answers."""

    def build_all_requests(**_kwargs):
        for inst in task.instances:
            inst.resps = []
            inst.filtered_resps = {}

    return build_all_requests


def _is_num(v: Any) -> bool:
    """Numbers (numpy included), not bools nor lm-eval's "N/A" placeholders."""
    return not isinstance(v, (bool, str)) and hasattr(v, "__float__")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fail(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TaskError):
        return {"ok": False, "kind": exc.kind, "error": str(exc)}
    if isinstance(exc, MemoryError):
        return {"ok": False, "kind": "memory", "error": "the task ran out of memory (the "
                "task process memory limit was reached)"}
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return {"ok": False, "kind": "exception",
            "error": f"{type(exc).__name__}: {str(exc)[:500]}{where}"}


def main(argv: list[str]) -> int:
    in_fd, out_fd = int(argv[0]), int(argv[1])
    cfg = wire.recv(in_fd)
    try:
        isolation = confine(cfg)
        session = Session(cfg)
        prep = session.prepare()
        prep["info"]["isolation"] = isolation
        wire.send(out_fd, {"ok": True, **prep})
    except BaseException as exc:  # noqa: BLE001 - report any failure to the runner
        traceback.print_exc()
        wire.send(out_fd, _fail(exc))
        return 1
    while True:
        try:
            msg = wire.recv(in_fd)
        except wire.WireClosed:
            return 0
        if msg.get("op") != "score":
            return 0
        try:
            reply = {"ok": True, "label": msg["label"], **session.score(msg["answers"])}
        except BaseException as exc:  # noqa: BLE001
            traceback.print_exc()
            reply = _fail(exc)
        wire.send(out_fd, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
