"""`generate_until` for the fast engine: HFLM's semantics, batched under a token budget.

Same steps as lm-eval 0.4.13's HFLM: requests grouped by their generation kwargs, the
EOS text added to the stop sequences, contexts left-truncated to `max_length -
max_gen_toks` and left-padded, transformers' `generate` with lm-eval's stop-sequence
criteria, and the decoded text cut at the first stop sequence. Contexts are tokenized once
per submission (cached with the loglikelihood encodings).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

import torch

from e2lmc.engine import tokcache

if TYPE_CHECKING:
    from e2lmc.engine.fast import FastLM


def generate_until(lm: "FastLM", args: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    out: list[str | None] = [None] * len(args)
    groups: dict[str, list[int]] = {}
    for i, (_, kw) in enumerate(args):
        groups.setdefault(json.dumps(kw, sort_keys=True, default=str), []).append(i)
    eos = lm.tokenizer.decode(lm.eot_token_id, skip_special_tokens=False)
    bos = lm.tokenizer.bos_token
    for idx in groups.values():
        kwargs = dict(normalize_gen_kwargs(args[idx[0]][1], lm.max_gen_toks))
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen = int(kwargs.pop("max_gen_toks"))
        max_ctx = lm.max_length - max_gen
        if max_ctx <= 0:
            raise ValueError(f"max_gen_toks ({max_gen}) must be below the model's maximum "
                             f"length ({lm.max_length})")
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

    width = max(len(e) for e in encs)
    pad = lm.tokenizer.pad_token_id
    ids = torch.full((len(encs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for b, e in enumerate(encs):
        ids[b, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[b, width - len(e):] = 1
    ids, mask = ids.to(lm._device), mask.to(lm._device)
    kwargs["temperature"] = kwargs.get("temperature", 0.0)
    do_sample = kwargs.get("do_sample")
    if kwargs["temperature"] == 0.0 and do_sample is None:
        kwargs["do_sample"] = do_sample = False
    if do_sample is False and kwargs["temperature"] == 0.0:
        kwargs.pop("temperature")
    max_length = kwargs.pop("max_length", width + max_gen)
    stopping = stop_sequences_criteria(lm.tokenizer, until, width, len(encs))
    gen = lm.model.generate(input_ids=ids, attention_mask=mask, max_length=max_length,
                            stopping_criteria=stopping, pad_token_id=pad, use_cache=True,
                            **kwargs)
    tokens = int(mask.sum()) + (gen.shape[1] - width) * len(encs)
    lm.counters["tokens_forwarded"] += tokens
    lm.counters["unique_tokens"] += tokens  # generation shares nothing
    lm.counters["tokens_requested"] += tokens
    lm.counters["requests"] += len(encs)
    texts = []
    for row in gen.tolist():
        s = lm.tokenizer.decode(row[width:], skip_special_tokens=True)
        texts.append(postprocess_generated_text(generation=s, stop=until, think_end_token=None))
    return texts
