"""Hub datasets of a submission, fetched by the trusted runner before any task code runs.

The task process has no network and never sees the participant's `hf_token`. So the
runner reads the task YAMLs as data (never importing the submission's code), finds every
dataset a task would load from the Hugging Face hub (`dataset_path`, `dataset_name`, and
`revision`, `data_files`, `data_dir` from `dataset_kwargs`), and downloads, with the
participant's token (or none: never the organizers'), the files those configs read:
the dataset card and the matching data files, each verified against the hub's size and
hash. Each dataset lands in a plain folder laid out like its repo, `DEST/OWNER/NAME/COMMIT/`,
whose card lists only the configs used. The task process reads that folder with the
`datasets` library's local loader, which resolves configs, splits and file patterns as it
would on the hub; a dataset that could not be fetched is a named error there, when a task
loads it.

The trusted side parses YAML and file lists only; data files are parsed in the sandbox.
Datasets with a loading script are refused (no dataset code ever runs), and so would be
any dataset that needs `trust_remote_code`: with `datasets` >= 4 that flag does nothing,
and lm-eval 0.4.13 drops it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from e2lmc import hub
from e2lmc.ingestion.taskyaml import YAML_SUFFIXES, check_yaml

PACKAGED_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas"}
DATASET_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")
MAX_BYTES = 4 << 30  # all hub datasets of one submission together
MAX_FILES = 5000
MAX_CARD_BYTES = 16 << 20
FETCH_THREADS = 8
CARD = "README.md"
STANDALONE_YAML = ".huggingface.yaml"
FETCH_FIX = ("; check dataset_path and revision, and that `hf_token` in metadata.yaml can "
             "read the dataset if it is private, or bundle your data with the submission")


class DatasetError(Exception):
    """Why one dataset (or one config of it) cannot be provided."""


def hub_key(path: Any, name: Any, revision: Any) -> str:
    """The identity of one dataset config, as the runner and the task process name it."""
    return json.dumps([str(path), None if name is None else str(name),
                       str(revision) if revision else None])


@dataclass(frozen=True)
class Need:
    """One hub dataset config that a task of the submission loads."""

    path: str
    name: str | None
    revision: str | None
    data_files: Any
    data_dir: str | None
    shown: str  # the YAML that names it

    @property
    def key(self) -> str:
        return hub_key(self.path, self.name, self.revision)


# --------------------------------------------------------------------------- reading
def _load(path: Path, root: Path, seen: tuple[Path, ...] = ()) -> Any:
    """A task YAML with its `include:` files merged in, as lm-eval 0.4.13 merges them
    (included files first, in order; the file's own keys win)."""
    doc = check_yaml(path, f"submission {path.relative_to(root).as_posix()}")
    if not isinstance(doc, dict) or "include" not in doc or path in seen:
        return doc
    merged: dict[str, Any] = {}
    incs = doc.pop("include")
    for inc in incs if isinstance(incs, list) else [incs]:
        target = (path.parent / str(inc)).resolve()
        inside = root in target.parents  # taskyaml.check_task_paths refused the others
        sub = _load(target, root, (*seen, path)) if inside and target.is_file() else None
        if isinstance(sub, dict):
            sub.pop("task_list", None)
            merged.update(sub)
    merged.update(doc)
    return merged


def _configs(tasks_dir: Path) -> list[tuple[dict[str, Any], str]]:
    """Every task configuration the YAMLs define, with the file defining it.

    Follows lm-eval's ways of defining a task: a file with `task: NAME`, its `task_list`
    entries, groups' inline task dicts, and groups' keys that override their tasks."""
    root = tasks_dir.resolve()
    docs = []
    for d, _, names in sorted(os.walk(root)):
        for f in sorted(names):
            if f.endswith(YAML_SUFFIXES):
                p = Path(d) / f
                doc = _load(p, root)
                if isinstance(doc, dict):
                    docs.append((doc, p.relative_to(root).as_posix()))
    tasks: dict[str, dict[str, Any]] = {}
    tags: dict[str, list[str]] = {}
    out = []
    for doc, shown in docs:
        entries = [{**doc, **e} for e in doc.get("task_list") or [] if isinstance(e, dict)]
        if isinstance(doc.get("task"), str):
            entries.append(doc)
        for cfg in entries:
            if isinstance(cfg.get("task"), str):
                tasks[cfg["task"]] = cfg
                tag = cfg.get("tag")
                for t in tag if isinstance(tag, list) else [tag] if tag else []:
                    tags.setdefault(str(t), []).append(cfg["task"])
                out.append((cfg, shown))
    groups = {str(doc["group"]): doc for doc, _ in docs if isinstance(doc.get("group"), str)}

    def walk(group: dict[str, Any], over: dict[str, Any], shown: str, depth: int) -> None:
        over = {**over, **{k: v for k, v in group.items() if k in DATASET_KEYS}}
        items = group.get("task")
        for item in items if isinstance(items, list) else [items]:
            if depth > 8:
                return
            if isinstance(item, dict) and isinstance(item.get("group"), str):
                walk({**groups.get(item["group"], {}), **item}, over, shown, depth + 1)
            elif isinstance(item, dict) and isinstance(item.get("task"), str):
                base = tasks.get(item["task"], {})
                out.append(({**base, **over, **item}, shown))
            elif isinstance(item, str) and over:
                for name in tags.get(item, [item]):
                    if name in tasks:
                        out.append(({**tasks[name], **over}, shown))
                    elif name in groups:
                        walk(groups[name], over, shown, depth + 1)

    for doc, shown in docs:
        if isinstance(doc.get("group"), str):
            walk(doc, {}, shown, 0)
    return out


def _is_hub(path: Any, yaml_dir: Path) -> bool:
    """Whether `datasets.load_dataset(path)` would go to the hub: not a packaged builder,
    not a folder of the submission, a repo id (`OWNER/NAME`)."""
    if not isinstance(path, str) or not path or path in PACKAGED_BUILDERS:
        return False
    if "://" in path or path.startswith(("/", ".")) or path.count("/") > 1:
        return False
    return not (yaml_dir / path).exists()


def hub_needs(tasks_dir: Path) -> list[Need]:
    """The hub dataset configs the submission's tasks load, each once."""
    root = tasks_dir.resolve()
    needs: dict[tuple, Need] = {}
    for cfg, shown in _configs(tasks_dir):
        path = cfg.get("dataset_path")
        if not _is_hub(path, (root / shown).parent):
            continue
        kw = cfg.get("dataset_kwargs") if isinstance(cfg.get("dataset_kwargs"), dict) else {}
        name = cfg.get("dataset_name")
        need = Need(path=path, name=str(name) if name is not None else None,
                    revision=str(kw["revision"]) if kw.get("revision") else None,
                    data_files=kw.get("data_files"),
                    data_dir=str(kw["data_dir"]) if kw.get("data_dir") else None, shown=shown)
        needs.setdefault((need.key, json.dumps(need.data_files, sort_keys=True, default=str),
                          need.data_dir), need)
    return list(needs.values())


# --------------------------------------------------------------------------- selecting
def _patterns(value: Any, where: str) -> list[str]:
    """File patterns of a `data_files` value (a string, a list, {split: ...}, or the
    card's [{split, path}] form), each a path inside the dataset repo."""
    if isinstance(value, str):
        out = [value]
    elif isinstance(value, dict):
        out = [p for v in value.values() for p in _patterns(v, where)]
    elif isinstance(value, list):
        out = [p for v in value for p in _patterns(v.get("path") if isinstance(v, dict)
                                                   else v, where)]
    else:
        raise DatasetError(f"{where}: data_files must be file patterns (a string, a list or "
                           "a mapping of splits)")
    for p in out:
        if "://" in p or p.startswith("/") or ".." in p.replace("\\", "/").split("/"):
            raise DatasetError(f"{where}: data_files entry {p!r} must be a path inside the "
                               "dataset repo (no URL, no absolute path, no '..')")
    return out


def _default_config(configs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The config `datasets` loads without a name (its rule: the only one, the one named
    `default`, or the one marked `default: true`)."""
    for c in configs:
        if len(configs) == 1 or c.get("config_name", "default") == "default" or c.get("default"):
            return c
    return None


def _is_data_file(path: str) -> bool:
    from datasets.load import _ALL_ALLOWED_EXTENSIONS

    parts = path.rsplit("/", 1)[-1].split(".")[1:]
    hidden = any(s.startswith((".", "__")) for s in path.split("/"))
    return not hidden and any(f".{s}" in _ALL_ALLOWED_EXTENSIONS for s in parts)


def _match(files: list[hub.RemoteFile], patterns: list[str], base: str, where: str,
           only_data: bool = False) -> list[hub.RemoteFile]:
    """Files matching any pattern (a superset of what `datasets` resolves: `*` also
    crosses folders); each pattern must match something."""
    prefix = f"{base.strip('/')}/" if base.strip("/") else ""
    out: dict[str, hub.RemoteFile] = {}
    for pat in patterns:
        hits = [f for f in files if fnmatch.fnmatchcase(f.path, prefix + pat)
                and (not only_data or _is_data_file(f.path))]
        if not hits:
            raise DatasetError(f"{where}: no file of the dataset matches {prefix + pat!r}")
        out.update({f.path: f for f in hits})
    return list(out.values())


def select(need: Need, files: list[hub.RemoteFile], configs: list[dict[str, Any]]
           ) -> tuple[list[hub.RemoteFile], str | None]:
    """(the files this config reads, the card config it uses), as `datasets` decides."""
    where = f"submission {need.shown}: dataset {need.path}" + (
        f" (config {need.name})" if need.name else "")
    names = [str(c.get("config_name", "default")) for c in configs]
    if need.name is not None:
        if need.name not in (names or ["default"]):
            raise DatasetError(f"{where}: the dataset has no config {need.name!r} (it has: "
                               f"{', '.join(names[:20]) or 'default'}); fix dataset_name")
        config = next((c for c in configs if str(c.get("config_name", "default")) == need.name),
                      None)
    else:
        config = _default_config(configs)
        if configs and config is None and need.data_files is None:
            raise DatasetError(f"{where}: the dataset has several configs ("
                               f"{', '.join(names[:20])}); set dataset_name to one of them")
    name = str(config.get("config_name", "default")) if config else None
    if need.data_files is not None:
        return _match(files, _patterns(need.data_files, where), need.data_dir or "", where), name
    if need.data_dir:
        return _match(files, ["**"], need.data_dir, where, only_data=True), name
    if config is not None and config.get("data_files") is not None:
        return _match(files, _patterns(config["data_files"], where),
                      str(config.get("data_dir") or ""), where), name
    base = str(config.get("data_dir") or "") if config else ""
    return _match(files, ["**"], base, where, only_data=True), name


# --------------------------------------------------------------------------- fetching
def _card(files: dict[str, hub.RemoteFile], fetch: Callable[[hub.RemoteFile], Path]
          ) -> dict[str, Any]:
    """The dataset card's YAML metadata (with a standalone .huggingface.yaml merged in)."""
    from huggingface_hub import metadata_load

    meta: dict[str, Any] = {}
    if sum(files[n].size for n in (CARD, STANDALONE_YAML) if n in files) > MAX_CARD_BYTES:
        raise DatasetError(f"its dataset card is larger than {MAX_CARD_BYTES >> 20} MiB")
    try:
        if CARD in files:
            meta = metadata_load(fetch(files[CARD])) or {}
        if STANDALONE_YAML in files:
            extra = yaml.safe_load(fetch(files[STANDALONE_YAML]).read_text(encoding="utf-8"))
            meta.update(extra if isinstance(extra, dict) else {})
    except (yaml.YAMLError, UnicodeDecodeError):
        raise DatasetError("has a dataset card (README.md) whose YAML header does not "
                           "parse") from None
    return meta if isinstance(meta, dict) else {}


def _write_card(folder: Path, meta: dict[str, Any], used: set[str]) -> None:
    """The local card: the same metadata, `configs` limited to the ones used (`datasets`
    resolves every listed config's files, and only the used ones were fetched)."""
    if isinstance(meta.get("configs"), list):
        meta = {**meta, "configs": [c for c in meta["configs"] if isinstance(c, dict)
                                    and str(c.get("config_name", "default")) in used]}
    (folder / STANDALONE_YAML).unlink(missing_ok=True)
    (folder / CARD).write_text("---\n" + yaml.safe_dump(meta, sort_keys=False,
                                                        allow_unicode=True) + "---\n",
                               encoding="utf-8")


def fetch_repo(path: str, revision: str | None, needs: list[Need], dest: Path,
               token: str | None, budget: int) -> tuple[dict[str, dict[str, str]], int]:
    """One dataset repo: ({need key: {"dir"} or {"error"}}, bytes fetched)."""
    commit, listed = hub.repo_files(path, "dataset", revision, token or False)
    files = {f.path: f for f in listed}
    script = f"{path.split('/')[-1]}.py"
    if script in files:
        raise DatasetError(f"is built by a loading script ({script}), which `datasets` no "
                           "longer runs and this evaluation never runs; use a dataset "
                           "stored as parquet, JSON or CSV files")
    folder = dest / path / commit
    folder.mkdir(parents=True, exist_ok=True)

    def get(f: hub.RemoteFile) -> Path:
        return hub.fetch(path, "dataset", commit, f, folder, token or False)

    meta = _card(files, get)
    configs = [c for c in meta.get("configs") or [] if isinstance(c, dict)]
    chosen: dict[str, hub.RemoteFile] = {}
    used: set[str] = set()
    out: dict[str, dict[str, str]] = {}
    for need in needs:
        try:
            picked, name = select(need, listed, configs)
        except DatasetError as exc:
            out[need.key] = {"error": str(exc)}
            continue
        chosen.update({f.path: f for f in picked})
        used |= {name} if name else set()
        out[need.key] = {"dir": str(folder)}
    size = sum(f.size for f in chosen.values())
    if size > budget or len(chosen) > MAX_FILES:
        raise DatasetError(f"is too large: the configs used hold {len(chosen)} files, "
                           f"{size / 1e6:.0f} MB, more than this evaluation fetches "
                           f"({budget / 1e6:.0f} MB left of {MAX_BYTES / 1e6:.0f} MB, at most "
                           f"{MAX_FILES} files); name a smaller config or data_files")
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:  # small files: latency-bound
        list(pool.map(get, chosen.values()))
    if meta:
        _write_card(folder, meta, used)
    shutil.rmtree(folder / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
    return out, size


@dataclass
class Prefetched:
    """What the task process is told: per dataset config, its folder or why it has none."""

    datasets: dict[str, dict[str, str]]
    folder: Path
    summary: list[dict[str, Any]]


def prefetch(tasks_dir: Path, dest: Path, token: str | None, log: Callable[[str], None],
             max_bytes: int = MAX_BYTES) -> Prefetched:
    """Fetch every hub dataset config the submission's tasks load into `dest`."""
    needs = hub_needs(tasks_dir)
    dest.mkdir(parents=True, exist_ok=True)
    by_repo: dict[tuple[str, str | None], list[Need]] = {}
    for n in needs:
        by_repo.setdefault((n.path, n.revision), []).append(n)
    datasets: dict[str, dict[str, str]] = {}
    summary: list[dict[str, Any]] = []
    budget, down = max_bytes, None
    for (path, revision), group in by_repo.items():
        t = time.monotonic()
        got, size, reason = {}, 0, down
        if reason is None:
            try:
                got, size = fetch_repo(path, revision, group, dest, token, budget)
                budget -= size
            except DatasetError as exc:
                reason = f"{exc}"
            except hub.HubError as exc:
                reason = f"could not be verified: {exc}; try again later"
            except Exception as exc:  # noqa: BLE001 - huggingface_hub / transport errors
                reason = hub.why(exc) + FETCH_FIX
                down = reason if hub.unreachable(exc) else None
        if reason is not None:
            got = {n.key: {"error": f"submission {n.shown}: dataset {path} {reason}"}
                   for n in group}
        datasets.update(got)
        ok = all("dir" in v for v in got.values())
        summary.append({"dataset": path, "revision": revision, "configs": len(group),
                        "bytes": size, "status": "ok" if ok else "error"})
        log(f"ingest: hub dataset {path}: {len(group)} config(s), {size / 1e6:.1f} MB"
            f" in {time.monotonic() - t:.1f} s" + ("" if ok else " (not available)"))
    return Prefetched(datasets=datasets, folder=dest, summary=summary)
