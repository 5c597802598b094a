"""Evaluation engines: trusted code that holds checkpoints and answers lm-eval requests.

Every engine is an lm-eval `LM` (loglikelihood, loglikelihood_rolling, generate_until), so
lm-eval's own filters, process_results and aggregation stay in charge of the metrics.
`shared` is one dict per ingestion run, kept across checkpoints: engines cache there what
does not depend on the weights (tokenized requests, keyed by tokenizer hash).
"""

from __future__ import annotations

from typing import Any

from e2lmc.errors import UserError
from e2lmc.manifest import Checkpoint

ENGINES = ("fast", "hf")


def resolve_device(device: str) -> str:
    """`auto` means cuda when a GPU is visible, else cpu."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` means bfloat16 on GPU (as the organizers ran) and float32 on CPU."""
    if dtype in (None, "auto"):
        return "bfloat16" if device.startswith("cuda") else "float32"
    return dtype


def make_lm(engine: str, checkpoint: Checkpoint, *, device: str = "auto", dtype: str = "auto",
            max_length: int = 2048, batch_tokens: int = 65536, hf_batch_size: int = 1,
            shared: dict[str, Any] | None = None):
    """Load one checkpoint behind the chosen engine (`batch_tokens` bounds the fast
    engine's batches, `hf_batch_size` the stock engine's)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress line per checkpoint is ours to print
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if engine == "hf":
        from e2lmc.engine.hf import load_hflm

        return load_hflm(checkpoint, device=device, dtype=dtype, max_length=max_length,
                         batch_size=hf_batch_size)
    if engine == "fast":
        from e2lmc.engine.fast import FastLM

        return FastLM.from_checkpoint(checkpoint, device=device, dtype=dtype,
                                      max_length=max_length, batch_tokens=batch_tokens,
                                      shared=shared if shared is not None else {})
    raise UserError(f"unknown engine {engine!r}; use one of {ENGINES}")
