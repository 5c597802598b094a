"""Framed JSON messages between the trusted runner and the task process.

JSON only (never pickle): the task process runs participant code, so whatever it sends is
data to validate, not objects to trust. Each frame is an 8-byte big-endian length, then
UTF-8 JSON.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

_HEADER = struct.Struct(">Q")


class WireClosed(Exception):
    """The other side closed the pipe (exited or was killed)."""


class WireTimeout(Exception):
    """No complete message arrived in time."""


class WireTooLarge(Exception):
    """A frame announced more bytes than the receiver accepts."""


def send(fd: int, doc: Any) -> None:
    data = json.dumps(doc, allow_nan=True, separators=(",", ":")).encode("utf-8")
    buf = memoryview(_HEADER.pack(len(data)) + data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireTimeout()
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise WireTimeout()
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise WireClosed()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(fd: int, timeout: float | None = None, max_bytes: int = 1 << 30) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > max_bytes:
        raise WireTooLarge(f"{size} bytes > {max_bytes}")
    return json.loads(_read_exact(fd, size, deadline).decode("utf-8"))
