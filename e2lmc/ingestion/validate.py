"""Checks on the loaded task before any checkpoint is loaded (cheap, participant-facing)."""

from __future__ import annotations

from typing import Any

from e2lmc.errors import UserError
from e2lmc.ingestion.replies import Prepared

MIN_DOCS = 100
MAX_DOCS = 15_000


def doc_count_error(task_name: str, docs: dict[str, int]) -> str:
    n_docs = sum(docs.values())
    where = f" (sum over {len(docs)} tasks)" if len(docs) > 1 else ""
    return (f"task {task_name}: {n_docs} documents{where}; the competition requires "
            f"{MIN_DOCS} to {MAX_DOCS:,} evaluated documents")


def check_task(prepared: Prepared, task_name: str, metric: str) -> dict[str, Any]:
    """Document count (the runner's), declared metric key and output type; returns the
    summary fields."""
    docs = prepared.docs
    n_docs = sum(docs.values())
    if not MIN_DOCS <= n_docs <= MAX_DOCS:
        raise UserError(doc_count_error(task_name, docs))
    keys = prepared.metric_keys
    if metric not in keys:
        shown = ", ".join(k for k in keys if "_stderr" not in k) or "none"
        raise UserError(f"task {task_name}: metric key {metric!r} (task_metric in "
                        f"metadata.yaml) is not among the task's results ({shown}); use one "
                        "of them, e.g. acc,none")
    types = sorted(set(prepared.task_types.values()))
    return {"n_docs": n_docs, "output_type": types[0] if len(types) == 1 else ",".join(types),
            "subtasks": sorted(docs)}
