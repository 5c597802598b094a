"""Train the suite's models side by side, one single-threaded process per model at a time."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

_QUEUE = None
REPORT_EVERY = 5


def workers(n_jobs: int) -> int:
    """E2LMC_SUITE_WORKERS, else the cores this process may use, capped by the job count."""
    env = os.environ.get("E2LMC_SUITE_WORKERS")
    if env:
        return max(1, min(n_jobs, int(env)))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(n_jobs, cores))


def _init(queue) -> None:
    global _QUEUE
    _QUEUE = queue


def _job(args) -> str:
    spec, train, seed, stream_path, tok_dir, out_dir = args
    from e2lmc.suite.training import train_model

    def report(step: int) -> None:
        if _QUEUE is not None and (step % REPORT_EVERY == 0 or step == train.steps):
            _QUEUE.put(REPORT_EVERY if step % REPORT_EVERY == 0 else step % REPORT_EVERY)

    stream = np.load(stream_path)
    train_model(spec, train, stream, tok_dir, out_dir, seed=seed, report=report)
    return spec.name


def model_seed(seed: int, index: int) -> int:
    return seed * 1000 + index


def train_all(cfg, out: Path, tok_dir: Path, streams: Path, progress: bool = True) -> None:
    """Train every model of `cfg` into `out/<model>/`; biggest models start first."""
    from tqdm import tqdm

    from e2lmc.suite.training import count_params

    jobs = [(spec, cfg.train, model_seed(cfg.seed, i), streams / f"{spec.data}.npy", tok_dir,
             out / spec.name) for i, spec in enumerate(cfg.models)]
    jobs.sort(key=lambda j: -count_params(j[0], cfg.vocab_size))
    total = len(jobs) * cfg.train.steps
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    bar = tqdm(total=total, desc="training demo suite", unit="step", disable=not progress,
               smoothing=0.05)
    with ctx.Pool(workers(len(jobs)), initializer=_init, initargs=(queue,)) as pool:
        pending = pool.map_async(_job, jobs, chunksize=1)
        while not pending.ready():
            try:
                bar.update(queue.get(timeout=0.5))
            except Exception:  # queue.Empty: nothing reported in the last half second
                pass
        pending.get()  # re-raise a worker's error
    while not queue.empty():
        bar.update(queue.get())
    bar.close()
