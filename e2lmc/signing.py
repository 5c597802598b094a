"""The key that proves an ingestion output was written by the ingestion program.

Participant code may run beside the ingestion with write access to its output (a task
process that escaped, or a container the platform starts from a submission's own
`command`). So the runner signs what it writes with a key only the two programs hold, and
scoring believes nothing it cannot verify. The key is 32 random bytes, hex in a file
named `signing.key`: `bundle build` puts the same fresh key into every task's
`input_data` (read by ingestion) and `reference_data` (read by scoring). Local runs
without one (`e2lmc ingest` / `score` / `demo`, the starting kit) share one per-user key
file, created on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from e2lmc.errors import UserError

KEY_NAME = "signing.key"
KEY_FILE_ENV = "E2LMC_SIGNING_KEY_FILE"  # where the per-user fallback key lives
KEY_BYTES = 32


def user_key_file() -> Path:
    """The per-user fallback: $E2LMC_SIGNING_KEY_FILE, else the user's config folder."""
    override = os.environ.get(KEY_FILE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "e2lmc" / KEY_NAME


def key_file(folder: str | Path | None) -> Path:
    """`folder/signing.key` where the folder has one (a built bundle), else the user's."""
    if folder is not None and (Path(folder) / KEY_NAME).is_file():
        return Path(folder) / KEY_NAME
    return user_key_file()


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key(path: Path, key: bytes) -> Path:
    """Write a key readable by its owner only (replaces any file already there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    tmp.replace(path)
    return path


def read_key(path: Path, fix: str) -> bytes:
    """The key in `path`; a UserError naming the file and `fix` when it is not one."""
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not hexadecimal"
        raise UserError(f"{path}: not a readable signing key ({reason}); {fix}") from None
    if len(key) != KEY_BYTES:
        raise UserError(f"{path}: a signing key is {2 * KEY_BYTES} hex digits, this file "
                        f"has {len(text)} characters; {fix}")
    return key


def _create_user_key(path: Path) -> None:
    """First use: create the user's key, without racing a concurrent first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_key(path.with_name(f".{path.name}.{os.getpid()}.new"), new_key())
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_key(folder: str | Path | None) -> bytes:
    """The key for a program reading `folder` (ingestion: --input-data, scoring: --ref)."""
    path = key_file(folder)
    if path == user_key_file():
        if not path.exists():
            _create_user_key(path)
        return read_key(path, "delete it and a new key is created on the next run (outputs "
                              "signed with the old key must then be ingested again)")
    return read_key(path, "rebuild the bundle (`e2lmc bundle build` writes a fresh key into "
                          "input_data and reference_data)")


def canonical(doc: Any) -> bytes:
    """One byte string per JSON value, so that the reader signs what the writer signed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=str).encode()


def sign(key: bytes, doc: Any) -> str:
    """HMAC-SHA256 of the document's canonical JSON, as hex."""
    return hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()


def verify(key: bytes, doc: Any, signature: Any) -> bool:
    """Does `signature` sign `doc` under `key`? (constant-time comparison)"""
    return isinstance(signature, str) and hmac.compare_digest(sign(key, doc), signature)
