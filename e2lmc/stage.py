"""`e2lmc stage`: every hub checkpoint of a manifest, downloaded once into the folder a
Codabench worker mounts read-only as `/app/data`, so that no submission downloads weights.

Layout: `DATA/hf/OWNER/REPO/<the repo's own paths>` (a checkpoint's `subfolder` stays a
subfolder), and `DATA/hf/OWNER/REPO/.e2lmc-staged.json` recording the commit, each
verified file (size, modification time, hash) and the checkpoints complete on disk. A
re-run skips what the record proves intact and resumes the rest; every file is checked
against the size and hash the hub lists for it (SHA-256 for LFS files, the git blob id
otherwise).

Ingestion uses the staged copies (`use_staged`): a hub checkpoint resolves to
`DATA/hf/OWNER/REPO/SUBFOLDER` when the record says it is complete; without one, the run
stops before any work with an error naming this command, unless the manifest sets
`defaults.download: true` (then the engine downloads it, on every run).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from e2lmc import hub
from e2lmc.errors import UserError
from e2lmc.manifest import HF_PREFIX, Checkpoint, Manifest, load_manifest

STAGED_ROOT = "hf"
RECORD = ".e2lmc-staged.json"
MOUNT = "/app/data"
RESERVE_BYTES = 10**9  # left free on the data disk
# Other weight formats are skipped where a checkpoint has safetensors (transformers
# loads those first), so a folder holding both is not staged twice over.
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
GB = 1e9


def repo_root(data: Path, repo_id: str) -> Path:
    return Path(data) / STAGED_ROOT / repo_id


def _repo_sub(ck: Checkpoint) -> tuple[str, str]:
    return ck.source[len(HF_PREFIX):], (ck.subfolder or "").strip("/")


def _read_record(root: Path) -> dict[str, Any]:
    try:
        doc = json.loads((root / RECORD).read_text())
        if isinstance(doc, dict) and isinstance(doc.get("files"), dict):
            return doc
    except (OSError, ValueError):
        pass
    return {"files": {}, "complete": []}


def _write_record(root: Path, record: dict[str, Any]) -> None:
    tmp = root / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(root / RECORD)


def staged_checkpoint(data: Path, ck: Checkpoint) -> Path | None:
    """The staged copy of a hub checkpoint, when `e2lmc stage` completed it."""
    repo_id, sub = _repo_sub(ck)
    root = repo_root(data, repo_id)
    if sub in _read_record(root).get("complete", []):
        return root
    return None


def use_staged(manifest: Manifest, data: Path | None) -> Manifest:
    """The manifest with each hub checkpoint pointing at its staged copy.

    A hub checkpoint without one is an error, naming `e2lmc stage`, unless the manifest
    allows downloads (`defaults.download: true`)."""
    missing: list[Checkpoint] = []
    models = []
    for m in manifest.models:
        cks = []
        for ck in m.checkpoints:
            local = staged_checkpoint(data, ck) if (ck.is_hub and data) else None
            if local is not None:
                ck = replace(ck, source=str(local))
            elif ck.is_hub and not manifest.defaults.download:
                missing.append(ck)
            cks.append(ck)
        models.append(replace(m, checkpoints=tuple(cks)))
    if missing:
        ck = missing[0]
        where = f"under {Path(data) / STAGED_ROOT}" if data else "(no --data-dir given)"
        raise UserError(
            f"{manifest.path}: {len(missing)} hub checkpoint(s) have no staged copy {where}, "
            f"e.g. {ck.key} ({ck.source}, subfolder {ck.subfolder}); stage them once on "
            f"this worker with `e2lmc stage {manifest.path} --data <the folder mounted at "
            f"{MOUNT}>`, or set `defaults.download: true` in the manifest to download "
            "them for every submission")
    return replace(manifest, models=models)


# --------------------------------------------------------------------------- planning
@dataclass
class RepoPlan:
    """What one hub repo needs: its commit, the files of every checkpoint wanted."""

    repo_id: str
    commit: str
    files: dict[str, hub.RemoteFile] = field(default_factory=dict)
    checkpoints: dict[str, list[str]] = field(default_factory=dict)  # subfolder -> paths
    todo: list[hub.RemoteFile] = field(default_factory=list)


def checkpoint_files(files: list[hub.RemoteFile], sub: str) -> list[hub.RemoteFile]:
    """The files `from_pretrained(repo, subfolder=sub)` reads: those directly in `sub`
    (the repo's top level when empty), other weight formats dropped beside safetensors."""
    prefix = f"{sub}/" if sub else ""
    mine = [f for f in files if f.path.startswith(prefix) and "/" not in f.path[len(prefix):]
            and not f.path.endswith(".gitattributes")]
    if any(f.path.endswith(".safetensors") for f in mine):
        mine = [f for f in mine if not f.path.endswith(OTHER_WEIGHTS)]
    return mine


def _is_done(root: Path, record: dict[str, Any], f: hub.RemoteFile) -> bool:
    entry = record["files"].get(f.path)
    path = root / f.path
    if not entry or entry.get("hash") != f.expected or not path.is_file():
        return False
    st = path.stat()
    return st.st_size == f.size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")


def plan(manifest: Manifest, data: Path) -> list[RepoPlan]:
    """One query per repo (the organizers' HF_TOKEN from the environment for private
    ones); what each checkpoint needs and what is not yet verified on disk."""
    wanted: dict[str, set[str]] = {}
    for ck in manifest.checkpoints:
        if ck.is_hub:
            repo_id, sub = _repo_sub(ck)
            wanted.setdefault(repo_id, set()).add(sub)
    plans = []
    for repo_id, subs in wanted.items():
        try:
            commit, files = hub.repo_files(repo_id, "model", None, None)
        except hub.HubError as exc:
            raise hub.HubError(f"{manifest.path}: hub repo {repo_id}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - huggingface_hub / transport errors
            raise hub.HubError(f"{manifest.path}: hub repo {repo_id} {hub.why(exc)}; check the "
                               "manifest's source, and HF_TOKEN for a private repo") from None
        p = RepoPlan(repo_id, commit)
        for sub in sorted(subs):
            mine = checkpoint_files(files, sub)
            if not any(f.path.endswith("config.json") for f in mine):
                raise UserError(f"{manifest.path}: hub repo {repo_id} has no config.json in "
                                f"{sub or 'its top folder'}; check the checkpoints' subfolder")
            p.checkpoints[sub] = [f.path for f in mine]
            p.files.update({f.path: f for f in mine})
        record = _read_record(repo_root(data, repo_id))
        p.todo = [f for f in p.files.values() if not _is_done(repo_root(data, repo_id), record, f)]
        plans.append(p)
    return plans


def check_disk(data: Path, need: int) -> None:
    """Refuse up front when the data disk cannot hold what is left to download."""
    probe = Path(data)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + RESERVE_BYTES > free:
        raise UserError(f"{data}: staging needs {need / GB:.1f} GB more (and keeps "
                        f"{RESERVE_BYTES / GB:.1f} GB free), but only {free / GB:.1f} GB are free; "
                        "free some space or pass another --data folder (--dry-run prints "
                        "the plan)")


# --------------------------------------------------------------------------- staging
def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc="staging",
                dynamic_ncols=True)


def stage_repo(p: RepoPlan, data: Path, bar) -> None:
    root = repo_root(data, p.repo_id)
    root.mkdir(parents=True, exist_ok=True)
    record = _read_record(root)
    record.update(repo_id=p.repo_id, commit=p.commit)
    record["complete"] = [s for s in record.get("complete", []) if s not in p.checkpoints]
    feed = hub.bar_feeding(bar)
    for f in p.todo:
        try:
            path = hub.fetch(p.repo_id, "model", p.commit, f, root, None, tqdm_class=feed)
        except hub.HubError as exc:
            _write_record(root, record)
            raise hub.HubError(f"hub repo {p.repo_id}: {exc}; run the same command again "
                               "(or report the repo to its owners if this repeats)") from None
        except Exception as exc:  # noqa: BLE001 - huggingface_hub / transport errors
            _write_record(root, record)
            raise hub.HubError(f"hub repo {p.repo_id}: {f.path} {hub.why(exc)}; run the same "
                               "command again to resume") from None
        st = path.stat()
        record["files"][f.path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "hash": f.expected}
        _write_record(root, record)
    record["complete"] = sorted(set(record["complete"]) | set(p.checkpoints))
    _write_record(root, record)


def staged_manifest(manifest: Manifest, mount: str) -> dict[str, Any]:
    """The manifest document with hub checkpoints pointing at `MOUNT/hf/OWNER/REPO`."""
    models = []
    for m in manifest.models:
        cks = tuple(replace(c, source=f"{mount.rstrip('/')}/{STAGED_ROOT}/{_repo_sub(c)[0]}")
                    if c.is_hub else c for c in m.checkpoints)
        models.append(replace(m, checkpoints=cks))
    return replace(manifest, models=models).to_dict()


def stage(manifest_path: Path, data: Path, output: Path | None = None, mount: str = MOUNT,
          dry_run: bool = False, log: Callable[[str], None] = print) -> list[RepoPlan]:
    """Stage every hub checkpoint of the manifest under `data`; returns the plan."""
    manifest = load_manifest(manifest_path)
    data = Path(data)
    plans = plan(manifest, data)
    total = sum(f.size for p in plans for f in p.files.values())
    need = sum(f.size for p in plans for f in p.todo)
    n_ck = sum(len(p.checkpoints) for p in plans)
    log(f"stage: {n_ck} checkpoints in {len(plans)} hub repos, {total / GB:.2f} GB; "
        f"{need / GB:.2f} GB left to download into {data}")
    if dry_run:
        for p in plans:
            size = sum(f.size for f in p.files.values())
            log(f"  {p.repo_id}@{p.commit[:10]}: {len(p.checkpoints)} checkpoints, "
                f"{len(p.files)} files, {size / GB:.2f} GB")
        return plans
    if need:
        check_disk(data, need)
    t0 = time.monotonic()
    with _progress(total, total - need) as bar:
        for p in plans:
            stage_repo(p, data, bar)
    log(f"stage: done in {time.monotonic() - t0:.0f} s; {data} holds {total / GB:.2f} GB "
        "of verified checkpoints")
    if output is not None:
        doc = staged_manifest(manifest, mount)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(yaml.safe_dump(doc, sort_keys=False))
        log(f"stage: wrote {output} (checkpoints under {mount}/{STAGED_ROOT}/)")
    return plans


def cli_stage(args) -> int:
    stage(Path(args.manifest), Path(args.data), Path(args.output) if args.output else None,
          mount=args.mount, dry_run=args.dry_run)
    return 0

