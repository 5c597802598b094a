"""Submission formats, read (as the ingestion does) and written (by participants' tools):
the official patch format and the task-folder format.

Official: `evaluation.patch` (git diff against lm-eval adding a task under
`lm_eval/tasks/`) + `metadata.yaml` (`task_name`, `task_metric`, `hf_token`).
Task folder: lm-eval YAML(s), Python helpers, local data files + `metadata.yaml`.
Either may come zipped, optionally under one top folder; a Codabench `metadata` file is
ignored. A `command` in the submission's metadata is refused: Codabench would run it as a
program of its own, beside the ingestion and with write access to its output. No
participant code runs here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2lmc.errors import UserError
from e2lmc.ingestion import patch, unpack
from e2lmc.ingestion.replies import METRIC_KEY
from e2lmc.ingestion.taskyaml import check_task_paths, check_yaml

METADATA_YAML = "metadata.yaml"
PATCH_FILE = "evaluation.patch"
CODABENCH_METADATA = "metadata"
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
NOT_TASK_FILES = {METADATA_YAML, "metadata.yml", PATCH_FILE, CODABENCH_METADATA}


@dataclass
class Submission:
    format: str  # official | task_folder
    tasks_dir: Path  # lm-eval include_path: the task files only
    task_name: str
    metric: str
    files: list[str]
    fingerprint: str
    hf_token: str | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """What ingestion.json may say about the submission (never the token)."""
        return {"format": self.format, "task": self.task_name, "metric": self.metric,
                "files": self.files, "fingerprint": self.fingerprint,
                "has_hf_token": bool(self.hf_token)}


def refuse_command(folder: Path) -> None:
    """Refuse a `command` in `folder`'s metadata files (Codabench takes it from
    metadata.yaml, else from `metadata`; metadata.yml is ours)."""
    for name in (METADATA_YAML, "metadata.yml", CODABENCH_METADATA):
        path = folder / name
        if not path.is_file():
            continue
        doc = check_yaml(path, f"submission {name}")  # unreadable: refused, to be safe
        if isinstance(doc, dict) and "command" in doc:
            raise UserError(f"submission {name}: has a `command`, which Codabench would run "
                            "as a program of its own, beside the ingestion and with write "
                            "access to its output; remove the `command` line (the "
                            "organizers' ingestion program runs your task)")


def read_metadata(root: Path) -> dict[str, Any]:
    path = root / METADATA_YAML
    if not path.is_file():
        alt = root / "metadata.yml"
        path = alt if alt.is_file() else path
    if not path.is_file():
        raise UserError(f"submission: {METADATA_YAML} not found at the top of the submission; "
                        "add one with task_name and task_metric (see docs/submissions.md)")
    doc = check_yaml(path, f"submission {path.name}")
    if not isinstance(doc, dict):
        raise UserError(f"submission {path.name}: expected a mapping with task_name and "
                        "task_metric")
    refuse_command(root)
    for key in ("task_name", "task_metric"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise UserError(f"submission {path.name}: `{key}` is missing or not a string; "
                            "e.g. task_name: my_task, task_metric: acc,none")
    if not TASK_NAME.fullmatch(doc["task_name"].strip()):
        raise UserError(f"submission {path.name}: `task_name` must be a task or group name "
                        "(letters, digits, _ . -; at most 128 characters)")
    if not METRIC_KEY.fullmatch(doc["task_metric"].strip()):
        raise UserError(f"submission {path.name}: `task_metric` must be a results key such "
                        "as acc,none (letters, digits, _ . - and one ,filter)")
    token = doc.get("hf_token")
    if token is not None and not isinstance(token, str):
        raise UserError(f"submission {path.name}: `hf_token` must be a string")
    return doc


def fingerprint(tasks_dir: Path) -> tuple[list[str], str]:
    """Sorted task files and a SHA-256 over their names and bytes."""
    h = hashlib.sha256()
    files = sorted(p.relative_to(tasks_dir).as_posix() for p in tasks_dir.rglob("*")
                   if p.is_file())
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update((tasks_dir / rel).read_bytes())
        h.update(b"\0")
    return files, h.hexdigest()


def load_submission(src: str | Path, workdir: Path,
                    limits: unpack.UnpackLimits = unpack.UnpackLimits()) -> Submission:
    """Stage, recognise and check a submission; the task files land in workdir/tasks."""
    staged = workdir / "staged"
    root = unpack.stage(src, staged, limits)
    meta = read_metadata(root)
    if root != staged:  # Codabench reads the metadata at the top of the unzipped submission
        refuse_command(staged)
    tasks_dir = workdir / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    if (root / PATCH_FILE).is_file():
        fmt = "official"
        try:
            text = (root / PATCH_FILE).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"submission {PATCH_FILE}: not UTF-8 text") from None
        for rel, content in patch.task_files(text).items():
            out = (tasks_dir / rel).resolve()
            if tasks_dir.resolve() not in out.parents:
                raise UserError(f"submission {PATCH_FILE}: {rel} resolves outside the tasks "
                                "folder; refused")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(content, encoding="utf-8")
    else:
        fmt = "task_folder"
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root)
            if p.is_dir() or (len(rel.parts) == 1 and rel.name in NOT_TASK_FILES):
                continue
            out = tasks_dir / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, out)
    yamls = [p for p in tasks_dir.rglob("*") if p.suffix in (".yaml", ".yml")]
    if not yamls:
        raise UserError("submission: no task YAML found; add the lm-eval task YAML "
                        f"({'in the patch under lm_eval/tasks/' if fmt == 'official' else 'next to metadata.yaml'})")
    check_task_paths(tasks_dir)  # parses every YAML; nothing may point outside the task
    files, digest = fingerprint(tasks_dir)
    shutil.rmtree(staged)  # metadata.yaml holds the token: the task process must not find it
    return Submission(format=fmt, tasks_dir=tasks_dir, task_name=meta["task_name"].strip(),
                      metric=meta["task_metric"].strip(), files=files, fingerprint=digest,
                      hf_token=meta.get("hf_token") or None)


def make_submission(task_dir: Path, task_name: str, metric: str, output: Path,
                    hf_token: str | None = None) -> Path:
    """Zip a task folder as a task-folder submission, after the same checks ingestion does."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise UserError(f"{task_dir}: not a folder; pass the folder holding the task YAML(s)")
    meta = {"task_name": task_name, "task_metric": metric}
    if hf_token:
        meta["hf_token"] = hf_token
    with tempfile.TemporaryDirectory(prefix="e2lmc-submission-") as tmp:
        stage = Path(tmp) / "stage"
        unpack.copy_folder(task_dir, stage)
        for name in NOT_TASK_FILES:
            (stage / name).unlink(missing_ok=True)
        (stage / METADATA_YAML).write_text(yaml.safe_dump(meta, sort_keys=False))
        (stage / CODABENCH_METADATA).write_text("description: e2lmc task submission\n")
        load_submission(stage, Path(tmp) / "check")  # same checks as the ingestion
        return write_zip(output, {p.relative_to(stage).as_posix(): p.read_bytes()
                                  for p in stage.rglob("*") if p.is_file()})


# --------------------------------------------------------------------------- writing
def git_blob_id(data: bytes) -> str:
    """The id git gives a file's contents (a patch's `index` line)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def evaluation_patch(files: dict[str, str], dest: str) -> str:
    """A `git diff` that adds `files` under `dest` (e.g. lm_eval/tasks/mmlu_var): the
    official submission's `evaluation.patch`, applicable with `git apply`."""
    out = []
    for name, text in sorted(files.items()):
        path = f"{dest.strip('/')}/{name}"
        lines = text.splitlines()
        out += [f"diff --git a/{path} b/{path}", "new file mode 100644",
                f"index 0000000..{git_blob_id(text.encode())[:7]}", "--- /dev/null",
                f"+++ b/{path}", f"@@ -0,0 +1{',' + str(len(lines)) if len(lines) != 1 else ''} @@"]
        out += ["+" + line for line in lines]
        if text and not text.endswith("\n"):
            out.append("\\ No newline at end of file")
    return "\n".join(out) + "\n"


ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_zip(path: str | Path, files: dict[str, bytes | str]) -> Path:
    """A reproducible zip (sorted entries, fixed timestamps), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            data = files[name]
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return path


def official_submission(files: dict[str, str], task_name: str, metric_key: str,
                        output: str | Path, dest: str | None = None,
                        hf_token: str | None = None) -> Path:
    """The organizers' format: `evaluation.patch` adding the task folder under
    `lm_eval/tasks/` + `metadata.yaml` (task to run, results key, optional HF token), checked
    as the ingestion reads it. (`e2lmc make-submission` writes the task-folder format.)"""
    meta: dict[str, Any] = {"task_name": task_name, "task_metric": metric_key}
    if hf_token:
        meta["hf_token"] = hf_token
    out = write_zip(output, {
        PATCH_FILE: evaluation_patch(files, dest or f"lm_eval/tasks/{task_name}"),
        METADATA_YAML: yaml.safe_dump(meta, sort_keys=False),
        CODABENCH_METADATA: "description: e2lmc task submission\n",
    })
    try:
        with tempfile.TemporaryDirectory(prefix="e2lmc-check-") as tmp:
            load_submission(out, Path(tmp))
    except UserError:
        out.unlink()  # nothing half-right is left behind
        raise
    return out


def cli_make_submission(args) -> int:
    out = make_submission(Path(args.task_dir), args.task_name, args.metric, Path(args.output),
                          hf_token=args.hf_token)
    print(out)
    return 0
