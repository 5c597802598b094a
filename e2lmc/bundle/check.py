"""`e2lmc bundle check`: a bundle against Codabench's v2 rules, before the upload fails.

Codabench reports a bad bundle one error at a time, after the upload (or worse, at the
first submission: a shell command in metadata.yaml, a `metadata` file written to the
output, a score key the leaderboard drops). This checker applies the platform's rules
(REFERENCE.md §2, Codabench's v2 unpacker and worker) and our own cross-checks, and lists
every violation at once, one line each.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import re
import shlex
import sys
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from e2lmc import signing
from e2lmc.bundle import timing
from e2lmc.bundle.layout import (COMPETITION_YAML, DATA_KEYS, PROGRAM_KEYS, STARTING_KIT,
                                 as_list, load_competition, opened_bundle, package_dir,
                                 program_dirs)
from e2lmc.errors import UserError

REQUIRED_KEYS = ("title", "image", "terms", "pages", "phases", "tasks", "leaderboards")
FORCE_RULES = ("Force_Last", "Force_Best", "Force_Latest_Multiple")
KEY_MAX, COLUMN_TITLE_MAX, LEADERBOARD_TITLE_MAX = 36, 36, 64
SORTING = ("asc", "desc")
COMPUTATIONS = ("sum", "avg", "min", "max")
# Characters that only mean something to a shell; the worker runs commands without one.
SHELL_SYNTAX = re.compile(r"\|\||&&|[|;<>`$]")
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
SCORING_MODULE = ("e2lmc", "scoring", "program.py")
WRITE_METHODS = {"write_text", "write_bytes", "touch"}
COPY_FUNCS = {"copy", "copy2", "copyfile", "copytree", "move", "rename", "replace",
              "symlink", "symlink_to", "link", "hardlink_to"}
# competition.yaml's stand-in for the GPU queue's vhost, which only the organizer knows.
PLACEHOLDER_QUEUE = "SET-THE-VHOST-OF-YOUR-GPU-QUEUE"
QUEUE_FIX = ("set the vhost of your GPU queue (Queue Management, View Queue Detail), or "
             "pass it to `e2lmc bundle build --queue VHOST`")
# What participants could download from a phase that does not hide it (the
# SubmissionFilesSerializer returns these files to non-admins unless the phase hides them).
HIDDEN_OUTPUTS = {
    "hide_prediction_output": "the prediction output (the values at hidden checkpoints)",
    "hide_score_output": "the scoring output (scores_details.json, the organizers' view "
                         "with item text)",
}


def _parse_date(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if isinstance(value, str):
        for fmt in DATE_FORMATS:
            try:
                return dt.datetime.strptime(value.strip(), fmt)
            except ValueError:
                continue
    return None


class Checker:
    """Collects violations as lines `WHERE: WHAT; FIX`."""

    def __init__(self, root: Path, allow_default_queue: bool = False) -> None:
        self.root = root
        self.allow_default_queue = allow_default_queue
        self.errors: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # -- paths ------------------------------------------------------------------------
    def path(self, rel: Any, where: str, want_dir: bool | None = None) -> Path | None:
        if not isinstance(rel, str) or not rel.strip():
            self.add(where, f"expected a path relative to {COMPETITION_YAML}, got {rel!r}")
            return None
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            self.add(where, f"path {rel!r} must stay inside the bundle (relative, no '..')")
            return None
        full = self.root / rel
        if not full.exists():
            self.add(where, f"path {rel!r} does not exist in the bundle; add it or fix the path")
            return None
        if want_dir is True and not full.is_dir():
            self.add(where, f"{rel!r} must be a folder")
            return None
        if want_dir is False and not full.is_file():
            self.add(where, f"{rel!r} must be a file")
            return None
        return full

    def nonempty_file(self, rel: Any, where: str) -> None:
        full = self.path(rel, where, want_dir=False)
        if full is not None and not full.read_text(errors="replace").strip():
            self.add(where, f"{rel!r} is empty; Codabench refuses empty pages")

    # -- sections ---------------------------------------------------------------------
    def top_level(self, doc: dict[str, Any]) -> None:
        if doc.get("version") != 2:
            self.add(COMPETITION_YAML, f"`version: 2` is required (found {doc.get('version')!r});"
                     " without it Codabench parses the bundle with its legacy v1.5 reader")
        if "leaderboard" in doc:
            self.add(COMPETITION_YAML, "uses `leaderboard:`; Codabench v2 reads `leaderboards:`"
                     " (plural): rename the key")
        for key in REQUIRED_KEYS:
            if key not in doc or doc[key] in (None, "", []):
                self.add(COMPETITION_YAML, f"required key `{key}` is missing")
        if "image" in doc:
            self.path(doc["image"], "image (logo)", want_dir=False)
        if "terms" in doc:
            self.nonempty_file(doc["terms"], "terms")
        self.queue(doc.get("queue"))
        docker_image = doc.get("docker_image")
        if docker_image is not None and (not isinstance(docker_image, str)
                                         or not docker_image.strip()):
            self.add("docker_image", "must be an image name such as owner/name:tag")

    def queue(self, queue: Any) -> None:
        """A GPU queue's vhost. Without one Codabench runs submissions on its default
        queue, which caps every step at 600 s whatever execution_time_limit says."""
        if queue in (None, ""):
            if not self.allow_default_queue:
                self.add("queue", "missing: submissions would run on Codabench's default "
                         f"queue, which kills every step after {timing.DEFAULT_QUEUE_LIMIT_S} s "
                         f"whatever execution_time_limit says; {QUEUE_FIX} (a CPU demo "
                         "competition may pass --allow-default-queue instead)")
        elif queue == PLACEHOLDER_QUEUE:
            self.add("queue", f"still the placeholder {PLACEHOLDER_QUEUE!r}; {QUEUE_FIX}")
        else:
            try:
                uuid.UUID(str(queue))
            except ValueError:
                self.add("queue", f"{queue!r} is not a queue vhost (a UUID from Queue "
                         "Management, View Queue Detail); the queue's name does not work")

    def pages(self, doc: dict[str, Any]) -> None:
        pages = doc.get("pages")
        if pages is not None and not isinstance(pages, list):
            self.add("pages", "must be a list of {title, file}")
            return
        for i, page in enumerate(as_list(pages)):
            where = f"pages[{i}]"
            if not isinstance(page, dict) or "file" not in page:
                self.add(where, "needs `title` and `file`")
                continue
            if not page.get("title"):
                self.add(where, "needs a `title`")
            self.nonempty_file(page["file"], f"{where} ({page.get('title')})")

    def tasks(self, doc: dict[str, Any]) -> set[Any]:
        indexes: set[Any] = set()
        archives: dict[str, str] = {}
        for i, task in enumerate(as_list(doc.get("tasks"))):
            where = f"tasks[{i}]"
            if not isinstance(task, dict):
                self.add(where, "must be a mapping")
                continue
            if "index" not in task:
                self.add(where, "needs an `index` (phases and solutions refer to it)")
            elif task["index"] in indexes:
                self.add(where, f"duplicate task index {task['index']!r}")
            else:
                indexes.add(task["index"])
            where = f"{where} ({task.get('name', task.get('index'))})"
            if "key" in task:
                self._uuid(task["key"], where)
                continue
            if not task.get("name"):
                self.add(where, "needs a `name`")
            if "scoring_program" not in task:
                self.add(where, "needs a `scoring_program`")
            for key in PROGRAM_KEYS + DATA_KEYS:
                if key in task:
                    full = self.path(task[key], f"{where}.{key}")
                    if full is not None and full.is_dir():
                        self._archive_name(task[key], f"{where}.{key}", archives)
        return indexes

    def _uuid(self, value: Any, where: str) -> None:
        try:
            uuid.UUID(str(value))
        except ValueError:
            self.add(where, f"`key` {value!r} is not a UUID of an existing task")

    def _archive_name(self, rel: str, where: str, seen: dict[str, str]) -> None:
        """Codabench zips a folder next to its parent, named after it: two folders that map
        to the same zip overwrite each other (e.g. `input_data/x` and `reference_data/x`
        without a trailing slash both become `x.zip`)."""
        path = os.path.join("/bundle", rel)
        archive = os.path.join(os.path.dirname(os.path.dirname(path)),
                               os.path.basename(path.strip("/")) + ".zip")
        if archive in seen and seen[archive] != rel:
            self.add(where, f"folder {rel!r} and {seen[archive]!r} are both zipped by Codabench "
                     f"to {archive[len('/bundle/'):]}; end folder paths with '/' or rename one")
        seen.setdefault(archive, rel)

    def solutions(self, doc: dict[str, Any], task_indexes: set[Any]) -> None:
        seen: set[Any] = set()
        for i, sol in enumerate(as_list(doc.get("solutions"))):
            where = f"solutions[{i}]"
            if not isinstance(sol, dict):
                self.add(where, "must be a mapping")
                continue
            if "index" not in sol:
                self.add(where, "needs an `index`")
            elif sol["index"] in seen:
                self.add(where, f"duplicate solution index {sol['index']!r}")
            seen.add(sol.get("index"))
            tasks = sol.get("tasks")
            if not isinstance(tasks, list) or not tasks:
                self.add(where, "needs `tasks`: the task indexes it solves")
            else:
                for t in tasks:
                    if t not in task_indexes:
                        self.add(where, f"refers to task index {t!r}, which no task has")
            if "key" not in sol:
                self.path(sol.get("path"), f"{where}.path")

    def phases(self, doc: dict[str, Any], task_indexes: set[Any]) -> None:
        raw = as_list(doc.get("phases"))
        if doc.get("phases") is not None and not isinstance(doc.get("phases"), list):
            self.add("phases", "must be a list")
            return
        phases = sorted((p for p in raw if isinstance(p, dict)), key=lambda p: p.get("index", 0))
        previous: tuple[str, dt.datetime | None] | None = None
        for i, phase in enumerate(phases):
            name = phase.get("name") or f"#{i}"
            where = f"phases[{i}] ({name})"
            if not phase.get("name"):
                self.add(where, "needs a `name`")
            start = _parse_date(phase.get("start"))
            if start is None:
                self.add(where, f"`start` {phase.get('start')!r} is not a date; use "
                         "'YYYY-MM-DD HH:MM:SS'")
            end = None
            if phase.get("end") is not None:
                end = _parse_date(phase["end"])
                if end is None:
                    self.add(where, f"`end` {phase['end']!r} is not a date; use "
                             "'YYYY-MM-DD HH:MM:SS'")
            elif i < len(phases) - 1:
                self.add(where, "needs an `end`: only the last phase may be open-ended")
            if start and end and end <= start:
                self.add(where, f"ends ({end}) before it starts ({start})")
            if previous is not None and start is not None and previous[1] is not None:
                if start <= previous[1]:
                    self.add(where, f"starts at {start}, not after the end of phase "
                             f"{previous[0]} ({previous[1]}); phases must not overlap")
            previous = (name, end)
            tasks = phase.get("tasks")
            if not isinstance(tasks, list) or not tasks:
                self.add(where, "needs `tasks`: a list of task indexes")
            else:
                for t in tasks:
                    if t not in task_indexes:
                        self.add(where, f"refers to task index {t!r}, which no task has")
            limit = phase.get("execution_time_limit")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                      or limit <= 0):
                self.add(where, f"`execution_time_limit` must be a positive number of seconds,"
                         f" got {limit!r}")
            for key in ("max_submissions_per_day", "max_submissions"):
                v = phase.get(key)
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    self.add(where, f"`{key}` must be a whole number, got {v!r}")
            if i == 0 and phase.get("auto_migrate_to_this_phase"):
                self.add(where, "`auto_migrate_to_this_phase` cannot be set on the first phase")
            for key in ("starting_kit", "public_data"):
                if key in phase:
                    self.path(phase[key], f"{where}.{key}")
            self.visibility(phase, where)

    def visibility(self, phase: dict[str, Any], where: str) -> None:
        """Logs shown (the programs never print a hidden value), raw outputs hidden."""
        if phase.get("hide_output"):
            self.add(where, "`hide_output: true` hides the logs too: participants then see "
                     "only an exit code, never why their submission failed; set it to false "
                     "and hide the outputs with hide_prediction_output / hide_score_output")
        for key, what in HIDDEN_OUTPUTS.items():
            if phase.get(key) is not True:
                self.add(where, f"`{key}` must be true: otherwise participants can "
                         f"download {what}")

    def time_budgets(self, doc: dict[str, Any]) -> None:
        """Each task's ingestion budget (its manifest's defaults.time_budget_s) ends the
        run inside the shortest step limit of its phases, with a margin."""
        for i, task in enumerate(as_list(doc.get("tasks"))):
            if not isinstance(task, dict) or not isinstance(task.get("input_data"), str):
                continue
            has_manifest, budget = timing.manifest_budget(self.root / task["input_data"])
            limit = timing.task_limit(doc, task)
            problem = timing.budget_problem(budget, limit) if has_manifest and limit else None
            if problem:
                capped = "" if doc.get("queue") else (
                    f" (without a `queue` every step is capped at "
                    f"{timing.DEFAULT_QUEUE_LIMIT_S} s)")
                rel = task["input_data"].rstrip("/")
                self.add(f"tasks[{i}] ({task.get('name', task.get('index'))}).input_data",
                         f"{rel}/{timing.MANIFEST}: {problem}{capped}")

    def leaderboards(self, doc: dict[str, Any]) -> list[str]:
        """Checks the leaderboards; returns the first one's plain (non-computed) column keys."""
        boards = doc.get("leaderboards")
        if boards is None:
            return []
        if not isinstance(boards, list) or not boards:
            self.add("leaderboards", "must be a non-empty list")
            return []
        if len(boards) > 1:
            self.add("leaderboards", f"{len(boards)} leaderboards: Codabench uses only the "
                     "first; merge their columns into one")
        keys: list[str] = []
        for b, board in enumerate(boards):
            where = f"leaderboards[{b}]"
            if not isinstance(board, dict):
                self.add(where, "must be a mapping")
                continue
            self._key_title(board, where, LEADERBOARD_TITLE_MAX)
            rule = board.get("submission_rule")
            if rule not in FORCE_RULES:
                self.add(where, f"`submission_rule` is {rule!r}: use one of {list(FORCE_RULES)}"
                         " so that submissions appear on the leaderboard without a manual step")
            columns = board.get("columns")
            if not isinstance(columns, list) or not columns:
                self.add(where, "needs `columns`")
                continue
            indexes: set[Any] = set()
            col_keys: set[str] = set()
            for c, col in enumerate(columns):
                cw = f"{where}.columns[{c}]"
                if not isinstance(col, dict):
                    self.add(cw, "must be a mapping")
                    continue
                cw = f"{cw} ({col.get('key')})"
                self._key_title(col, cw, COLUMN_TITLE_MAX)
                if col.get("key") in col_keys:
                    self.add(cw, f"duplicate column key {col.get('key')!r}")
                col_keys.add(col.get("key"))
                if "index" not in col:
                    self.add(cw, "needs an `index`")
                elif col["index"] in indexes:
                    self.add(cw, f"duplicate column index {col['index']!r}")
                indexes.add(col.get("index"))
                if col.get("sorting", "desc") not in SORTING:
                    self.add(cw, f"`sorting` must be asc or desc, got {col.get('sorting')!r}")
                if "computation" in col:
                    if col["computation"] not in COMPUTATIONS:
                        self.add(cw, f"`computation` must be one of {list(COMPUTATIONS)}")
                    if not isinstance(col.get("computation_indexes"), list):
                        self.add(cw, "`computation` needs `computation_indexes`")
                elif b == 0 and isinstance(col.get("key"), str):
                    keys.append(col["key"])
            for c, col in enumerate(columns):
                if isinstance(col, dict):
                    for ref in as_list(col.get("computation_indexes")):
                        if ref not in indexes:
                            self.add(f"{where}.columns[{c}]", f"computation index {ref!r} "
                                     "matches no column")
            primary = board.get("primary_index", 0)
            if primary not in indexes:
                self.add(where, f"`primary_index` {primary!r} matches no column index")
        return keys

    def _key_title(self, item: dict[str, Any], where: str, title_max: int) -> None:
        key, title = item.get("key"), item.get("title")
        if not isinstance(key, str) or not key:
            self.add(where, "needs a `key`")
        elif len(key) > KEY_MAX:
            self.add(where, f"key {key!r} has {len(key)} characters; the limit is {KEY_MAX}")
        if not isinstance(title, str) or not title:
            self.add(where, "needs a `title`")
        elif len(title) > title_max:
            self.add(where, f"title {title!r} has {len(title)} characters; the limit is "
                     f"{title_max}")

    # -- programs ---------------------------------------------------------------------
    def program(self, rel: str) -> None:
        folder = self.root / rel
        if not folder.is_dir():
            return  # reported by tasks()
        meta = folder / "metadata.yaml"
        if not meta.is_file():
            meta = folder / "metadata"
        where = f"{rel.rstrip('/')}/metadata.yaml"
        if not meta.is_file():
            self.add(where, "missing; a program folder needs metadata.yaml with `command:`")
        else:
            self._command(meta, where, folder)
        for py in sorted(folder.rglob("*.py")):
            for line in metadata_writes(py):
                self.add(f"{py.relative_to(self.root)}:{line}", "writes a file named `metadata`;"
                         " the worker reserves that name in the output folder and fails the run")

    def _command(self, meta: Path, where: str, folder: Path) -> None:
        try:
            doc = yaml.safe_load(meta.read_text())
        except yaml.YAMLError as exc:
            self.add(where, f"not valid YAML ({exc})")
            return
        command = doc.get("command") if isinstance(doc, dict) else None
        if not isinstance(command, str) or not command.strip():
            self.add(where, "has no `command:`; the worker needs the command that runs it")
            return
        if SHELL_SYNTAX.search(command):
            self.add(where, f"command {command!r} uses shell syntax (pipes, &&, ;, $VAR, "
                     "redirections); the worker runs it without a shell: call one program")
            return
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            self.add(where, f"command {command!r} cannot be split into arguments ({exc})")
            return
        scripts = [a for a in argv[1:] if a.endswith(".py") and not a.startswith("-")]
        for script in scripts[:1]:
            p = PurePosixPath(script)
            target = (folder / script) if not p.is_absolute() else (
                folder / p.relative_to("/app/program") if str(p).startswith("/app/program/")
                else None)
            if target is not None and not target.is_file():
                self.add(where, f"command runs {script!r}, which is not in the program folder")

    # -- signing key ------------------------------------------------------------------
    def signing_keys(self, doc: dict[str, Any]) -> None:
        """Each task's input_data and reference_data hold the same signing key (ingestion
        signs its output with it, scoring verifies with it); what participants can
        download holds none."""
        rebuild = "rebuild the bundle with `e2lmc bundle build` (it writes one fresh key)"
        for i, task in enumerate(as_list(doc.get("tasks"))):
            if not isinstance(task, dict) or "key" in task:
                continue
            where = f"tasks[{i}] ({task.get('name', task.get('index'))})"
            keys: dict[str, bytes] = {}
            for k in DATA_KEYS:
                rel = task.get(k)
                if not isinstance(rel, str) or not (self.root / rel).is_dir():
                    continue  # absent, or reported by tasks()
                path = self.root / rel / signing.KEY_NAME
                if not path.is_file():
                    self.add(f"{where}.{k}", f"{rel.rstrip('/')}/{signing.KEY_NAME} is "
                             "missing: ingestion signs its output with it and scoring refuses "
                             f"what it cannot verify; {rebuild}")
                    continue
                try:
                    keys[k] = signing.read_key(path, rebuild)
                except UserError as exc:
                    self.add(f"{where}.{k}", str(exc))
            if len(set(keys.values())) > 1:
                self.add(where, f"input_data and reference_data hold different "
                         f"{signing.KEY_NAME} files, so scoring would refuse every output; "
                         + rebuild)
        for rel in self._participant_paths(doc):
            for name in _key_files(self.root / rel):
                self.add(f"{rel.rstrip('/')}/{name}", "a signing key in what participants "
                         "download would let them forge ingestion outputs; remove it (the "
                         "key belongs in input_data and reference_data only)")

    @staticmethod
    def _participant_paths(doc: dict[str, Any]) -> list[str]:
        paths = {STARTING_KIT}
        for phase in as_list(doc.get("phases")):
            if isinstance(phase, dict):
                paths |= {phase[k].rstrip("/") for k in ("starting_kit", "public_data")
                          if isinstance(phase.get(k), str)}
        return sorted(paths)

    # -- cross-check ------------------------------------------------------------------
    def score_keys(self, doc: dict[str, Any], column_keys: list[str]) -> None:
        if not column_keys:
            return
        scoring = [t.get("scoring_program") for t in as_list(doc.get("tasks"))
                   if isinstance(t, dict) and isinstance(t.get("scoring_program"), str)]
        sources = [self.root / s / Path(*SCORING_MODULE) for s in scoring]
        sources.append(package_dir() / Path(*SCORING_MODULE[1:]))
        for src in sources:
            if src.is_file():
                keys = leaderboard_keys(src)
                if keys is None:
                    continue
                where = f"leaderboards[0].columns vs {src.relative_to(src.parents[2])}"
                missing = [k for k in keys if k not in column_keys]
                extra = [k for k in column_keys if k not in keys]
                if missing:
                    self.add(where, f"the scoring program writes {missing}, which no column "
                             "shows (Codabench drops them); add columns with these keys")
                if extra:
                    self.add(where, f"columns {extra} get no value from the scoring program "
                             "(LEADERBOARD_KEYS); remove them or add them to the program")
                return
        self.add("leaderboards[0]", "cannot find the scoring program's LEADERBOARD_KEYS "
                 "(e2lmc/scoring/program.py) to cross-check the column keys")


def leaderboard_keys(source: Path) -> list[str] | None:
    """`LEADERBOARD_KEYS` of a scoring module, read without importing it."""
    try:
        tree = ast.parse(source.read_text())
    except SyntaxError:
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "LEADERBOARD_KEYS" for t in targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return [str(v) for v in value]
    return None


def _names_metadata(node: ast.AST) -> bool:
    """Is `node` a path expression whose last component is `metadata`?"""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == "metadata" or node.value.endswith("/metadata")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _names_metadata(node.right)
    if isinstance(node, ast.JoinedStr) and node.values:
        last = node.values[-1]
        return isinstance(last, ast.Constant) and str(last.value).endswith("/metadata")
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("join", "joinpath", "Path", "PurePath") and node.args:
            return _names_metadata(node.args[-1])
    return False


def _write_mode(call: ast.Call, mode_pos: int) -> bool:
    mode = call.args[mode_pos] if len(call.args) > mode_pos else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
            and any(c in mode.value for c in "wax+"))


def metadata_writes(py: Path) -> list[int]:
    """Line numbers where a Python file writes a file named `metadata` (static, best effort:
    open(..., 'w'), Path.write_text/open('w')/touch, and copy/move/rename destinations)."""
    try:
        tree = ast.parse(py.read_text(errors="replace"))
    except SyntaxError:
        return []
    lines: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        hit = False
        if name == "open" and isinstance(func, ast.Name) and node.args:
            hit = _names_metadata(node.args[0]) and _write_mode(node, 1)
        elif isinstance(func, ast.Attribute) and name in WRITE_METHODS:
            hit = _names_metadata(func.value)
        elif isinstance(func, ast.Attribute) and name == "open":
            hit = _names_metadata(func.value) and _write_mode(node, 0)
        elif name in COPY_FUNCS:
            if isinstance(func, ast.Attribute) and len(node.args) == 1:
                hit = _names_metadata(node.args[0])  # Path.rename(target)
            elif len(node.args) >= 2:
                hit = _names_metadata(node.args[1])
        if hit:
            lines.append(node.lineno)
    return lines


def _key_files(path: Path) -> list[str]:
    """Signing key files in a folder or a zip, relative to it."""
    if path.is_dir():
        return sorted(p.relative_to(path).as_posix() for p in path.rglob(signing.KEY_NAME))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return [n for n in zf.namelist() if PurePosixPath(n).name == signing.KEY_NAME]
    return []


def check_bundle_dir(root: Path, allow_default_queue: bool = False) -> list[str]:
    """Every violation found in an unpacked bundle, one line each (empty: the bundle is OK)."""
    doc = load_competition(root)
    checker = Checker(root, allow_default_queue)
    checker.top_level(doc)
    checker.pages(doc)
    task_indexes = checker.tasks(doc)
    checker.solutions(doc, task_indexes)
    checker.phases(doc, task_indexes)
    column_keys = checker.leaderboards(doc)
    for rel in program_dirs(doc):
        checker.program(rel)
    checker.signing_keys(doc)
    checker.time_budgets(doc)
    checker.score_keys(doc, column_keys)
    return checker.errors


def check_bundle(path: str | Path, allow_default_queue: bool = False) -> list[str]:
    """`check_bundle_dir` for a bundle zip or folder."""
    with opened_bundle(path) as root:
        return check_bundle_dir(root, allow_default_queue)


def cli_bundle_check(args: argparse.Namespace) -> int:
    errors = check_bundle(args.bundle, getattr(args, "allow_default_queue", False))
    if errors:
        for line in errors:
            print(line, file=sys.stderr)
        raise UserError(f"{args.bundle}: {len(errors)} violation(s) of the Codabench bundle "
                        "rules (listed above); fix them and check again")
    print(f"{args.bundle}: OK (Codabench v2 bundle rules and score-key cross-check)")
    return 0
