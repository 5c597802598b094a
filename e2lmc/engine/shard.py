"""Spread a grid's checkpoints over every visible GPU, one worker process per device.

Checkpoints are dealt round-robin (index i goes to device i mod n), so each worker gets
the same mix of models and the merged stream advances in manifest order without long
stalls. Each worker keeps one `shared` dict for all its checkpoints (tokenized requests
and scoring plans are reused), and results come back in manifest order whichever worker
finishes first. With a single device everything runs in the calling process.

    for index, result, error in shard.run(evaluate, checkpoints, shard.devices()):
        ...  # index follows manifest order; error is a one-line message or None

`evaluate(checkpoint, device, shared)` must be a module-level function (it is pickled to
the workers) and its result picklable.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_mod
from typing import Any, Callable, Iterator, Sequence

Evaluate = Callable[[Any, str, dict], Any]
log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def devices() -> list[str]:
    """`cuda:0..n-1` for the visible GPUs, else `["cpu"]`."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def plan(checkpoints: Sequence[Any], n_devices: int) -> list[list[int]]:
    """Indices of the checkpoints each device evaluates, in manifest order."""
    if n_devices < 1:
        raise ValueError("need at least one device")
    return [list(range(d, len(checkpoints), n_devices)) for d in range(n_devices)]


def worker(device: str, jobs: list[tuple[int, Any]], evaluate: Evaluate, out: Any) -> None:
    """Worker process entry: evaluate each (index, checkpoint), post (index, result, error)."""
    shared: dict = {}
    for index, checkpoint in jobs:
        try:
            out.put((index, evaluate(checkpoint, device, shared), None))
        except Exception as exc:  # noqa: BLE001 - reported per checkpoint, the run goes on
            log.exception("evaluating checkpoint %d on %s failed", index, device)
            out.put((index, None, _one_line(exc)))


def run(evaluate: Evaluate, checkpoints: Sequence[Any], device_list: Sequence[str] | None = None,
        ) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (index, result, error) for every checkpoint, in manifest order."""
    device_list = list(device_list or devices())
    assignments = [a for a in plan(checkpoints, len(device_list)) if a]
    if len(assignments) <= 1:
        shared: dict = {}
        for index, checkpoint in enumerate(checkpoints):
            try:
                yield index, evaluate(checkpoint, device_list[0], shared), None
            except Exception as exc:  # noqa: BLE001 - reported per checkpoint, the run goes on
                log.exception("evaluating checkpoint %d on %s failed", index, device_list[0])
                yield index, None, _one_line(exc)
        return

    ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    out = ctx.Queue()
    missing: dict[Any, set[int]] = {}  # worker -> indices it has not reported yet
    for dev, idx in zip(device_list, assignments):
        jobs = [(i, checkpoints[i]) for i in idx]
        p = ctx.Process(target=worker, args=(dev, jobs, evaluate, out), daemon=True)
        p.start()
        missing[p] = set(idx)
    done: dict[int, tuple[Any, str | None]] = {}
    nxt = 0
    try:
        while nxt < len(checkpoints):
            try:
                index, result, error = out.get(timeout=2)
                done[index] = (result, error)
                for left in missing.values():
                    left.discard(index)
            except queue_mod.Empty:
                for p, left in missing.items():  # a worker that died (killed, segfault)
                    if left and not p.is_alive():
                        for i in left:
                            done[i] = (None, f"the worker process exited with code "
                                             f"{p.exitcode} before evaluating it")
                        left.clear()
            while nxt in done:
                yield (nxt, *done.pop(nxt))
                nxt += 1
    finally:
        for p in missing:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
