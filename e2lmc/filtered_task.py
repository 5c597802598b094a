"""A copy of a submission whose task keeps only chosen documents: a ready submission.

Each leaf task's YAML gets `process_docs: !function e2lmc_keep.keep_N`, a generated helper
beside it that first runs the task's own `process_docs` (if it has one, declared in the
YAML or in a file it includes) and then keeps the documents at the chosen doc ids: the
ids the ingestion recorded are positions in the documents after the task's own
`process_docs`, so the selection reads them where they mean what they meant. Nothing else
changes. The copy has the input's format (a task folder, or the official
`evaluation.patch`, rewritten as new files under `lm_eval/tasks/`), comes as a folder and
a zip, and passes the same checks as the ingestion (`load_submission`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2lmc.errors import UserError
from e2lmc.ingestion import unpack
from e2lmc.ingestion.patch import TASKS_PREFIX
from e2lmc.ingestion.submission import (NOT_TASK_FILES, PATCH_FILE, evaluation_patch,
                                        load_submission, write_zip)
from e2lmc.ingestion.taskyaml import YAML_SUFFIXES, FunctionRef, check_yaml

HELPER = "e2lmc_keep"
FOLDER, ZIP = "filtered_submission", "filtered_submission.zip"
_TOP_KEY = re.compile(r"^process_docs\s*:")


@dataclass
class Filtered:
    folder: Path
    zip: Path
    documents: int
    format: str


def _merged(path: Path, seen: frozenset[Path] = frozenset()) -> dict[str, tuple[Any, Path]]:
    """A task YAML's keys as lm-eval merges them (included files first, its own keys win),
    each with the file that declares it."""
    doc = None if path in seen else check_yaml(path, f"submission {path.name}")
    if not isinstance(doc, dict):
        return {}
    out: dict[str, tuple[Any, Path]] = {}
    inc = doc.get("include")
    for name in inc if isinstance(inc, list) else ([inc] if inc else []):
        out.update(_merged((path.parent / str(name)).resolve(), seen | {path}))
    out.update({k: (v, path) for k, v in doc.items() if k != "include"})
    return out


def _task_yaml(tasks_dir: Path, task: str) -> tuple[Path, dict[str, tuple[Any, Path]]]:
    """The YAML that defines leaf task `task` (its own `task:` key names it)."""
    found = []
    for path in sorted(p.resolve() for p in tasks_dir.rglob("*") if p.suffix in YAML_SUFFIXES):
        doc = check_yaml(path, f"submission {path.name}")
        if isinstance(doc, dict) and doc.get("task") == task:
            found.append(path)
    if len(found) != 1:
        where = "no task YAML has" if not found else f"{len(found)} task YAMLs have"
        raise UserError(f"task {task}: {where} `task: {task}`, so the documents to keep cannot "
                        "be attached to it; filter the data by hand with the doc ids in "
                        "items.csv (column kept)")
    merged = _merged(found[0])
    if "class" in merged:
        raise UserError(f"task {task}: defined by a Python class (`class:`), which has no "
                        "process_docs to extend; filter the data by hand with items.csv")
    return found[0], merged


def _call(ref: Any, declared_in: Path, helper_dir: Path) -> str:
    """Python that loads the task's own process_docs, as lm-eval would."""
    if not isinstance(ref, FunctionRef) or not isinstance(ref.value, str):
        raise UserError(f"submission {declared_in.name}: `process_docs` must be a `!function`")
    module, _, func = ref.value.rpartition(".")
    local = declared_in.parent.joinpath(*module.split(".")).with_suffix(".py")
    if local.is_file():
        return f"_local({os.path.relpath(local, helper_dir)!r}, {func!r})"
    return f"getattr(importlib.import_module({module!r}), {func!r})"


HELPER_HEAD = '''"""Documents kept by `e2lmc analyze`: the task's own documents (after its own
process_docs, if any) at the doc ids below; the others are dropped."""

import importlib
import importlib.util
from pathlib import Path

KEEP = {keep}


def _local(file, name):
    """A function of a file of this task folder, loaded as lm-eval loads it."""
    path = Path(__file__).resolve().parent / file
    spec = importlib.util.spec_from_file_location("e2lmc_keep_base_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
'''


def _helper_name(folder: Path) -> str:
    """A module name free in `folder` (a filtered task filtered again keeps both)."""
    n = 1
    while (folder / f"{HELPER}{'' if n == 1 else f'_{n}'}.py").exists():
        n += 1
    return HELPER if n == 1 else f"{HELPER}_{n}"


def _set_process_docs(path: Path, ref: str) -> None:
    """Point the YAML's top-level process_docs at `ref`, leaving every other line as is."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, skipping = [], False
    for line in lines:
        if _TOP_KEY.match(line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[:1] in (" ", "\t")):
            continue
        skipping = False
        out.append(line)
    out.append(f"process_docs: !function {ref}")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    doc = check_yaml(path, f"submission {path.name}")
    if not (isinstance(doc.get("process_docs"), FunctionRef)
            and doc["process_docs"].value == ref):
        raise UserError(f"submission {path.name}: could not set process_docs; filter the data "
                        "by hand with the doc ids in items.csv")


def attach(tasks_dir: Path, keep: dict[str, list[int]]) -> None:
    """Make every leaf task of `keep` select its kept doc ids (helpers written in place)."""
    plans: dict[Path, list[tuple[str, Path, str | None]]] = {}
    for task in sorted(keep):
        path, merged = _task_yaml(tasks_dir, task)
        base = (_call(*merged["process_docs"], path.parent) if "process_docs" in merged
                else None)
        plans.setdefault(path.parent, []).append((task, path, base))
    for folder, tasks in plans.items():
        name = _helper_name(folder)
        body = [HELPER_HEAD.format(keep=json.dumps({t: sorted(keep[t]) for t, _, _ in tasks}))]
        for i, (task, path, base) in enumerate(tasks):
            first = f"    dataset = {base}(dataset)\n" if base else ""
            body.append(f"\n\ndef keep_{i}(dataset):\n{first}"
                        f"    return dataset.select(KEEP[{task!r}])\n")
            _set_process_docs(path, f"{name}.keep_{i}")
        (folder / f"{name}.py").write_text("".join(body), encoding="utf-8")


def _task_texts(tasks_dir: Path) -> dict[str, str]:
    try:
        return {p.relative_to(tasks_dir).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(tasks_dir.rglob("*")) if p.is_file()}
    except UnicodeDecodeError:
        raise UserError("submission: a task file is not UTF-8 text, which the patch format "
                        "cannot carry; submit the filtered task as a task folder") from None


def write_filtered(submission: Path, keep: dict[str, list[int]], out_dir: Path,
                   fingerprint: str | None) -> Filtered:
    """The filtered copy of `submission` under `out_dir` (FOLDER and ZIP), after checking
    that it is the submission the ingestion ran (`fingerprint` from ingestion.json)."""

    with tempfile.TemporaryDirectory(prefix="e2lmc-filter-") as tmp:
        sub = load_submission(submission, Path(tmp) / "load")
        if fingerprint is not None and sub.fingerprint != fingerprint:
            raise UserError(f"{submission}: not the submission this ingestion output comes "
                            "from (its task files differ); pass the submission you ingested")
        attach(sub.tasks_dir, keep)
        root = unpack.stage(submission, Path(tmp) / "staged")
        files: dict[str, bytes | str] = {p.name: p.read_bytes() for p in root.iterdir()
                                         if p.is_file() and p.name in NOT_TASK_FILES
                                         and p.name != PATCH_FILE}
        if sub.format == "official":
            files[PATCH_FILE] = evaluation_patch(_task_texts(sub.tasks_dir),
                                                 TASKS_PREFIX.rstrip("/"))
        else:
            files.update({p.relative_to(sub.tasks_dir).as_posix(): p.read_bytes()
                          for p in sorted(sub.tasks_dir.rglob("*")) if p.is_file()})
        out_dir.mkdir(parents=True, exist_ok=True)
        folder, zipped = out_dir / FOLDER, out_dir / ZIP
        shutil.rmtree(folder, ignore_errors=True)
        for rel, data in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.encode() if isinstance(data, str) else data)
        write_zip(zipped, files)
        load_submission(zipped, Path(tmp) / "check")  # the ingestion's own checks
    return Filtered(folder, zipped, sum(len(v) for v in keep.values()), sub.format)
