"""How long a step may run on Codabench, and the ingestion time budget that fits in it.

Codabench runs the prediction step and the scoring step as two separate runs, each one
killed at the phase's `execution_time_limit` (codalab/codabench
compute_worker/compute_worker.py, `Run.start`: a `signal.alarm` around the step's
containers, which are then force-removed; nothing is uploaded and the submission fails
with "Execution Time Limit exceeded"). Without a `queue` the site caps that limit at the
default queue's (src/apps/competitions/tasks.py, `_send_to_compute_worker`:
`min(MAX_EXECUTION_TIME_LIMIT, execution_time_limit)`, 600 s unless the site changes it).

So the ingestion stops itself first (manifest `defaults.time_budget_s`), early enough to
write its output, and scoring can tell the participant "time budget exceeded: N of M
checkpoints" instead of the platform's bare time-out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_QUEUE_LIMIT_S = 600  # the site's MAX_EXECUTION_TIME_LIMIT default
DEFAULT_PHASE_LIMIT_S = 600  # Phase.execution_time_limit when the YAML gives none
# Kept between the budget and the limit: container and interpreter start-up before the
# budget's clock starts, the checkpoint in flight when the budget runs out, the outputs.
MARGIN_FRACTION = 0.05
MIN_MARGIN_S = 120
BUDGET_KEY = "time_budget_s"
MANIFEST = "manifest.yaml"


def step_limit(doc: dict[str, Any], phase: dict[str, Any]) -> int:
    """The seconds one step of `phase` may run on the platform."""
    limit = phase.get("execution_time_limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = DEFAULT_PHASE_LIMIT_S  # absent (the platform's default) or reported as bad
    if not doc.get("queue"):
        limit = min(limit, DEFAULT_QUEUE_LIMIT_S)
    return int(limit)


def task_limit(doc: dict[str, Any], task: dict[str, Any]) -> int | None:
    """The shortest step limit among the phases that run `task` (None: no phase does)."""
    limits = [step_limit(doc, p) for p in doc.get("phases") or []
              if isinstance(p, dict) and task.get("index") in (p.get("tasks") or [])]
    return min(limits) if limits else None


def safe_budget(limit: float) -> int:
    """The largest ingestion budget that leaves the margin before `limit`."""
    return max(0, int(limit - max(MIN_MARGIN_S, MARGIN_FRACTION * limit)))


def manifest_budget(input_dir: Path) -> tuple[bool, Any]:
    """(whether `input_dir` holds a manifest, its `defaults.time_budget_s`)."""
    path = input_dir / MANIFEST
    if not path.is_file():
        return False, None
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return True, None
    defaults = doc.get("defaults") if isinstance(doc, dict) else None
    return True, defaults.get(BUDGET_KEY) if isinstance(defaults, dict) else None


def budget_problem(budget: Any, limit: int) -> str | None:
    """Why `budget` does not fit a step limit of `limit` seconds, or None."""
    most = safe_budget(limit)
    fix = f"set defaults.{BUDGET_KEY} to at most {most} s"
    if budget is None:
        return (f"no defaults.{BUDGET_KEY}: at the {limit} s limit the platform kills the "
                "ingestion and keeps nothing, so the participant sees only a time-out; " + fix)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        return f"defaults.{BUDGET_KEY} is {budget!r}, not a positive number of seconds; {fix}"
    if budget > most:
        return (f"defaults.{BUDGET_KEY} {budget:g} s leaves less than "
                f"{limit - most} s of the {limit} s limit for start-up, the last checkpoint "
                f"and the outputs; {fix}")
    return None


def fill_budget(manifest: dict[str, Any], limit: float) -> bool:
    """Give a manifest document without a budget the safe one for `limit`; True if set."""
    defaults = manifest.setdefault("defaults", {})
    if not isinstance(defaults, dict) or defaults.get(BUDGET_KEY) is not None:
        return False
    defaults[BUDGET_KEY] = safe_budget(limit)
    return True
