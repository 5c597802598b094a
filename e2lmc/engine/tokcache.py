"""Tokenize lm-eval requests once per submission and tokenizer, exactly as HFLM does.

Every checkpoint of a grid answers the same requests; when checkpoints share a tokenizer
(the usual case) the token ids are identical, so they are computed once and kept in the
ingestion run's `shared` dict under the tokenizer's content hash. The encodings follow
lm-eval 0.4.13's `TemplateLM`/`HFLM` rules: trailing context whitespace moves to the
continuation, the context is encoded on its own and the continuation is the rest of the
whole encoding, an empty context becomes the prefix (BOS) token, and a string that already
starts with the BOS text is encoded without special tokens.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

Pair = tuple[list[int], list[int]]


def tokenizer_hash(tokenizer: Any) -> str:
    """Content hash of a tokenizer: vocabulary, merges, normalizers, special tokens.

    Two checkpoints share cached encodings only when this hash is equal, so a checkpoint
    that ships a different tokenizer can never reuse another's token ids.
    """
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    h.update(json.dumps(special, sort_keys=True).encode())
    for attr in ("add_bos_token", "add_eos_token", "padding_side", "bos_token_id",
                 "eos_token_id", "pad_token_id"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)!r};".encode())
    return h.hexdigest()


def requests_digest(kind: str, args: Sequence[tuple]) -> str:
    """Identity of a request list (its strings), so a cached encoding is never misapplied."""
    h = hashlib.sha256(kind.encode())
    for a in args:
        for part in a:
            s = part if isinstance(part, str) else json.dumps(part, sort_keys=True, default=str)
            h.update(len(s).to_bytes(8, "little"))
            h.update(s.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class Encoder:
    """HFLM-compatible encoding with batched tokenizer calls.

    Nothing is memoized here: callers keep what they need (the scoring plan holds every
    unique token once), so a large task does not keep millions of Python ints alive."""

    def __init__(self, tokenizer: Any, prefix_token_id: int, add_bos_token: bool | None = None):
        self.tokenizer = tokenizer
        self.prefix_token_id = prefix_token_id
        self.add_bos_token = add_bos_token
        self._bos_text = tokenizer.decode(prefix_token_id)

    def _special(self, s: str) -> bool | None:
        """HFLM.tok_encode's rule for `add_special_tokens` (None = tokenizer default)."""
        if self._bos_text and s.startswith(self._bos_text):
            return False
        return self.add_bos_token

    def encode_many(self, texts: Sequence[str],
                    add_special_tokens: bool | None = None) -> list[list[int]]:
        """Encode in batched tokenizer calls, one per special-token setting.

        `add_special_tokens=None` applies HFLM's rule per string (no special tokens when
        the text already starts with the BOS text, else the `add_bos_token` setting)."""
        groups: dict[bool | None, list[int]] = {}
        for i, t in enumerate(texts):
            flag = self._special(t) if add_special_tokens is None else add_special_tokens
            groups.setdefault(flag, []).append(i)
        out: list[list[int]] = [[] for _ in texts]
        for flag, idx in groups.items():
            kwargs = {} if flag is None else {"add_special_tokens": flag}
            batch = self.tokenizer([texts[i] for i in idx], **kwargs)["input_ids"]
            for i, ids in zip(idx, batch):
                out[i] = list(ids)
        return out

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Pair]:
        """(context, continuation) -> (context ids, continuation ids), as TemplateLM does.

        A context shared by several continuations is encoded once and its id list object
        shared, which the planner exploits. Like `TemplateLM._encode_pair`, a context made
        only of whitespace moves all of it to the continuation and is encoded as "" (no
        tokens unless the tokenizer adds BOS), which HFLM then refuses; only a truly empty
        context is replaced by the prefix token."""
        split = [_move_trailing_space(ctx, cont) for ctx, cont in pairs]
        contexts = sorted({c for c, _, empty in split if not empty})
        ctx_ids = dict(zip(contexts, self.encode_many(contexts)))
        wholes = sorted({c + x for c, x, empty in split if not empty})
        whole_ids = dict(zip(wholes, self.encode_many(wholes)))
        empties = sorted({x for _, x, empty in split if empty})
        empty_ids = dict(zip(empties, self.encode_many(empties, add_special_tokens=False)))
        out: list[Pair] = []
        for ctx, cont, empty in split:
            if not empty:
                c = ctx_ids[ctx]
                out.append((c, whole_ids[ctx + cont][len(c):]))
                continue
            cont_enc = empty_ids[cont]
            if not cont_enc:  # HFLM fails on `continuation_enc[0]` here
                raise IndexError("a loglikelihood request has an empty context and an "
                                 "empty continuation; nothing to score")
            if cont_enc[0] != self.prefix_token_id:
                out.append(([self.prefix_token_id], cont_enc))
            else:
                out.append((cont_enc[:1], cont_enc[1:]))
        return out


def _move_trailing_space(ctx: str, cont: str) -> tuple[str, str, bool]:
    """(context, continuation, context was empty): trailing context whitespace moved to
    the continuation, as `TemplateLM._encode_pair` does for every non-empty context."""
    if not ctx:
        return ctx, cont, True
    n = len(ctx) - len(ctx.rstrip())
    return (ctx[:-n], ctx[-n:] + cont, False) if n else (ctx, cont, False)


def cache_for(shared: dict[str, Any], tok_hash: str) -> dict[str, Any]:
    """The per-tokenizer cache inside an ingestion run's `shared` dict."""
    return shared.setdefault("fast_engine", {}).setdefault(tok_hash, {})
