"""The official submission format: task files out of a git diff against lm-eval.

The organizers' format is `evaluation.patch`, a git diff against their lm-eval fork. Only
task files (under `lm_eval/tasks/`) are taken: we rebuild them from the diff alone (new
files), or from an earlier file of the same diff or lm-eval's own copy (changed files).
A hunk anywhere else (lm-eval core: metric registry, models, evaluator) is refused: the
evaluation runs stock lm-eval, and core changes would run outside the task process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from e2lmc.errors import UserError
from e2lmc.ingestion import unpack

TASKS_PREFIX = "lm_eval/tasks/"
_N = r"(\d{1,9})"  # a line number or count; longer is not a real task file
_HUNK = re.compile(rf"^@@ -{_N}(?:,{_N})? \+{_N}(?:,{_N})? @@")
REGULAR_MODES = ("100644", "100755")  # git's modes for files; 120000 links, 160000 submodules


@dataclass
class FilePatch:
    old: str | None  # None for a new file
    new: str | None  # None for a deleted file
    binary: bool = False
    renamed: bool = False  # the old file goes away (a copy keeps it)
    mode: str | None = None  # the new mode, when the header sets one
    hunks: list[tuple[int, list[str]]] = field(default_factory=list)  # (old_start, lines)


def _strip(path: str) -> str | None:
    path = path.strip().split("\t")[0]
    if path == "/dev/null":
        return None
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1]
    return path[2:] if path[:2] in ("a/", "b/") else path


def parse(text: str, where: str = "evaluation.patch") -> list[FilePatch]:
    """Files of a unified (git) diff, with their hunks."""
    lines = text.splitlines(keepends=True)
    files: list[FilePatch] = []
    cur: FilePatch | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            m = re.match(r"diff --git (\S+) (\S+)", line)
            a, b = (m.group(1), m.group(2)) if m else ("", "")
            cur = FilePatch(old=_strip(a), new=_strip(b))
            files.append(cur)
        elif line.startswith("new file mode") and cur is not None:
            cur.old = None
            cur.mode = line[len("new file mode"):].strip()
        elif line.startswith("new mode ") and cur is not None:
            cur.mode = line[len("new mode "):].strip()
        elif line.startswith("deleted file mode") and cur is not None:
            cur.new = None
        elif line.startswith(("Binary files ", "GIT binary patch")) and cur is not None:
            cur.binary = True
        elif line.startswith(("rename from ", "copy from ")) and cur is not None:
            cur.old = line.split(" ", 2)[2].strip()
            cur.renamed = line.startswith("rename")
        elif line.startswith(("rename to ", "copy to ")) and cur is not None:
            cur.new = line.split(" ", 2)[2].strip()
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _strip(line[4:]), _strip(lines[i + 1][4:])
            if cur is None or cur.hunks:
                cur = FilePatch(old=old, new=new)
                files.append(cur)
            else:
                cur.old, cur.new = old, new
            i += 1
        elif line.startswith("@@"):
            m = _HUNK.match(line)
            if cur is None or not m:
                raise UserError(f"{where}: line {i + 1}: malformed hunk header; create the "
                                "patch with `git diff` (or use the task-folder format)")
            old_len = int(m.group(2)) if m.group(2) is not None else 1
            new_len = int(m.group(4)) if m.group(4) is not None else 1
            body: list[str] = []
            seen_old = seen_new = 0
            i += 1
            while i < len(lines) and (seen_old < old_len or seen_new < new_len
                                      or lines[i].startswith("\\")):
                hl = lines[i]
                tag = hl[:1]
                if tag == "\\":  # "\ No newline at end of file"
                    if body:
                        body[-1] = body[-1][:1] + body[-1][1:].rstrip("\n")
                elif tag in (" ", "-", "+") or hl in ("\n", "\r\n"):
                    if hl in ("\n", "\r\n"):
                        hl = " " + hl
                        tag = " "
                    body.append(hl)
                    seen_old += tag in (" ", "-")
                    seen_new += tag in (" ", "+")
                else:
                    raise UserError(f"{where}: line {i + 1}: hunk shorter than its header "
                                    "says; the patch is truncated or edited by hand")
                i += 1
            if seen_old < old_len or seen_new < new_len:
                raise UserError(f"{where}: line {i}: the patch ends inside a hunk (its header "
                                "counts more lines); the patch is truncated or edited by hand")
            cur.hunks.append((int(m.group(1)), body))
            continue
        i += 1
    return files


def _apply(base: str, hunks: list[tuple[int, list[str]]], path: str, where: str) -> str:
    lines = base.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for start, body in hunks:
        old = [hl[1:] for hl in body if hl[:1] in (" ", "-")]
        new = [hl[1:] for hl in body if hl[:1] in (" ", "+")]
        at = max(0, start - 1) if old else start
        if lines[at:at + len(old)] != old:
            matches = [k for k in range(pos, len(lines) - len(old) + 1)
                       if lines[k:k + len(old)] == old]
            if not matches:
                raise UserError(f"{where}: cannot rebuild {path}: the patch changes a file "
                                "whose base differs from the one available here; add the whole "
                                "file as a new file (or use the task-folder format)")
            at = matches[0]
        if at < pos:
            raise UserError(f"{where}: overlapping hunks in {path}")
        out.extend(lines[pos:at])
        out.extend(new)
        pos = at + len(old)
    out.extend(lines[pos:])
    return "".join(out)


def _check_file(fp: FilePatch, where: str) -> None:
    """Refuse changes that cannot become a plain text file under the tasks folder."""
    if fp.old is None and fp.new is None:
        raise UserError(f"{where}: a file change has /dev/null on both sides (no file named); "
                        "create the patch with `git diff`")
    if fp.binary:
        raise UserError(f"{where}: {fp.new or fp.old} is a binary change; bundle data as "
                        "text (JSON lines/CSV) in the patch or use the task-folder format")
    if fp.new is not None and fp.mode is not None and fp.mode not in REGULAR_MODES:
        raise UserError(f"{where}: {fp.new} has file mode {fp.mode} (a symbolic link or a "
                        "submodule); add the file itself as a regular file")


def _task_rel(path: str, where: str) -> str:
    """`path` relative to lm_eval/tasks/, refused where a zip entry of that name would be."""
    rel = unpack.check_name(where, path)
    if len(rel.parts) < 3:
        raise UserError(f"{where}: {path} names the tasks folder itself, not a file; create "
                        "the patch with `git diff`")
    return PurePosixPath(*rel.parts[2:]).as_posix()


def task_files(text: str, where: str = "evaluation.patch") -> dict[str, str]:
    """{path relative to lm_eval/tasks/: content} for the files the patch adds or changes."""
    patches = parse(text, where)
    if not patches:
        raise UserError(f"{where}: no file changes found; create it with `git diff` against "
                        "lm-eval (or use the task-folder format)")
    for fp in patches:
        _check_file(fp, where)
    outside = sorted({p for fp in patches for p in (fp.old, fp.new)
                      if p is not None and not p.startswith(TASKS_PREFIX)})
    if outside:
        raise UserError(f"{where}: changes outside {TASKS_PREFIX} are not supported (core "
                        f"patches): {', '.join(outside)}; move custom metrics and filters "
                        "into the task's own Python helpers (`!function`)")
    climbing = sorted({p for fp in patches for p in (fp.old, fp.new)
                       if p is not None and ".." in Path(p).parts})
    if climbing:
        raise UserError(f"{where}: paths with '..' are refused: {', '.join(climbing)}")
    rels = {p: _task_rel(p, where) for fp in patches for p in (fp.old, fp.new) if p is not None}
    import lm_eval

    upstream = Path(lm_eval.__file__).parent / "tasks"
    files: dict[str, str] = {}
    for fp in patches:
        if fp.new is None:
            files.pop(rels[fp.old], None)
            continue
        if fp.old is None:
            base = ""
        elif rels[fp.old] in files:
            base = files[rels[fp.old]]
        else:
            stock = upstream / rels[fp.old]
            if not stock.is_file():
                raise UserError(f"{where}: cannot rebuild {fp.new}: it changes "
                                f"{fp.old}, which stock lm-eval does not have; add it as "
                                "a new file")
            base = stock.read_text(encoding="utf-8")
        if fp.renamed:
            files.pop(rels[fp.old], None)
        files[rels[fp.new]] = _apply(base, fp.hunks, fp.new, where)
    unpack.check_conflicts(where, (PurePosixPath(TASKS_PREFIX, rel) for rel in files))
    return files
