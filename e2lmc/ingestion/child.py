"""The task process: the only place where participant code runs.

Started by `e2lmc.ingestion.taskproc.TaskProcess` as `python -m e2lmc.ingestion.child
IN_FD OUT_FD` with a whitelisted environment. It first confines itself with every layer
the platform allows (`e2lmc.ingestion.sandbox`) and reports what they achieved, before any
task code runs; then it loads the submission's tasks with lm-eval, processes the documents
and builds the requests once, and answers the runner's messages:

    runner -> {"op": "prepare", ...config}   child -> {"ok", "isolation"}   (confined)
                                             child -> {"ok", "info", "requests",
                                                       "documents", "items"}
    runner -> {"op": "score", "answers"}     child -> {"ok", "metrics", "per_item"}
                                             (from a fresh fork)
    runner -> {"op": "close"}                (child exits)

Every reply is {"ok": false, "kind", "error"} on failure. The child is never told which
checkpoint it scores: it receives answers only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from e2lmc.ingestion import cli_parity, sandbox, wire
from e2lmc.ingestion.items import task_items
from e2lmc.ingestion.prefetch import hub_key
from e2lmc.ingestion.replies import SUPPORTED_OUTPUT_TYPES

PACKAGED_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas"}
KEYS_BOOTSTRAP_ITERS = 10  # the dry run only needs the stderr keys, not their values


class TaskError(Exception):
    """A problem with the submitted task; `kind` names it for the runner's message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- lm-eval guards
def _install_guards(root: Path, allow_network: bool,
                    hub: dict[str, dict[str, str]] | None = None) -> None:
    """Refuse hub metrics; read hub datasets from the folders the runner fetched them to
    (`hub`: per dataset config, its folder or why it has none); resolve data paths
    against each task's YAML."""
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
            else:
                fetched = (hub or {}).get(hub_key(path, self.DATASET_NAME, kw.get("revision")))
                if fetched and "dir" in fetched:  # data_files stay relative to the repo
                    self.DATASET_PATH = fetched["dir"]
                    kw.pop("revision", None)
                    return original(self, dataset_kwargs=kw, **kwargs)
                if not allow_network:
                    raise TaskError("hub_dataset", fetched["error"] if fetched else
                                    f"task {name}: dataset_path {path!r} (dataset_name "
                                    f"{self.DATASET_NAME!r}) is on the Hugging Face hub, but "
                                    "no task YAML of the submission names it, so it was not "
                                    "fetched before the run; write dataset_path, dataset_name "
                                    "and dataset_kwargs.revision in the task's YAML, or bundle "
                                    "your data with the submission (dataset_path: json, "
                                    "dataset_kwargs: {data_files: {test: data/test.jsonl}})")
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
        self.bootstrap_iters = int(cfg.get("bootstrap_iters", cli_parity.BOOTSTRAP_ITERS))
        root = Path(cfg["tasks_dir"]).resolve()
        _install_guards(root, bool(cfg.get("allow_network")), cfg.get("hub_datasets"))
        cli_parity.use_forked_bootstrap()
        self.task_name = cfg["task_name"]
        tm = TaskManager(include_path=str(root), include_defaults=False)
        if self.task_name not in tm.all_tasks:
            known = ", ".join(sorted(tm.all_tasks)[:20]) or "none"
            raise TaskError("task_not_found",
                            f"task or group {self.task_name!r} is not defined by the "
                            f"submission (found: {known}); set task_name in metadata.yaml "
                            "to one of them")
        cli_parity.seed_globals()  # as simple_evaluate does before it loads the tasks
        try:
            self.loaded = tm.load([self.task_name])
        except (TaskError, MemoryError):
            raise
        except Exception as exc:  # participant YAML/code failed while building the task
            raise TaskError("task_load", f"loading task {self.task_name!r} failed: "
                                         f"{type(exc).__name__}: {exc}") from None
        self.tasks = self.loaded["tasks"]
        self.answers: list[Any] = []
        self.per_doc: dict[str, list[Any]] = {name: [] for name in self.tasks}
        for name, task in self.tasks.items():
            task.process_results = _recording(task.process_results, self.per_doc[name])
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
        """Requests (each distinct one once) and, per task, each document's requests.

        The runner counts documents from this list and checks it against the requests;
        `docs` here only serves the early, friendlier bound check.
        """
        seed = int(self.cfg.get("fewshot_seed", 1234))
        keys: dict[str, int] = {}
        requests: list[list[Any]] = []
        types: dict[str, str] = {}
        documents: dict[str, dict[int, list[int]]] = {}
        docs = {name: len(_freeze_docs(task)) for name, task in self.tasks.items()}
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
            per_doc = documents.setdefault(name, {})
            for inst in task.instances:
                args = [inst.request_type, list(inst.args)]
                key = json.dumps(args, sort_keys=True, default=str)
                if key not in keys:
                    keys[key] = len(requests)
                    requests.append(args)
                inst._e2lmc_idx = keys[key]
                per_doc.setdefault(int(inst.doc_id), []).append(keys[key])
            task.build_all_requests = _reuse(task)
        # where the CLI hands the requests to the model: every evaluation starts from here
        self.start_state = cli_parity.RandomState()
        items = self._items()
        return {"info": {"task_types": types, "metric_keys": self._metric_keys(requests),
                         "groups": sorted(self.loaded.get("groups", {}))},
                "requests": requests, "items": items,
                "documents": {t: [[d, r] for d, r in per.items()]
                              for t, per in documents.items()}}

    def _metric_keys(self, requests: list[list[Any]]) -> list[str]:
        """The task's results keys, from a dry run on placeholder answers.

        If the task's own code cannot digest placeholders, fall back to the keys its
        metrics and filters declare (`metric,filter`), so a valid task is not refused.
        """
        try:
            return sorted(self.score(self._dummy_answers(requests),
                                     bootstrap_iters=min(KEYS_BOOTSTRAP_ITERS,
                                                         self.bootstrap_iters))["metrics"])
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
        return task_items(self.tasks)

    def score(self, answers: list[Any], bootstrap_iters: int | None = None) -> dict[str, Any]:
        """lm-eval's metrics for one checkpoint's answers, stderr bootstrapped as the CLI
        does (100,000 resamples unless the runner says otherwise)."""
        from lm_eval.evaluator import evaluate

        self.start_state.restore()
        for calls in self.per_doc.values():
            calls.clear()
        if bootstrap_iters is None:
            bootstrap_iters = self.bootstrap_iters
        self.answers = [tuple(a) if isinstance(a, list) else a for a in answers]
        res = evaluate(lm=self.lm, task_dict=self.loaded, limit=None, cache_requests=False,
                       bootstrap_iters=bootstrap_iters, log_samples=False,
                       confirm_run_unsafe_code=False)
        table = (res or {}).get("results", {})
        top = table.get(self.task_name) or {}
        if not top and "groups" in (res or {}):
            top = res["groups"].get(self.task_name) or {}
        metrics = {k: _num(v) for k, v in top.items() if k != "alias" and _is_num(v)}
        return {"metrics": metrics, "per_item": self._per_item()}

    def _per_item(self) -> dict[str, list[float | None]]:
        """The declared metric (`name,filter`) of each document, per task in doc-id order.

        lm-eval calls process_results once per filter and document, filters in the order
        the task applies them, documents in order; a value that is not one number (the
        pairs corpus-level metrics aggregate later) has none."""
        name, _, flt = str(self.cfg.get("metric") or "").partition(",")
        out: dict[str, list[float | None]] = {}
        for task_name, task in self.tasks.items():
            calls = self.per_doc[task_name]
            n = len(task.eval_docs)
            filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
            if flt not in filters or len(calls) != n * len(filters):
                out[task_name] = [None] * n
                continue
            start = filters.index(flt) * n
            out[task_name] = [_num(c.get(name)) if isinstance(c, dict) and _is_num(c.get(name))
                              else None for c in calls[start:start + n]]
        return out


def _recording(process_results, calls: list[Any]):
    """process_results that also keeps what it returned, for the per-document values."""

    def recorded(doc, results):
        out = process_results(doc, results)
        calls.append(out)
        return out

    return recorded


def _freeze_docs(task) -> Any:
    """Process the documents once. lm-eval re-runs `process_docs` whenever it reads them,
    so each checkpoint (and the items) would otherwise see a fresh run of task code.

    It is run twice here: documents that differ between runs (drawn from the global random)
    would, under the CLI too, be scored against answers to other documents' prompts (lm-eval
    reads them once to build the requests and again to score them)."""
    docs = task.eval_docs
    again = task.eval_docs
    if again is not docs and _fingerprint(again) != _fingerprint(docs):
        raise TaskError("process_docs_random",
                        f"task {task.config.task}: process_docs gives different documents on "
                        "each run; seed your own random.Random (e.g. random.Random(42)) "
                        "instead of drawing from the global random")
    setattr(task, "test_docs" if task.has_test_docs() else "validation_docs", lambda: docs)
    return docs


def _fingerprint(docs: Any) -> str:
    """A hash of the documents' contents (NaN-safe, unlike comparing them with ==)."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return digest.hexdigest()


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


def _policy(cfg: dict[str, Any]) -> sandbox.Policy:
    lim = cfg.get("limits", {})
    return sandbox.Policy(read=cfg["read"], write=cfg["write"], hide=cfg.get("hide", []),
                          allow_network=bool(cfg.get("allow_network")),
                          namespaces=bool(lim.get("namespaces", True)),
                          root_reason=str(lim.get("root_reason", "")), limits=lim)


def _score_fresh(session: Session, answers: list[Any]) -> dict[str, Any]:
    """One checkpoint's metrics in a fork of the prepared process.

    Every checkpoint starts from the same state, and the fork may write nowhere: task code
    cannot count its calls (in memory or in a file) to draw a curve of its own.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            sandbox.forbid_writes()
            reply = {"ok": True, **session.score(answers)}
        except BaseException as exc:  # noqa: BLE001 - report any failure to the runner
            traceback.print_exc()
            reply = _fail(exc)
        try:
            wire.send(w, reply)
        finally:
            os._exit(0)
    os.close(w)
    try:
        return wire.recv(r)
    except wire.WireError:
        return {"ok": False, "kind": "crashed", "error": "the metrics process died"}
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    in_fd, out_fd = int(argv[0]), int(argv[1])
    cfg = wire.recv(in_fd, allow_nonfinite=True)
    try:
        # reported before any task code runs, so task code cannot rewrite the report
        wire.send(out_fd, {"ok": True, "isolation": sandbox.confine(_policy(cfg))})
        session = Session(cfg)
        wire.send(out_fd, {"ok": True, **session.prepare()})
    except BaseException as exc:  # noqa: BLE001 - report any failure to the runner
        traceback.print_exc()
        wire.send(out_fd, _fail(exc))
        return 1
    while True:
        try:
            msg = wire.recv(in_fd, allow_nonfinite=True)
        except wire.WireClosed:
            return 0
        if msg.get("op") != "score":
            return 0
        wire.send(out_fd, _score_fresh(session, msg["answers"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
