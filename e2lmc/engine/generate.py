"""`generate_until` for the fast engine: HFLM's semantics, batched under a token budget.

Same steps as lm-eval 0.4.13's HFLM: requests grouped by their generation kwargs, the
EOS text added to the stop sequences, contexts left-truncated to `max_length -
max_gen_toks` and left-padded, transformers' `generate` with lm-eval's stop-sequence
criteria, and the decoded text cut at the first stop sequence. Contexts are tokenized once
per submission (cached with the loglikelihood encodings). The prefix that all contexts of
a batch share (a few-shot prefix) is forwarded once and its key/value cache handed to
`generate`; each row's rest is left-padded after it.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from e2lmc.engine import tokcache

if TYPE_CHECKING:
    from e2lmc.engine.fast import FastLM

MIN_SHARED = 16  # a shorter prefix shared by a batch's contexts stays in every row


def generate_until(lm: "FastLM", args: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    out: list[str | None] = [None] * len(args)
    groups: dict[str, list[int]] = {}
    for i, (_, kw) in enumerate(args):
        groups.setdefault(json.dumps(kw, sort_keys=True, default=str), []).append(i)
    bos = lm.tokenizer.bos_token
    settings = [_settings(lm, args[idx[0]][1]) for idx in groups.values()]  # refuse first
    for idx, (kwargs, until, max_gen) in zip(groups.values(), settings):
        max_ctx = lm.max_length - max_gen
        contexts = [args[i][0] for i in idx]
        key = ("gen", tokcache.requests_digest("gen", [(c,) for c in contexts]), max_ctx)
        encs = lm._cache.get(key)
        if encs is None:
            encs = lm._cache[key] = _encode_contexts(lm, contexts, bos, max_ctx)
        order = sorted(range(len(idx)), key=lambda j: -len(encs[j]))
        batch: list[int] = []
        for j in order + [None]:
            if j is not None and (not batch or (len(batch) + 1) *
                                  (len(encs[batch[0]]) + max_gen) <= lm.batch_tokens):
                batch.append(j)
                continue
            texts = _generate(lm, [encs[k] for k in batch], until, max_gen, dict(kwargs))
            for k, t in zip(batch, texts):
                out[idx[k]] = t
            batch = [j] if j is not None else []
    return [o if o is not None else "" for o in out]


def _settings(lm: "FastLM", gen_kwargs: Any) -> tuple[dict[str, Any], list[str], int]:
    """(generate kwargs, stop sequences, max new tokens) of one group, refusing what HFLM
    asserts against with the same exception type (AssertionError)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    if not isinstance(gen_kwargs, dict):
        raise AssertionError(f"Expected `kwargs` to be of type `dict` but got {type(gen_kwargs)}")
    kwargs = dict(normalize_gen_kwargs(gen_kwargs, lm.max_gen_toks))
    eos = lm.tokenizer.decode(lm.eot_token_id, skip_special_tokens=False)
    until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
    max_gen = int(kwargs.pop("max_gen_toks"))
    if lm.max_length - max_gen <= 0:
        raise AssertionError(f"Invalid configuration: requested max tokens to generate "
                             f"({max_gen}) must be less than model's maximum sequence length "
                             f"({lm.max_length}).")
    return kwargs, until, max_gen


def _encode_contexts(lm: "FastLM", contexts: list[str], bos: str | None,
                     max_ctx: int) -> list[list[int]]:
    """As HFLM's tok_batch_encode: no special tokens when the text starts with BOS."""
    flags = [False if bos and c.startswith(bos) else lm.encoder.add_bos_token for c in contexts]
    out: list[list[int]] = [[] for _ in contexts]
    for flag in set(flags):
        idx = [i for i, f in enumerate(flags) if f is flag]
        for i, ids in zip(idx, lm.encoder.encode_many([contexts[i] for i in idx], flag)):
            out[i] = ids[-max_ctx:]
    return out


def _generate(lm: "FastLM", encs: list[list[int]], until: list[str], max_gen: int,
              kwargs: dict[str, Any]) -> list[str]:
    """One padded batch; halves and retries when it runs out of memory."""
    from e2lmc.engine.fast import halve_on_oom

    return halve_on_oom(lambda part: _generate_batch(lm, part, until, max_gen, dict(kwargs)),
                        encs, list.__add__, lm._device)


@torch.no_grad()
def _generate_batch(lm: "FastLM", encs: list[list[int]], until: list[str], max_gen: int,
                    kwargs: dict[str, Any]) -> list[str]:
    from lm_eval.models.utils import postprocess_generated_text
    from lm_eval.models.utils_hf import stop_sequences_criteria

    shared = _shared_len(encs) if _positions_from_mask(lm.model) else 0
    ids, mask = _inputs(encs, shared, lm.tokenizer.pad_token_id)
    width = ids.shape[1]
    ids, mask = ids.to(lm._device), mask.to(lm._device)
    if shared:
        kwargs[lm._cache_kw] = _prefix_cache(lm, ids[0, :shared], len(encs))
    kwargs["temperature"] = kwargs.get("temperature", 0.0)
    do_sample = kwargs.get("do_sample")
    if kwargs["temperature"] == 0.0 and do_sample is None:
        kwargs["do_sample"] = do_sample = False
    if do_sample is False and kwargs["temperature"] == 0.0:
        kwargs.pop("temperature")
    max_length = kwargs.pop("max_length", width + max_gen)
    stopping = stop_sequences_criteria(lm.tokenizer, until, width, len(encs))
    gen = lm.model.generate(input_ids=ids, attention_mask=mask, max_length=max_length,
                            stopping_criteria=stopping, pad_token_id=lm.tokenizer.pad_token_id,
                            use_cache=True, **kwargs)
    new_tokens = (gen.shape[1] - width) * len(encs)
    requested = sum(len(e) for e in encs) + new_tokens
    lm.counters["tokens_forwarded"] += requested - shared * (len(encs) - 1)
    lm.counters["unique_tokens"] += requested - shared * (len(encs) - 1)
    lm.counters["tokens_requested"] += requested
    lm.counters["requests"] += len(encs)
    texts = []
    for row in gen.tolist():
        s = lm.tokenizer.decode(row[width:], skip_special_tokens=True)
        texts.append(postprocess_generated_text(generation=s, stop=until, think_end_token=None))
    return texts


def _shared_len(encs: list[list[int]]) -> int:
    """How many leading tokens every context of the batch shares (its few-shot prefix),
    leaving each context at least its last token, which must be in the rows."""
    first = np.asarray(encs[0])
    n = min(len(e) for e in encs) - 1
    for e in encs[1:]:
        if n < MIN_SHARED:
            break
        diff = np.flatnonzero(first[:n] != np.asarray(e[:n]))
        n = int(diff[0]) if len(diff) else n
    return n if n >= MIN_SHARED else 0


def _positions_from_mask(model: Any) -> bool:
    """Whether generate counts position ids from the attention mask (it does for models
    whose forward takes them): the padding gap after a shared prefix needs it."""
    return "position_ids" in inspect.signature(model.forward).parameters


def _inputs(encs: list[list[int]], shared: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask: the shared prefix, then each row's rest left-padded.

    Position ids follow the mask (transformers' generate counts them from it), so every
    token sits where it would in its own unpadded sequence, as in HFLM's left padding."""
    width = max(len(e) for e in encs)
    ids = torch.full((len(encs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for b, e in enumerate(encs):
        rest = len(e) - shared
        ids[b, :shared] = torch.tensor(e[:shared], dtype=torch.long)
        ids[b, width - rest:] = torch.tensor(e[shared:], dtype=torch.long)
        mask[b, :shared] = 1
        mask[b, width - rest:] = 1
    return ids, mask


def _prefix_cache(lm: "FastLM", prefix: torch.Tensor, n: int) -> Any:
    """The shared prefix's key/value cache: forwarded once, then seen by all n rows."""
    from transformers import DynamicCache

    from e2lmc.engine.fast import _cache_tensors

    cache = DynamicCache(config=lm.model.config)
    lm._base(input_ids=prefix[None], use_cache=True, **{lm._cache_kw: cache})
    rows = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in _cache_tensors(cache)]
    return DynamicCache(rows, config=lm.model.config)
