"""`e2lmc bundle build`: the zip organizers upload to Codabench.

The repository is the bundle's source: competition.yaml names every part. The build copies
exactly those parts (no caches), puts a copy of the e2lmc package into each program folder
(Codabench zips program folders on their own, so they cannot import from the repo),
attaches `starting_kit/` to every phase when the repository has one, adds the judge key
from the organizer's file to each task's reference data and one fresh signing key
(e2lmc.signing) to every task's input and reference data, writes the organizer's GPU
queue (`--queue`) into competition.yaml and a time budget into any task manifest that has
none (e2lmc.bundle.timing: what fits the phases' step limit), checks the result with
`e2lmc bundle check`, and only then writes the zip (atomically).

Keys never come from the repository: any judge or signing key file found there is left
out. Each build has a new signing key, so only the key file differs between two builds
of the same sources.
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from e2lmc import signing
from e2lmc.bundle import timing
from e2lmc.bundle.check import check_bundle_dir
from e2lmc.bundle.layout import (COMPETITION_YAML, DATA_KEYS, STARTING_KIT, as_list,
                                 copy_clean, default_root, install_judge_key, judge_key_name,
                                 load_competition, program_dirs, referenced_paths,
                                 vendor_package)
from e2lmc.errors import UserError

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip
# (but for the signing key, new in each build)


def _reference_dirs(doc: dict[str, Any]) -> list[str]:
    return [t["reference_data"] for t in as_list(doc.get("tasks"))
            if isinstance(t, dict) and isinstance(t.get("reference_data"), str)]


def _data_dirs(doc: dict[str, Any]) -> list[str]:
    """Every task's input_data and reference_data folder (tasks defined in the bundle)."""
    return [t[k] for t in as_list(doc.get("tasks")) if isinstance(t, dict) and "key" not in t
            for k in DATA_KEYS if isinstance(t.get(k), str)]


def _key_files_in_repo(root: Path, doc: dict[str, Any]) -> list[str]:
    """Key file names (judge keys per reference folder, the signing key), to keep them
    out of the copy."""
    names = {judge_key_name(root / rel) for rel in _reference_dirs(doc) if (root / rel).is_dir()}
    return sorted(names | {signing.KEY_NAME})


def _install_signing_key(dest: Path, doc: dict[str, Any]) -> None:
    """One fresh key into every task's input and reference data: ingestion signs its
    output with it, scoring verifies with it."""
    key = signing.new_key()
    for rel in _data_dirs(doc):
        if not (dest / rel).is_dir():
            raise UserError(f"{COMPETITION_YAML}: {rel!r} must be a folder, to hold the "
                            f"{signing.KEY_NAME} that ingestion and scoring share")
        signing.write_key(dest / rel / signing.KEY_NAME, key)


def _fill_time_budgets(dest: Path, doc: dict[str, Any]) -> None:
    """A task manifest without `defaults.time_budget_s` gets the one that fits the
    shortest step limit of its phases; a budget already set is left to `bundle check`."""
    for task in as_list(doc.get("tasks")):
        if not isinstance(task, dict) or not isinstance(task.get("input_data"), str):
            continue
        path = dest / task["input_data"] / timing.MANIFEST
        limit = timing.task_limit(doc, task)
        manifest = yaml.safe_load(path.read_text()) if path.is_file() and limit else None
        if isinstance(manifest, dict) and timing.fill_budget(manifest, limit):
            path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def stage_bundle(root: Path, dest: Path, judge_key_file: Path | None = None,
                 queue: str | None = None) -> dict[str, Any]:
    """Lay out the bundle's contents in `dest` (an empty folder); returns the bundled YAML.
    `queue` (a vhost) replaces competition.yaml's."""
    doc = load_competition(root)
    key_names = tuple(_key_files_in_repo(root, doc))
    for rel in referenced_paths(doc):
        src = root / rel
        if not src.exists():
            raise UserError(f"{root / COMPETITION_YAML}: refers to {rel!r}, which does not "
                            "exist; add it or fix the path")
        copy_clean(src, dest / rel, extra_ignore=key_names)
    for rel in program_dirs(doc):
        vendor_package(dest / rel)

    text = (root / COMPETITION_YAML).read_text()
    kit = root / STARTING_KIT
    phases = [p for p in as_list(doc.get("phases")) if isinstance(p, dict)]
    changed = queue is not None
    if queue is not None:
        doc["queue"] = queue
    if kit.is_dir() and any("starting_kit" not in p for p in phases):
        copy_clean(kit, dest / STARTING_KIT, extra_ignore=key_names)
        for p in phases:
            p.setdefault("starting_kit", f"{STARTING_KIT}/")
        changed = True
    if changed:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    (dest / COMPETITION_YAML).write_text(text)
    _install_signing_key(dest, doc)
    _fill_time_budgets(dest, doc)

    if judge_key_file is not None:
        refs = _reference_dirs(doc)
        if not refs:
            raise UserError(f"{root / COMPETITION_YAML}: no task has reference_data to hold "
                            "the judge key")
        for rel in refs:
            install_judge_key(dest / rel, judge_key_file)
    return doc


def write_zip(folder: Path, output: Path) -> Path:
    """Zip `folder`'s contents (sorted, fixed timestamps) to `output`, atomically."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".bundle-", suffix=".zip.tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_dir() or path.is_symlink():
                    continue
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), ZIP_DATE)
                mode = stat.S_IMODE(path.stat().st_mode)
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def build_bundle(output: str | Path, root: str | Path | None = None,
                 judge_key_file: str | Path | None = None, queue: str | None = None,
                 allow_default_queue: bool = False) -> Path:
    """Build, check and write the upload zip; returns its path. Nothing is written when
    the staged bundle breaks a rule (the UserError lists the violations)."""
    root = Path(root) if root is not None else default_root()
    output = Path(output)
    key = Path(judge_key_file) if judge_key_file is not None else None
    with tempfile.TemporaryDirectory(prefix="e2lmc-build-") as tmp:
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        stage_bundle(root, staged, key, queue)
        errors = check_bundle_dir(staged, allow_default_queue)
        if errors:
            raise UserError(f"{root / COMPETITION_YAML}: the bundle breaks "
                            f"{len(errors)} rule(s): " + " | ".join(errors))
        return write_zip(staged, output)


def cli_bundle_build(args: argparse.Namespace) -> int:
    path = build_bundle(args.output, root=getattr(args, "root", None),
                        judge_key_file=args.judge_key_file, queue=getattr(args, "queue", None),
                        allow_default_queue=getattr(args, "allow_default_queue", False))
    size_mb = path.stat().st_size / 1e6
    note = "with the judge key" if args.judge_key_file else (
        "without a judge key (pass --judge-key-file to enable the alignment judge)")
    print(f"{path} ({size_mb:.1f} MB), {note}")
    return 0
