"""The ingestion run: one submission over every checkpoint of a manifest.

    stage + check the submission       (no participant code)
    task process: load task, build requests once, validate    (participant code, confined)
    for each checkpoint, most useful to the score first:
        engine answers the requests    (trusted; holds the weights)
        task process computes metrics  (lm-eval filters / process_results / aggregation)
        one signed row kept in memory and appended to results.jsonl (for a crash resume),
        each document's value and margin kept in memory (e2lmc.ingestion.per_item)
    task process gone: results.jsonl, items.jsonl and item_outcomes.parquet written from
    memory, then ingestion.json (status ok | partial | failed) signed over them, last

A local re-run into the same output folder resumes: rows already finished are kept, not
recomputed, when their signatures prove that this runner wrote them for this submission.
Codabench never resumes: every run starts in a fresh folder and a run killed at the time
limit uploads nothing, so the time budget (manifest `time_budget_s`) must end the run first.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import e2lmc
from e2lmc import results as R
from e2lmc import signing
from e2lmc.errors import UserError
from e2lmc.ingestion import prefetch
from e2lmc.ingestion import submission as S
from e2lmc.ingestion import validate
from e2lmc.ingestion.per_item import OutcomeTable
from e2lmc.ingestion.replies import clean_text
from e2lmc.ingestion.taskproc import Limits, TaskProcess, TaskProcessError
from e2lmc.engine import shard
from e2lmc.manifest import Checkpoint, Manifest, load_manifest
from e2lmc.outcomes import OUTCOMES_FILE, write_outcomes
from e2lmc.stage import use_staged


# --------------------------------------------------------------------------- ordering
def spread(n: int) -> list[int]:
    """0..n-1 ordered so that every prefix covers the range evenly: ends, middle, quarters..."""
    if n <= 0:
        return []
    order = [0] if n == 1 else [0, n - 1]
    seen = set(order)
    intervals = [(0, n - 1)]
    while intervals:
        nxt = []
        for lo, hi in intervals:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            if mid not in seen:
                seen.add(mid)
                order.append(mid)
            nxt += [(lo, mid), (mid, hi)]
        intervals = nxt
    order += [i for i in range(n) if i not in seen]
    return order


def evaluation_order(manifest: Manifest) -> list[Checkpoint]:
    """What the score needs most first, so a time budget leaves the most useful rows.

    Tiers: public checkpoints of science models (SQ, half the score), public checkpoints
    of web models (CS), then hidden checkpoints (RC). Inside a tier, each model's
    checkpoints are spread over training and the models take turns.
    """
    def tier(pred) -> list[Checkpoint]:
        per_model = []
        for m in manifest.models:
            cks = [c for c in m.checkpoints if pred(m, c)]
            per_model.append([cks[i] for i in spread(len(cks))])
        out = []
        for k in range(max((len(x) for x in per_model), default=0)):
            out += [x[k] for x in per_model if k < len(x)]
        return out

    return (tier(lambda m, c: c.stage == "public" and m.data == "science")
            + tier(lambda m, c: c.stage == "public" and m.data != "science")
            + tier(lambda m, c: c.stage != "public"))


# --------------------------------------------------------------------------- helpers
def stderr_key(metric: str) -> str:
    """`acc,none` -> `acc_stderr,none` (lm-eval's naming)."""
    name, _, flt = metric.partition(",")
    return f"{name}_stderr,{flt}" if flt else f"{name}_stderr"


def versions() -> dict[str, str]:
    out = {"e2lmc": e2lmc.__version__, "python": platform.python_version()}
    for mod in ("lm_eval", "torch", "transformers", "datasets"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional module is just not reported
            pass
    return out


def _not_dumpable() -> None:
    """Make this process's /proc entries (environment, memory) unreadable to a task process
    that keeps our user but lacks CAP_SYS_PTRACE (Docker's default)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _check_engine(engine: str) -> None:
    if engine == "fast":
        try:
            import e2lmc.engine.fast  # noqa: F401
        except ImportError:
            raise UserError("engine 'fast' is not available in this installation; run with "
                            "--engine hf (or set defaults.engine: hf in the manifest)") from None
    elif engine != "hf":
        raise UserError(f"unknown engine {engine!r}; use fast or hf")


def answer_requests(lm, requests: list[tuple[str, tuple]]) -> list[Any]:
    """The engine's answers, in request order (JSON-ready)."""
    from lm_eval.api.instance import Instance

    answers: list[Any] = [None] * len(requests)
    by_type: dict[str, list[int]] = {}
    for i, (rtype, _args) in enumerate(requests):
        by_type.setdefault(rtype, []).append(i)
    for rtype, idx in by_type.items():
        insts = [Instance(request_type=rtype, doc={}, arguments=requests[i][1], idx=0,
                          metadata=("e2lmc", i, 1)) for i in idx]
        resps = getattr(lm, rtype)(insts)
        if len(resps) != len(idx):
            raise RuntimeError(f"engine returned {len(resps)} answers for {len(idx)} "
                               f"{rtype} requests")
        for i, r in zip(idx, resps):
            if rtype == "loglikelihood":
                answers[i] = [float(r[0]), bool(r[1])]
            elif rtype == "loglikelihood_rolling":
                answers[i] = float(r[0] if isinstance(r, (tuple, list)) else r)
            else:
                answers[i] = str(r)
    return answers


def _release(lm) -> None:
    del lm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def _private_paths(manifest: Manifest, output: Path, input_data: Path,
                   data_dir: Path | None) -> list[Path]:
    """What participant code must not see: outputs, manifest, weights, hub credentials,
    the signing key."""
    paths = [output, Path(input_data), *([data_dir] if data_dir else [])]
    paths.append(signing.key_file(input_data).parent)
    if manifest.path is not None:
        paths.append(manifest.path.parent)
    paths += [Path(c.source) for c in manifest.checkpoints if not c.is_hub]
    hf_home = os.environ.get("HF_HOME")
    paths += [Path(hf_home)] if hf_home else []
    paths += [Path.home() / ".cache" / "huggingface", Path.home() / ".huggingface"]
    return paths


# --------------------------------------------------------------------------- resume
def grid_identity(manifest: Manifest) -> dict[str, str]:
    """Per checkpoint, a hash of what decides its values (where its weights load from, the
    dtype, context length and HF batch size, and the stderr's bootstrap resamples). A
    resumed run keeps a row only where this is unchanged, so
    results from a rebuilt or edited grid are never mixed in. Hashes, not paths: the
    output must not reveal where hidden checkpoints live."""
    d = manifest.defaults
    return {c.key: hashlib.sha256(json.dumps([c.source, c.subfolder, d.dtype, d.max_length,
                                              d.hf_batch_size, d.bootstrap_iters])
                                  .encode()).hexdigest()[:16]
            for c in manifest.checkpoints}


def _resume_rows(output: Path, prior: dict[str, Any] | None, key: bytes,
                 context: dict[str, Any], engine: str,
                 grid: dict[str, str]) -> dict[str, R.ResultRow]:
    """Finished rows of an earlier run of the same submission on the same checkpoints,
    kept only where the signing key proves that this runner wrote them (the earlier
    ingestion.json and each row); otherwise start clean. A planted or edited file is
    therefore scored again, never resumed. `prior`: the earlier ingestion.json, signed."""
    same = (prior is not None and isinstance(prior.get("submission"), dict)
            and R.signing_context(prior["submission"]) == context
            and (prior.get("engine") or {}).get("name") == engine)
    rows: dict[str, R.ResultRow] = {}
    if same:
        before = prior.get("grid") or {}
        try:
            for d in R.iter_jsonl(output / R.RESULTS_JSONL):
                if not R.row_verifies(d, key, context):
                    continue
                row = R.result_row(d)
                if row.status == "ok" and row.key in grid and before.get(row.key) == grid[row.key]:
                    rows[row.key] = row
        except UserError:
            rows = {}
    # rewrite: drops a torn last line, error rows (retried) and rows that do not verify
    R.write_jsonl(output / R.RESULTS_JSONL, rows.values())
    return rows


def _resume_outcomes(output: Path, prior: dict[str, Any] | None, table: OutcomeTable,
                     rows: dict[str, R.ResultRow]) -> None:
    """The per-item rows of the resumed checkpoints, when the earlier run signed its file
    (a run killed without SIGTERM wrote none: those checkpoints keep no per-item rows)."""
    if rows and prior is not None:
        try:
            table.keep(R.read_verified_outcomes(output, prior), rows)
        except (UserError, OSError, ValueError):
            pass


# --------------------------------------------------------------------------- the run
def _print_flushed(line: str) -> None:
    print(line, flush=True)


class Stopped(BaseException):
    """SIGTERM (`docker stop`, a local kill; Codabench kills at its limit without one):
    finish cleanly with status `partial`.

    A BaseException so that the per-checkpoint error handling does not swallow it.
    """


def _on_sigterm(signum, frame):
    raise Stopped()


def ingest(submission: Path, input_data: Path, output: Path, engine: str | None = None,
           device: str | None = None, time_budget: float | None = None,
           data_dir: Path | None = None, limits: Limits | None = None,
           log=None) -> dict[str, Any]:
    """Run a submission over the manifest's grid; return the ingestion.json document.

    `log` receives the progress lines (default: stdout, flushed line by line).
    """
    log = log or _print_flushed
    t0 = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    key = signing.load_key(input_data)
    doc: dict[str, Any] = {"status": "failed", "error": None, "versions": versions(),
                           "timings": {}, "engine": {}, "models": {}}
    # the runner's own copy of the outputs; None until it owns them (then written at the end)
    rows: dict[str, R.ResultRow] | None = None
    items: list[R.Item] | None = None
    table: OutcomeTable | None = None
    workdir = Path(tempfile.mkdtemp(prefix="e2lmc-ingest-"))
    tp: TaskProcess | None = None
    _not_dumpable()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    secrets: list[str] = [os.environ.get("HF_TOKEN", "")]
    try:
        manifest = use_staged(load_manifest(input_data, data_dir=data_dir), data_dir)
        doc["models"] = {m.name: m.attributes() for m in manifest.models}
        d = manifest.defaults
        engine = engine or d.engine
        device = device or d.device
        budget = time_budget if time_budget is not None else d.time_budget_s
        doc["engine"] = {"name": engine, "device": device, "dtype": d.dtype,
                         "max_length": d.max_length, "counters": {}}
        _check_engine(engine)

        sub = S.load_submission(submission, workdir)
        secrets.append(sub.hf_token or "")
        doc["submission"] = sub.summary()
        context = R.signing_context(doc["submission"])
        doc.update(task=sub.task_name, metric=sub.metric, format=sub.format)
        log(f"ingest: {sub.format} submission, task {sub.task_name}, metric {sub.metric}")

        t_prep = time.monotonic()
        # hub datasets: fetched here with the participant's token, read offline by the task
        hub = prefetch.prefetch(sub.tasks_dir, workdir / "hub", sub.hf_token, log)
        if hub.summary:
            doc["hub_datasets"] = hub.summary
        tp = TaskProcess(sub.tasks_dir, sub.task_name, workdir,
                         allow_network=d.allow_network, hf_token=sub.hf_token, limits=limits,
                         hide=_private_paths(manifest, output, input_data, data_dir),
                         output=output, max_gen_toks=d.max_gen_toks, hub_dir=hub.folder,
                         hub_datasets=hub.datasets, bootstrap_iters=d.bootstrap_iters,
                         metric=sub.metric)
        try:
            prepared = tp.start()
        except TaskProcessError:
            # no checkpoint was involved yet: the task's own output helps the participant
            log("ingest: last output of the task process:\n" + tp.log_tail())
            raise
        checked = validate.check_task(prepared, sub.task_name, sub.metric)
        doc["submission"].update(checked)
        doc.update(output_type=checked["output_type"], n_docs=checked["n_docs"],
                   n_requests=len(prepared.requests), isolation=prepared.isolation)
        doc["timings"]["prepare_s"] = round(time.monotonic() - t_prep, 3)
        log(f"ingest: {checked['n_docs']} documents, {len(prepared.requests)} requests "
            f"({checked['output_type']}), prepared in {doc['timings']['prepare_s']:.1f} s")

        doc["grid"] = grid_identity(manifest)
        prior = R.read_signed_json(output / R.INGESTION_JSON, key)
        done = _resume_rows(output, prior, key, context, engine, doc["grid"])
        table = OutcomeTable(prepared)
        _resume_outcomes(output, prior, table, done)
        rows, items = dict(done), prepared.items
        doc["status"], doc["error"] = "partial", "ingestion in progress (or interrupted)"
        R.write_ingestion(output, doc, key)  # a killed run resumes from this and the rows

        order = evaluation_order(manifest)
        todo = [c for c in order if c.key not in done]
        if done:
            log(f"ingest: resuming, {len(done)} of {len(order)} checkpoints already done")
        counters: dict[str, float] = {}
        spent: list[float] = []
        stopped = None
        t_grid = time.monotonic()
        outcomes = shard.run(
            functools.partial(engine_answers, requests=prepared.requests, engine=engine,
                              defaults=d),
            todo, grid_devices(device))
        for n, ck in enumerate(todo, 1):
            elapsed = time.monotonic() - t0
            est = sum(spent) / len(spent) if spent else 0.0
            if budget is not None and elapsed + est > budget:
                stopped = (f"time budget exceeded: {len(order) - len(todo) + n - 1} of "
                           f"{len(order)} checkpoints evaluated in {budget:.0f} s")
                break
            _index, outcome, crash = next(outcomes)
            outcome = outcome or {"error": f"engine worker: {crash}"}
            row, per_item = _score_row(ck, outcome, tp, sub.metric, counters, secrets)
            table.add(ck, per_item, outcome.get("answers"))
            rows[row.key] = R.sign_row(row, key, context)
            R.append_jsonl(output / R.RESULTS_JSONL, row)
            spent.append(row.seconds or 0.0)
            eta = (len(todo) - n) * (sum(spent) / len(spent))
            shown = ("" if ck.stage == "hidden" or row.value is None
                     else f" {sub.metric}={row.value:.4f}")
            status = ("" if row.status == "ok" else " ERROR" if ck.stage == "hidden"
                      else f" ERROR: {row.error}")
            log(f"[{len(order) - len(todo) + n}/{len(order)}] {ck.key} ({ck.stage}){shown}"
                f"{status} in {row.seconds:.1f} s, ETA {_fmt_s(eta)}")
            if not tp.alive:  # the task process died: nothing more can be scored
                raise TaskProcessError("crashed", row.error or "the task process stopped")
        outcomes.close()  # stops GPU workers still busy when the budget ran out
        doc["timings"]["grid_s"] = round(time.monotonic() - t_grid, 3)
        doc["engine"]["counters"] = counters
        ok = [r for r in rows.values() if r.status == "ok"]
        doc["checkpoints"] = {"total": len(order), "rows": len(rows), "ok": len(ok),
                              "errors": len(rows) - len(ok), "resumed": len(done),
                              "missing": [c.key for c in order if c.key not in rows]}
        if stopped:
            doc["status"], doc["error"] = "partial", stopped
        elif not ok:
            errs = {r.error for r in rows.values()}
            doc["status"] = "failed"
            doc["error"] = ("no checkpoint could be evaluated: " + "; ".join(sorted(
                e for e in errs if e))[:1000])
        else:
            doc["status"], doc["error"] = "ok", None
    except UserError as exc:
        doc["status"], doc["error"] = "failed", clean_text(str(exc), secrets, 2000)
        if isinstance(exc, TaskProcessError):
            doc["error_kind"] = exc.kind
    except Stopped:
        doc["status"] = "partial" if rows else "failed"
        doc["error"] = ("stopped by SIGTERM; a local re-run into the same output resumes "
                        "(on Codabench every run starts afresh)")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if tp is not None:
            tp.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        doc["timings"]["total_s"] = round(time.monotonic() - t0, 3)
        # the task process is gone: whatever it (or anyone) wrote to the output is replaced
        # by the runner's copy, and ingestion.json, signed over the final files, comes last
        if rows is not None:
            R.write_jsonl(output / R.RESULTS_JSONL, rows.values())
        if items is not None:
            R.write_jsonl(output / R.ITEMS_JSONL, items)
        if table is not None and rows is not None:
            write_outcomes(output / OUTCOMES_FILE, table.outcomes(manifest.checkpoints))
        R.write_ingestion(output, doc, key)
    if doc["status"] != "ok":
        log(f"ingest: {doc['status']}: {doc['error']}")
    return doc


def grid_devices(device: str) -> list[str]:
    """Where the checkpoints run: one worker per visible GPU, or the one device asked for."""
    if device in (None, "auto", "cuda"):
        found = shard.devices()
        if device == "cuda" and found == ["cpu"]:
            raise UserError("--device cuda was asked for but no GPU is visible; use --device "
                            "cpu or auto")
        return found
    return [device]


def engine_answers(ck: Checkpoint, device: str, shared: dict, *, requests, engine: str,
                   defaults) -> dict[str, Any]:
    """Trusted side of one checkpoint: load it, answer every request. Never raises, so a
    broken checkpoint becomes an error row and the grid goes on (also in a GPU worker)."""
    from e2lmc.engine import make_lm

    t = time.monotonic()
    try:
        lm = make_lm(engine, ck, device=device, dtype=defaults.dtype,
                     max_length=defaults.max_length, batch_tokens=defaults.batch_tokens,
                     hf_batch_size=defaults.hf_batch_size, shared=shared)
    except Exception as exc:  # noqa: BLE001 - a broken checkpoint must not stop the grid
        return {"error": f"checkpoint failed to load: {type(exc).__name__}: {exc}",
                "seconds": time.monotonic() - t}
    try:
        answers = answer_requests(lm, requests)
        counters = {k: v for k, v in (getattr(lm, "counters", None) or {}).items()
                    if isinstance(v, (int, float))}
        return {"answers": answers, "counters": counters, "seconds": time.monotonic() - t}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"engine failed: {type(exc).__name__}: {exc}",
                "seconds": time.monotonic() - t}
    finally:
        _release(lm)


def _score_row(ck: Checkpoint, outcome: dict[str, Any], tp: TaskProcess, metric: str,
               counters: dict, secrets: list[str]
               ) -> tuple[R.ResultRow, dict[str, list[float]] | None]:
    """Untrusted side of one checkpoint: the task process turns answers into metrics (and
    the declared metric per document, None when the checkpoint failed)."""
    t = time.monotonic()
    row = R.ResultRow(model=ck.model, checkpoint=ck.name, tokens_b=ck.tokens_b, stage=ck.stage,
                      metric=metric, value=None, iteration=ck.iteration)
    per_item = None
    if outcome.get("error"):
        row.status = "error"
        row.error = clean_text(outcome["error"], secrets, 500)
    else:
        for k, v in outcome["counters"].items():
            counters[k] = counters.get(k, 0) + v
        try:
            metrics, per_item = tp.score(outcome["answers"])
            row.metrics = metrics
            row.value = metrics.get(metric)
            row.stderr = metrics.get(stderr_key(metric))
            if row.value is None:
                row.error = f"metric {metric} is not a finite number for this checkpoint"
        except TaskProcessError as exc:
            row.status = "error"
            row.error = (str(exc) if ck.stage == "public" else
                         f"the task failed on a hidden checkpoint ({exc.kind})")
    row.seconds = round(outcome.get("seconds", 0.0) + time.monotonic() - t, 3)
    return row, per_item


def cli_ingest(args) -> int:
    doc = ingest(Path(args.submission), Path(args.input_data), Path(args.output),
                 engine=args.engine, device=args.device, time_budget=args.time_budget,
                 data_dir=Path(args.data_dir) if args.data_dir else None)
    if doc["status"] == "failed":
        raise UserError(doc["error"] or "ingestion failed")
    return 0
