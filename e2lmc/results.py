"""The ingestion output contract, shared by ingestion (writer) and scoring (reader).

Files in the ingestion output folder (Codabench: /app/output, then /app/input/res):
- `ingestion.json`  status ok | partial | failed, error, submission summary, models'
                    attributes, timings, engine counters, versions;
- `results.jsonl`   one row per (model, checkpoint), appended as each finishes;
- `items.jsonl`     the rendered items (prompt without few-shot, choices, gold answer).
Never a file named `metadata` (reserved by Codabench).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from e2lmc.errors import IngestionFailed, UserError

INGESTION_JSON = "ingestion.json"
RESULTS_JSONL = "results.jsonl"
ITEMS_JSONL = "items.jsonl"
STATUSES = ("ok", "partial", "failed")


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


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one line and make it durable, so a killed run loses at most that line."""
    line = json.dumps(asdict(record) if hasattr(record, "__dataclass_fields__") else record,
                      allow_nan=False, default=str)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
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


def read_results(res_dir: str | Path) -> list[ResultRow]:
    """Result rows; for a (model, checkpoint) that appears twice the last row wins."""
    path = Path(res_dir) / RESULTS_JSONL
    rows: dict[str, ResultRow] = {}
    names = set(ResultRow.__dataclass_fields__)
    for doc in iter_jsonl(path):
        row = ResultRow(**{k: v for k, v in doc.items() if k in names})
        rows[row.key] = row
    return list(rows.values())


def read_items(res_dir: str | Path) -> list[Item]:
    names = set(Item.__dataclass_fields__)
    return [Item(**{k: v for k, v in d.items() if k in names})
            for d in iter_jsonl(Path(res_dir) / ITEMS_JSONL)]


def read_codabench_exit_code(res_dir: str | Path) -> int | None:
    """`ingestionExitCode` from the `metadata` file Codabench puts in the prediction output."""
    path = Path(res_dir) / "metadata"
    if not path.is_file():
        return None
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    if isinstance(doc, dict) and doc.get("ingestionExitCode") is not None:
        try:
            return int(doc["ingestionExitCode"])
        except (TypeError, ValueError):
            return None
    return None


def read_ingestion(res_dir: str | Path, allow_partial: bool = False) -> dict[str, Any]:
    """`ingestion.json`, after checking that the prediction step finished.

    Raises IngestionFailed naming the cause when the step failed, stopped early or left
    no summary: a leaderboard row must never come from a half-evaluated submission.
    """
    res = Path(res_dir)
    code = read_codabench_exit_code(res)
    path = res / INGESTION_JSON
    doc: dict[str, Any] | None = None
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = None
    if doc is None:
        cause = f"exit code {code}" if code not in (None, 0) else "no readable ingestion.json"
        raise IngestionFailed(f"{path}: the ingestion did not finish ({cause}); see the "
                              "ingestion log of this submission")
    status = doc.get("status")
    if status == "failed" or (code not in (None, 0)):
        msg = doc.get("error") or f"ingestion exit code {code}"
        raise IngestionFailed(f"ingestion failed: {msg}")
    if status == "partial" and not allow_partial:
        msg = doc.get("error") or "time budget reached before every checkpoint was evaluated"
        raise IngestionFailed(f"ingestion is partial: {msg}; raise the time budget or "
                              "re-run the submission (finished checkpoints are kept)")
    if status not in STATUSES:
        raise IngestionFailed(f"{path}: unknown status {status!r}")
    return doc
