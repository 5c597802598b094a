"""Trusted-side access to the Hugging Face hub, shared by `e2lmc stage` (weights) and the
ingestion's dataset pre-fetch: the endpoint, what a remote file must hash to, and one
verified download.

huggingface_hub reads HF_ENDPOINT once, when it is imported; we read it at every call and
pass it explicitly, so a process can be pointed at a mirror (or a test's stand-in hub)
after the import. Its offline switch (HF_HUB_OFFLINE=1) is honoured as it is: nothing is
fetched then. The hub sees only the requests each step needs: huggingface_hub's telemetry
(which also asks the endpoint for a registry of agent names, from every fresh container)
is switched off before each one. Tokens are the caller's choice: `None` lets huggingface_hub take HF_TOKEN
from the environment (the organizers' own, for staging), `False` sends none. No token is
ever written to a file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2lmc.errors import UserError

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
INFO_TIMEOUT = 60.0  # seconds; huggingface_hub sets none on metadata requests


class HubError(UserError):
    """A file the hub lists cannot be verified; callers add which repo and the fix."""


def endpoint() -> str:
    """The hub to talk to, read now; telemetry is switched off on the way."""
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit, as the hub's metadata describes it."""

    path: str
    size: int
    sha256: str | None  # files stored with LFS (weights, parquet)
    blob_id: str | None  # the git blob id (SHA-1) of files stored in git itself

    @property
    def expected(self) -> str:
        """What the downloaded bytes must hash to: `sha256:...` or `sha1:...` (git blob)."""
        return f"sha256:{self.sha256}" if self.sha256 else f"sha1:{self.blob_id}"


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def unreachable(exc: BaseException) -> bool:
    """Whether the failure is the hub not answering at all (so the next repo fails too)."""
    import httpx2
    from huggingface_hub import errors

    return any(isinstance(e, (errors.OfflineModeIsEnabled, httpx2.TransportError))
               for e in _chain(exc))


def why(exc: BaseException) -> str:
    """A hub failure in a few words (never the server's text: it may echo request data)."""
    from huggingface_hub import errors

    if any(isinstance(e, errors.OfflineModeIsEnabled) for e in _chain(exc)):
        return "cannot be reached: HF_HUB_OFFLINE=1 is set on this machine"
    if unreachable(exc):
        return f"cannot be reached: the hub at {endpoint()} did not answer"
    kinds = [(errors.GatedRepoError, "is gated: accept its conditions on the hub with the "
              "token's account"),
             (errors.RevisionNotFoundError, "has no such revision"),
             (errors.RepositoryNotFoundError, "was not found, or the token given cannot read "
              "it"),
             (errors.RemoteEntryNotFoundError, "lacks a file its metadata lists"),
             (errors.HFValidationError, "is not a valid repo id (OWNER/NAME)")]
    for kind, text in kinds:
        if isinstance(exc, kind):
            return text
    return f"could not be fetched ({type(exc).__name__})"


def repo_files(repo_id: str, repo_type: str, revision: str | None,
               token: str | bool | None) -> tuple[str, list[RemoteFile]]:
    """(commit, files) of a repo at `revision`, sizes and hashes from the hub's metadata.

    Raises huggingface_hub's own errors; callers turn them into messages with `why`."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).repo_info(
        repo_id, repo_type=repo_type, revision=revision, files_metadata=True, token=token,
        timeout=INFO_TIMEOUT)
    files = []
    for s in info.siblings or []:
        lfs = s.lfs
        size = lfs.size if lfs is not None else s.size
        if size is None or (lfs is None and not s.blob_id):
            raise HubError(f"the hub gives no size or hash for {s.rfilename}, so it "
                           "cannot be verified")
        files.append(RemoteFile(s.rfilename, int(size), lfs.sha256 if lfs else None,
                                s.blob_id))
    return info.sha, files


def digest(path: Path, remote: RemoteFile) -> str:
    """The hash of a local file in the form `remote.expected` takes."""
    if remote.sha256:
        h, kind = hashlib.sha256(), "sha256"
    else:
        h, kind = hashlib.sha1(), "sha1"  # noqa: S324 - git's blob id, not a security hash
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return f"{kind}:{h.hexdigest()}"


def bar_feeding(bar: Any = None) -> type:
    """A tqdm class for huggingface_hub's per-file bars: silent, each update added to
    `bar` (one overall bar) when given."""
    from tqdm.auto import tqdm

    class Into(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if bar is not None:
                bar.update(n or 0)
            return None

    return Into


def fetch(repo_id: str, repo_type: str, commit: str, remote: RemoteFile, local_dir: Path,
          token: str | bool | None, tqdm_class: type | None = None) -> Path:
    """Download one file into `local_dir` (resuming a partial download) and verify it.

    A file that differs from the hub's size and hash (damaged on disk, cut short) is
    downloaded afresh once; if that differs too, it is deleted and refused."""
    from huggingface_hub import hf_hub_download

    for force in (False, True):
        path = Path(hf_hub_download(repo_id, remote.path, repo_type=repo_type,
                                    revision=commit, local_dir=local_dir, token=token,
                                    endpoint=endpoint(),
                                    tqdm_class=tqdm_class or bar_feeding(),
                                    force_download=force))
        if path.stat().st_size == remote.size and digest(path, remote) == remote.expected:
            return path
        path.unlink()
    raise HubError(f"{remote.path} does not match the size and hash the hub lists for it, "
                   "twice; it was deleted")
