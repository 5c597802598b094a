"""The ingestion output contract, shared by ingestion (writer) and scoring (reader).

Files in the ingestion output folder (Codabench: /app/output, then /app/input/res):
- `ingestion.json`  status ok | partial | failed, error, submission summary, models'
                    attributes, timings, engine counters, versions; the SHA-256 of the
                    two files below and the row count (`outputs`); a `signature`;
- `results.jsonl`   one row per (model, checkpoint), appended as each finishes, each
                    with a `signature` bound to the submission; rewritten whole at the end;
- `items.jsonl`     the rendered items (prompt without few-shot, choices, gold answer);
- `item_outcomes.parquet`  each document's value and margin on each checkpoint
                    (e2lmc.outcomes; hidden checkpoints included, like results.jsonl).
Never a file named `metadata` (reserved by Codabench). The signatures (e2lmc.signing) let
scoring refuse an output that anyone but the ingestion program wrote or changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from e2lmc import signing
from e2lmc.errors import IngestionFailed, Unverified, UserError
from e2lmc.outcomes import OUTCOMES_FILE, Outcomes, read_outcomes

INGESTION_JSON = "ingestion.json"
RESULTS_JSONL = "results.jsonl"
ITEMS_JSONL = "items.jsonl"
PLATFORM_METADATA = "metadata"  # written by Codabench's worker, never by us
SIGNATURE = "signature"
STATUSES = ("ok", "partial", "failed")
RERUN = "re-run the submission"


@dataclass
class ResultRow:
    """One evaluated (model, checkpoint). `value` is the declared metric, None on error."""

    model: str
    checkpoint: str
    tokens_b: float
    stage: str
    metric: str
    value: float | None
    stderr: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    iteration: int | None = None
    seconds: float | None = None
    status: str = "ok"  # ok | error
    error: str | None = None
    signature: str | None = None  # see sign_row

    @property
    def key(self) -> str:
        return f"{self.model}/{self.checkpoint}"


@dataclass
class Item:
    """One rendered document, as the judge and the leakage check read it."""

    task: str
    doc_id: int
    prompt: str  # the document's own prompt, few-shot examples excluded
    gold: str  # the gold answer as text
    choices: list[str] | None = None
    gold_index: int | None = None


def finite_or_none(x: Any) -> float | None:
    """JSON has no NaN: non-finite numbers become None (null)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def write_json(path: str | Path, doc: Any) -> None:
    """Atomic write of strict JSON (no NaN/Infinity)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    tmp.replace(path)


def _line(record: Any) -> str:
    return json.dumps(asdict(record) if hasattr(record, "__dataclass_fields__") else record,
                      allow_nan=False, default=str)


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one line and make it durable, so a killed run loses at most that line."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(_line(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """The whole file at once, atomically: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(_line(r) + "\n" for r in records)
    tmp.replace(path)


def _parse_jsonl(text: str, path: Path) -> Iterator[Any]:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # torn tail
                return
            raise UserError(f"{path}: line {i + 1} is not valid JSON; the ingestion output is "
                            "corrupt, re-run the ingestion") from None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    yield from _parse_jsonl(text, path)


def result_row(doc: dict[str, Any]) -> ResultRow:
    """A results.jsonl line as a ResultRow (unknown keys ignored)."""
    return ResultRow(**{k: v for k, v in doc.items() if k in ResultRow.__dataclass_fields__})


def _item(doc: dict[str, Any]) -> Item:
    return Item(**{k: v for k, v in doc.items() if k in Item.__dataclass_fields__})


def read_results(res_dir: str | Path) -> list[ResultRow]:
    """Result rows, unverified (local tools); for a (model, checkpoint) that appears twice
    the last row wins. Scoring reads through read_verified."""
    rows = {r.key: r for r in map(result_row, iter_jsonl(Path(res_dir) / RESULTS_JSONL))}
    return list(rows.values())


def read_items(res_dir: str | Path) -> list[Item]:
    return [_item(d) for d in iter_jsonl(Path(res_dir) / ITEMS_JSONL)]


# --------------------------------------------------------------------------- signatures
def signing_context(submission: dict[str, Any]) -> dict[str, Any]:
    """What a row is signed together with (from the submission summary of ingestion.json),
    so that a row cannot be moved to another submission, task or metric."""
    return {k: submission.get(k) for k in ("fingerprint", "task", "metric")}


def _unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != SIGNATURE}


def sign_row(row: ResultRow, key: bytes, context: dict[str, Any]) -> ResultRow:
    """Set the row's signature over its fields (the signature excluded) and its context."""
    row.signature = signing.sign(key, {"row": _unsigned(asdict(row)), **context})
    return row


def row_verifies(doc: Any, key: bytes, context: dict[str, Any]) -> bool:
    """Is `doc` (a results.jsonl line) a row signed under `key` for this context?"""
    return isinstance(doc, dict) and signing.verify(
        key, {"row": _unsigned(doc), **context}, doc.get(SIGNATURE))


def signature_problem(doc: dict[str, Any], key: bytes) -> str | None:
    """Why a signed document (ingestion.json) does not verify; None when it does."""
    if doc.get(SIGNATURE) is None:
        return "it is not signed"
    if not signing.verify(key, _unsigned(doc), doc[SIGNATURE]):
        return ("its signature does not verify (it was changed after the ingestion, or "
                "signed with another key than the reference data's signing.key, or the "
                "per-user key where that has none)")
    return None


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _count_rows(data: bytes | None) -> int:
    return sum(1 for line in (data or b"").split(b"\n") if line.strip())


def write_ingestion(res_dir: str | Path, doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Write ingestion.json, signed, over the files as they are now: the SHA-256 of
    results.jsonl, items.jsonl and item_outcomes.parquet (null when absent) and the row
    count. Written last, so that the signature covers the final files."""
    res = Path(res_dir)
    doc.pop(SIGNATURE, None)
    data = {name: _read_bytes(res / name) for name in (RESULTS_JSONL, ITEMS_JSONL,
                                                       OUTCOMES_FILE)}
    doc["outputs"] = {"sha256": {name: _sha256(b) for name, b in data.items()},
                      "rows": _count_rows(data[RESULTS_JSONL])}
    doc[SIGNATURE] = signing.sign(key, doc)
    write_json(res / INGESTION_JSON, doc)
    return doc


def read_signed_json(path: Path, key: bytes) -> dict[str, Any] | None:
    """A signed JSON document that verifies under `key`, else None (resume: start clean)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and signature_problem(doc, key) is None else None


# --------------------------------------------------------------------------- scoring side
def _exit_code(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _platform_exit_code(res: Path) -> int | None:
    """`ingestionExitCode` from the `metadata` file Codabench puts in the prediction output,
    after refusing an output that a submission's own program could have written: the
    worker runs a submission's `command` beside the ingestion, with the same /app/output
    mounted read-write, and records its exit code as `exitCode` (null when none ran)."""
    path = res / PLATFORM_METADATA
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise IngestionFailed(f"{path}: not the platform's YAML mapping (exitCode, "
                              "ingestionExitCode), so how the prediction step ended is "
                              f"unknown; {RERUN}")
    if doc.get("exitCode") is not None:
        raise Unverified(f"{path}: the submission carries its own command (`command` in its "
                         "metadata), which the platform ran beside the ingestion with write "
                         f"access to its output (exit code {doc['exitCode']}), so the output "
                         "cannot be trusted; remove `command` from the submission's "
                         "metadata.yaml and submit again")
    return _exit_code(doc.get("ingestionExitCode"))


def read_ingestion(res_dir: str | Path, key: bytes, allow_partial: bool = False
                   ) -> dict[str, Any]:
    """`ingestion.json`, after checking that the prediction step finished and that the
    ingestion program signed it with `key`.

    Raises IngestionFailed naming the cause when the step failed, stopped early or left
    no summary: a leaderboard row must never come from a half-evaluated submission.
    """
    res = Path(res_dir)
    code = _platform_exit_code(res)
    path = res / INGESTION_JSON
    doc: Any = None
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
    if not isinstance(doc, dict):
        cause = f"exit code {code}" if code not in (None, 0) else "no readable ingestion.json"
        raise IngestionFailed(f"{path}: the ingestion did not finish ({cause}); see the "
                              "ingestion log of this submission")
    status = doc.get("status")
    if status == "failed" or (code not in (None, 0)):
        msg = doc.get("error") or f"ingestion exit code {code}"
        raise IngestionFailed(f"ingestion failed: {msg}")
    if status == "partial" and not allow_partial:
        msg = doc.get("error") or "the run stopped before every checkpoint was evaluated"
        raise IngestionFailed(f"ingestion is partial: {msg}; a partial grid gets no score. "
                              "A re-run on Codabench starts from nothing, so make the task "
                              "cheaper to evaluate (fewer documents, shorter prompts or "
                              "generations); organizers set the budget (manifest "
                              "time_budget_s) within the phase's execution_time_limit")
    if status not in STATUSES:
        raise IngestionFailed(f"{path}: unknown status {status!r}")
    problem = signature_problem(doc, key)
    if problem:
        raise Unverified(f"{path}: {problem}, so it is not the ingestion program's; {RERUN}")
    return doc


def read_verified(res_dir: str | Path, key: bytes
                  ) -> tuple[dict[str, Any], list[ResultRow], list[Item]]:
    """ingestion.json, the result rows and the items, each proven to be what the
    ingestion program wrote: the document's signature, the files' SHA-256 and row count
    it records, and every row's signature. Refuses (Unverified) naming file and cause."""
    res = Path(res_dir)
    doc = read_ingestion(res, key)
    outputs = doc.get("outputs") if isinstance(doc.get("outputs"), dict) else {}
    recorded = outputs.get("sha256") if isinstance(outputs.get("sha256"), dict) else {}
    data: dict[str, bytes] = {}
    for name in (RESULTS_JSONL, ITEMS_JSONL):
        raw = _read_bytes(res / name)
        if name not in recorded or _sha256(raw) != recorded[name]:
            raise Unverified(f"{res / name}: not the file the ingestion program wrote (its "
                             "SHA-256 differs from the one ingestion.json records); " + RERUN)
        data[name] = raw or b""
    path = res / RESULTS_JSONL
    docs = list(_parse_jsonl(data[RESULTS_JSONL].decode("utf-8"), path))
    if len(docs) != outputs.get("rows"):
        raise Unverified(f"{path}: {len(docs)} rows where ingestion.json records "
                         f"{outputs.get('rows')}; {RERUN}")
    context = signing_context(doc.get("submission") or {})
    rows: dict[str, ResultRow] = {}
    for i, d in enumerate(docs, 1):
        if not row_verifies(d, key, context):
            cause = "is not signed" if not (isinstance(d, dict) and d.get(SIGNATURE)) else (
                "has a signature that does not verify for this submission")
            raise Unverified(f"{path}: row {i} {cause}; {RERUN}")
        row = result_row(d)
        rows[row.key] = row
    items = [_item(d) for d in
             _parse_jsonl(data[ITEMS_JSONL].decode("utf-8"), res / ITEMS_JSONL)]
    return doc, list(rows.values()), items


def read_verified_outcomes(res_dir: str | Path, doc: dict[str, Any]) -> Outcomes | None:
    """The per-item outcomes of a verified ingestion output (`doc`: from read_verified),
    None when the run kept none; refuses a file that is not the one the ingestion signed."""
    path = Path(res_dir) / OUTCOMES_FILE
    recorded = ((doc.get("outputs") or {}).get("sha256") or {}).get(OUTCOMES_FILE)
    raw = _read_bytes(path)
    if recorded is None and raw is None:
        return None
    if _sha256(raw) != recorded:
        raise Unverified(f"{path}: not the file the ingestion program wrote (its SHA-256 "
                         "differs from the one ingestion.json records); " + RERUN)
    return read_outcomes(path)
