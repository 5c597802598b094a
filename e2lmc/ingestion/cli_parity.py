"""What `lm_eval --tasks T` does around a task that the task process must do the same way.

The CLI (`simple_evaluate`) seeds Python's, numpy's and torch's global random before it
builds the task, and bootstraps the stderr of some aggregations (median, f1, mcc,
perplexity, bleu, ...) with 100,000 resamples in a multiprocessing pool. The task process
builds the task once and scores each checkpoint in a fork that may write nothing, where
that pool cannot start (its semaphores need a writable /dev/shm). This module gives the
CLI's numbers there: the same seeds, every evaluation starting from the global random state
the CLI's would start from, and lm-eval's own bootstrap chunks run in forked workers that
answer through pipes.
"""

from __future__ import annotations

import os
import pickle
import random
import sys
from typing import Any, Callable, Sequence

BOOTSTRAP_ITERS = 100_000  # simple_evaluate's default; the CLI passes no other value


def seed_globals() -> None:
    """simple_evaluate's seeds: random 0, numpy 1234, torch 1234 (lm-eval's defaults)."""
    import numpy as np
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED
    from lm_eval.utils import set_torch_seed

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    set_torch_seed(DEFAULT_OTHER_SEED)


class RandomState:
    """The global random states at one moment (taken once the requests are built, where the
    CLI hands them to the model), so every evaluation's metrics start from them."""

    def __init__(self) -> None:
        import numpy as np

        self._random = random.getstate()
        self._numpy = np.random.get_state()
        torch = sys.modules.get("torch")
        self._torch = torch.random.get_rng_state() if torch is not None else None

    def restore(self) -> None:
        import numpy as np

        random.setstate(self._random)
        np.random.set_state(self._numpy)
        if self._torch is not None:
            sys.modules["torch"].random.set_rng_state(self._torch)


def use_forked_bootstrap() -> None:
    """Make lm-eval's `stderr_for_metric` bootstrap with `bootstrap_stderr` below."""
    import lm_eval.api.metrics as metrics

    metrics.bootstrap_stderr = bootstrap_stderr


def bootstrap_stderr(f: Callable[[Sequence[Any]], float], xs: Sequence[Any],
                     iters: int) -> float:
    """lm-eval's `bootstrap_stderr`, to the bit: the same chunks of at most 1,000 resamples,
    chunk i drawn by lm-eval's own worker with `random.Random(i)`, the replicates in chunk
    order; only the pool is replaced by forked workers (one per usable CPU)."""
    from lm_eval.api.metrics import _bootstrap_internal, sample_stddev

    size = min(1000, iters)
    chunks = list(range(iters // size))
    draw = _bootstrap_internal(f, size)
    workers = max(1, min(len(os.sched_getaffinity(0)), len(chunks)))
    done: dict[int, list[float]] = {}
    started, failed = [], []
    for w in range(workers):
        share = chunks[w::workers]
        if workers > 1:
            try:
                started.append((*_start(draw, xs, share), share))
                continue
            except OSError:  # no process to spare: this share runs here
                pass
        done.update((i, draw((i, xs))) for i in share)
    for pid, fd, share in started:  # read every pipe (and reap every worker) first
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        try:
            status, payload = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a worker killed mid-way leaves a torn pickle
            status, payload = "error", "a worker died"
        if status == "ok":
            done.update(zip(share, payload))
        else:
            failed.append(payload)
    if failed:
        name = getattr(f, "__name__", "a metric")
        raise RuntimeError(f"bootstrapping the stderr of {name} failed: {failed[0]}")
    return sample_stddev([x for i in chunks for x in done[i]])


def _start(draw: Callable, xs: Sequence[Any], share: list[int]) -> tuple[int, int]:
    """Fork a worker that draws the chunks `share` and pickles them to a pipe."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        os.close(r)
        try:
            data = pickle.dumps(("ok", [draw((i, xs)) for i in share]))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            data = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
        try:
            with os.fdopen(w, "wb") as fh:
                fh.write(data)
        finally:
            os._exit(0)
    os.close(w)
    return pid, r
