"""Framed JSON messages between the trusted runner and the task process.

JSON only (never pickle): the task process runs participant code, so whatever it sends is
data to validate, not objects to trust. Each frame is an 8-byte big-endian length, then
UTF-8 JSON: one object, at most MAX_DEPTH deep. Numbers are finite unless the receiver
trusts the sender (the child receiving the runner's answers, where -inf is a log-prob).
Every failure is a WireError.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any

_HEADER = struct.Struct(">Q")
MAX_DEPTH = 64  # real messages nest a few levels; deep nesting only aims at recursion


class WireError(Exception):
    """Any failure to receive one message."""


class WireClosed(WireError):
    """The other side closed the pipe (exited or was killed), perhaps mid-frame."""


class WireTimeout(WireError):
    """No complete message arrived in time."""


class WireTooLarge(WireError):
    """A frame announced more bytes than the receiver accepts."""


class WireMalformed(WireError, ValueError):
    """A frame that is not one JSON object of the accepted form (the message says how).

    Also a ValueError, so a caller that maps bad data by ValueError keeps working.
    """


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
            poller = select.poll()  # select() fails on descriptors above 1023
            poller.register(fd, select.POLLIN)
            if not poller.poll(left * 1000):
                raise WireTimeout()
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise WireClosed()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e999
        raise WireMalformed("a number overflows to infinity")
    return value


def _refuse_constant(token: str) -> float:
    raise WireMalformed(f"non-finite number {token}")


def _depth(doc: Any) -> int:
    """How deep containers nest (iteratively: the document may be deep by design)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
            items = node.values() if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in items)
    return deepest


def decode(data: bytes, allow_nonfinite: bool = False) -> dict[str, Any]:
    """One message's object, or WireMalformed saying what is wrong (never the content)."""
    hooks = {} if allow_nonfinite else {"parse_float": _finite,
                                        "parse_constant": _refuse_constant}
    try:
        doc = json.loads(data.decode("utf-8"), **hooks)
    except UnicodeDecodeError:
        raise WireMalformed("not UTF-8") from None
    except RecursionError:
        raise WireMalformed(f"nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # JSONDecodeError, an integer of thousands of digits
        raise WireMalformed(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise WireMalformed(f"a JSON {type(doc).__name__}, not an object")
    if _depth(doc) > MAX_DEPTH:
        raise WireMalformed(f"nested deeper than {MAX_DEPTH}")
    return doc


def recv(fd: int, timeout: float | None = None, max_bytes: int = 1 << 30,
         allow_nonfinite: bool = False) -> dict[str, Any]:
    """The next message; any failure is a WireError (see the subclasses)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > max_bytes:
        raise WireTooLarge(f"{size} bytes > {max_bytes}")
    return decode(_read_exact(fd, size, deadline), allow_nonfinite)
