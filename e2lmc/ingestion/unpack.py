"""Safe staging of a submission (zip or folder) into a work dir.

Nothing in a submission is trusted: every refusal below is one UserError naming the entry
and the fix, checked before anything is written, and every write stays under the
destination. Sizes are counted on the bytes actually read, not on the zip's claims.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from e2lmc.errors import UserError

MIB = 1 << 20
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst",
                    ".lz4", ".whl", ".egg", ".jar")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf",
                 b"Rar!", b"\x28\xb5\x2f\xfd")
IGNORED_TOP = {"__MACOSX", ".DS_Store"}
MAX_NAME_BYTES = 255  # one file or folder name: the limit of common file systems
MAX_PATH_BYTES = 1024  # a whole relative path, leaving room for the work dir under PATH_MAX


@dataclass(frozen=True)
class UnpackLimits:
    max_files: int = 2000
    max_total_bytes: int = 512 * MIB
    max_file_bytes: int = 256 * MIB
    max_ratio: float = 200.0  # uncompressed / compressed, for entries above 1 MiB


def _refuse(src: str | Path, name: str, why: str, fix: str) -> UserError:
    shown = name if len(name) <= 120 else f"{name[:80]}...{name[-30:]}"
    return UserError(f"{src}: entry {shown!r} {why}; {fix}")


def check_name(src: str | Path, name: str) -> PurePosixPath:
    """The entry's normalised relative path; refused if it could not be written safely."""
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise _refuse(src, name, "has control characters in its name", "rename it")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise _refuse(src, name, "has an absolute path", "zip relative paths only")
    parts = PurePosixPath(norm).parts
    if ".." in parts:
        raise _refuse(src, name, "climbs out of the archive ('..')",
                      "zip the files from inside the submission folder")
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise _refuse(src, name, f"has a file or folder name longer than {MAX_NAME_BYTES} "
                      "bytes", "shorten it")
    if len(norm.encode("utf-8")) > MAX_PATH_BYTES:
        raise _refuse(src, name, f"has a path longer than {MAX_PATH_BYTES} bytes",
                      "use fewer or shorter folder names")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def check_conflicts(src: str | Path, files: Iterable[PurePosixPath]) -> None:
    """Refuse a path that is both a file and a folder (`a` and `a/b.yaml`), in any order."""
    files = set(files)
    for rel in sorted(files):
        clash = next((p for p in rel.parents if p in files), None)
        if clash is not None:
            raise _refuse(src, str(clash), f"is both a file and a folder (holding {str(rel)!r})",
                          "rename the file or the folder")


def _check_archive_name(src: Path, name: str) -> None:
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        raise _refuse(src, name, "is a nested archive",
                      "put its files directly in the submission (uncompressed)")


def _copy_stream(src: Path, name: str, fin, dest: Path, limits: UnpackLimits,
                 budget: list[int], expected: int | None = None) -> None:
    """Copy with real byte counting; refuse nested archives by their magic bytes."""
    written = 0
    first = True
    with open(dest, "wb") as out:
        while True:
            chunk = fin.read(MIB)
            if not chunk:
                break
            if first and chunk.startswith(ARCHIVE_MAGIC) and not name.endswith(".parquet"):
                raise _refuse(src, name, "is a nested archive (by its content)",
                              "put its files directly in the submission (uncompressed)")
            first = False
            written += len(chunk)
            budget[0] += len(chunk)
            if written > limits.max_file_bytes or (expected is not None and written > expected):
                raise _refuse(src, name, f"is larger than {limits.max_file_bytes // MIB} MiB "
                              "once uncompressed", "keep each file under the limit")
            if budget[0] > limits.max_total_bytes:
                raise UserError(f"{src}: the submission is larger than "
                                f"{limits.max_total_bytes // MIB} MiB once uncompressed; "
                                "shrink the data files")
            out.write(chunk)
    dest.chmod(0o644)


def _target(dest: Path, rel: PurePosixPath) -> Path:
    out = (dest / Path(*rel.parts)).resolve()
    if dest.resolve() not in out.parents:
        raise UserError(f"entry {str(rel)!r} resolves outside the work dir; refused")
    return out


def extract_zip(src: Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> None:
    try:
        zf = zipfile.ZipFile(src)
    except zipfile.BadZipFile:
        raise UserError(f"{src}: not a valid zip file; create it with `e2lmc make-submission` "
                        "or `zip -r`") from None
    except UnicodeDecodeError:
        raise UserError(f"{src}: an entry name is not valid UTF-8; rename the files with "
                        "plain UTF-8 names") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise UserError(f"{src}: {len(infos)} entries (limit {limits.max_files}); "
                            "submit fewer files")
        declared = 0
        seen: set[PurePosixPath] = set()
        plan = []
        for info in infos:
            name = info.filename
            if not info.flag_bits & 0x800 and any(ord(c) > 127 for c in name):
                raise _refuse(src, name, "has a name that is not UTF-8-flagged",
                              "rename it with ASCII or UTF-8 names")
            rel = check_name(src, name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(src, name, "is a symbolic link", "store the file itself")
            if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(src, name, "is a device, FIFO or socket", "remove it")
            if info.is_dir() or not rel.parts:
                continue
            if rel.parts[0] in IGNORED_TOP or rel.name == ".DS_Store":
                continue
            if rel in seen:
                raise _refuse(src, name, "appears twice", "zip each file once")
            seen.add(rel)
            _check_archive_name(src, name)
            if info.file_size > limits.max_file_bytes:
                raise _refuse(src, name, f"is larger than {limits.max_file_bytes // MIB} MiB "
                              "once uncompressed", "keep each file under the limit")
            if info.file_size > MIB and info.file_size > limits.max_ratio * max(
                    1, info.compress_size):
                raise _refuse(src, name, "compresses suspiciously well (zip bomb?)",
                              "submit ordinary data files")
            declared += info.file_size
            plan.append((info, rel))
        check_conflicts(src, seen)
        if declared > limits.max_total_bytes:
            raise UserError(f"{src}: the submission is larger than "
                            f"{limits.max_total_bytes // MIB} MiB once uncompressed; shrink "
                            "the data files")
        dest.mkdir(parents=True, exist_ok=True)
        budget = [0]
        for info, rel in plan:
            out = _target(dest, rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin:
                _copy_stream(src, info.filename, fin, out, limits, budget, info.file_size)


def copy_folder(src: Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> None:
    """A folder submission gets the same checks as a zip (links and special files refused)."""
    count = 0
    budget = [0]
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                raise _refuse(src, str((base / d).relative_to(src)), "is a symbolic link",
                              "copy the folder itself")
            if d in ("__pycache__", ".git"):
                dirnames.remove(d)
        for f in filenames:
            p = base / f
            rel = PurePosixPath(p.relative_to(src).as_posix())
            try:
                f.encode("utf-8")
            except UnicodeEncodeError:
                raise _refuse(src, repr(f), "has a name that is not UTF-8",
                              "rename it") from None
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(src, str(rel), "is a symbolic link", "store the file itself")
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(src, str(rel), "is a device, FIFO or socket", "remove it")
            if f == ".DS_Store" or f.endswith(".pyc"):
                continue
            count += 1
            if count > limits.max_files:
                raise UserError(f"{src}: more than {limits.max_files} files; submit fewer")
            _check_archive_name(src, str(rel))
            out = _target(dest, rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "rb") as fin:
                _copy_stream(src, str(rel), fin, out, limits, budget)


def stage(src: str | Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> Path:
    """Unpack a zip or copy a folder into `dest`; return the submission root.

    A zip whose files all sit under one top folder has that folder as its root.
    """
    src = Path(src)
    if src.is_dir():
        copy_folder(src, dest, limits)
    elif src.is_file():
        extract_zip(src, dest, limits)
    else:
        raise UserError(f"{src}: submission not found; pass a zip or a folder")
    root = dest
    while True:
        entries = [p for p in root.iterdir()
                   if p.name not in IGNORED_TOP and not (p.name == "metadata" and p.is_file())]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        else:
            return root
