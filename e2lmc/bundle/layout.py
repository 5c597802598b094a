"""What a competition bundle is made of, shared by the builder, the checker and the worker.

A bundle is a folder (the repository) or a zip with `competition.yaml` at its root; the
YAML names every other part (pages, logo, program folders, data folders, solutions).
Codabench zips each program folder on its own, so a built bundle carries a copy of the
`e2lmc` package inside every program folder.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import e2lmc
from e2lmc.errors import UserError
from e2lmc.scoring.config import CONFIG_NAME, ScoringConfig, load_config
from e2lmc.yamlfile import read_yaml_mapping

COMPETITION_YAML = "competition.yaml"
PROGRAM_KEYS = ("ingestion_program", "scoring_program")
DATA_KEYS = ("input_data", "reference_data")
STARTING_KIT = "starting_kit"
# Never shipped: build caches, editor and OS litter.
IGNORED_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".hypothesis",
                 ".ipynb_checkpoints", ".DS_Store", "*.egg-info", ".mypy_cache", ".ruff_cache")


def package_dir() -> Path:
    """The `e2lmc` package folder that gets copied into program folders."""
    return Path(e2lmc.__file__).resolve().parent


def default_root() -> Path:
    """The checkout that holds competition.yaml: the package's parent, else the cwd."""
    candidate = package_dir().parent
    if (candidate / COMPETITION_YAML).is_file():
        return candidate
    return Path.cwd()


def load_competition(root: Path) -> dict[str, Any]:
    """Parse `competition.yaml` of a bundle folder; a UserError when absent or malformed."""
    return read_yaml_mapping(root / COMPETITION_YAML,
                             missing="not found; a bundle has competition.yaml at its root",
                             expected="a mapping of competition settings")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def referenced_paths(doc: dict[str, Any]) -> list[str]:
    """Every bundle-relative path competition.yaml points to, in a stable order."""
    paths: list[str] = []
    for key in ("image", "terms"):
        if isinstance(doc.get(key), str):
            paths.append(doc[key])
    for page in as_list(doc.get("pages")):
        if isinstance(page, dict) and isinstance(page.get("file"), str):
            paths.append(page["file"])
    for task in as_list(doc.get("tasks")):
        if isinstance(task, dict) and "key" not in task:
            paths += [task[k] for k in PROGRAM_KEYS + DATA_KEYS if isinstance(task.get(k), str)]
    for sol in as_list(doc.get("solutions")):
        if isinstance(sol, dict) and isinstance(sol.get("path"), str):
            paths.append(sol["path"])
    for phase in as_list(doc.get("phases")):
        if isinstance(phase, dict):
            paths += [phase[k] for k in ("starting_kit", "public_data")
                      if isinstance(phase.get(k), str)]
    seen: set[str] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def program_dirs(doc: dict[str, Any]) -> list[str]:
    """Program folders named by the tasks (each needs metadata.yaml and an e2lmc copy)."""
    dirs: list[str] = []
    for task in as_list(doc.get("tasks")):
        if isinstance(task, dict):
            for key in PROGRAM_KEYS:
                if isinstance(task.get(key), str) and task[key] not in dirs:
                    dirs.append(task[key])
    return dirs


def find_task(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A task by its data-folder name (input_data/<name>/), its `name` or its index."""
    tasks = [t for t in as_list(doc.get("tasks")) if isinstance(t, dict)]
    for task in tasks:
        folders = {PurePosixPath(str(task.get(k, ""))).name for k in DATA_KEYS}
        if name in folders or name == str(task.get("name")) or name == str(task.get("index")):
            return task
    known = sorted({PurePosixPath(str(t.get("input_data", ""))).name for t in tasks} - {""})
    raise UserError(f"{COMPETITION_YAML}: no task named {name!r}; known tasks: {known}")


def copy_clean(src: Path, dst: Path, extra_ignore: tuple[str, ...] = ()) -> None:
    """Copy a file or folder without caches (and without `extra_ignore` patterns)."""
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*IGNORED_NAMES, *extra_ignore),
                        dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def vendor_package(program_dir: Path) -> None:
    """Put a clean copy of the e2lmc package into a program folder."""
    target = program_dir / "e2lmc"
    if target.exists():
        shutil.rmtree(target)
    copy_clean(package_dir(), target)


def judge_key_name(ref_dir: Path) -> str:
    """The key file name the scoring reads: scoring.yaml's `judge.api_key_file`."""
    cfg = ref_dir / CONFIG_NAME
    name = (load_config(cfg) if cfg.is_file() else ScoringConfig()).judge.api_key_file
    if not name:
        raise UserError(f"{cfg}: judge.api_key_file is not set, so scoring would never read "
                        "the key; set it to a file name such as judge_key")
    if PurePosixPath(str(name)).is_absolute() or ".." in PurePosixPath(str(name)).parts:
        raise UserError(f"{cfg}: judge.api_key_file must be a file name inside the "
                        f"reference data, got {name!r}")
    return str(name)


def install_judge_key(ref_dir: Path, key_file: Path) -> Path:
    """Copy the organizer's key into a reference-data folder (owner-only permissions)."""
    if not key_file.is_file():
        raise UserError(f"{key_file}: judge key file not found; pass the file that holds "
                        "the API key")
    key = key_file.read_text().strip()
    if not key:
        raise UserError(f"{key_file}: judge key file is empty; put the API key in it")
    target = ref_dir / judge_key_name(ref_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(key + "\n")
    target.chmod(0o600)
    return target


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    root = dest.resolve()
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if target != root and root not in target.parents:
            raise UserError(f"{zf.filename}: entry {info.filename!r} points outside the zip "
                            "folder; rebuild the zip")
    zf.extractall(dest)


def extract_zip(path: Path, dest: Path) -> Path:
    """Unzip `path` into `dest` (refusing entries that escape it); returns `dest`."""
    try:
        with zipfile.ZipFile(path) as zf:
            _safe_extract(zf, dest)
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a valid zip file") from None
    return dest


@contextmanager
def opened_bundle(path: str | Path) -> Iterator[Path]:
    """A bundle folder for a folder or a zip (extracted to a temp folder, removed after)."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise UserError(f"{path}: no such bundle; pass a bundle zip or folder")
    with tempfile.TemporaryDirectory(prefix="e2lmc-bundle-") as tmp:
        yield extract_zip(path, Path(tmp))
