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
    """HFLM-compatible encoding with batched tokenizer calls and per-string memoization."""

    def __init__(self, tokenizer: Any, prefix_token_id: int, add_bos_token: bool | None = None):
        self.tokenizer = tokenizer
        self.prefix_token_id = prefix_token_id
        self.add_bos_token = add_bos_token
        self._bos_text = tokenizer.decode(prefix_token_id)
        self._memo: dict[tuple[str, bool | None], list[int]] = {}

    def _special(self, s: str, add_special_tokens: bool | None) -> bool | None:
        """HFLM.tok_encode's rule for `add_special_tokens` (None = tokenizer default)."""
        if add_special_tokens is not None:
            return add_special_tokens
        if self._bos_text and s.startswith(self._bos_text):
            return False
        return self.add_bos_token

    def encode_many(self, strings: Sequence[str],
                    add_special_tokens: bool | None = None) -> list[list[int]]:
        """Encode with one batched tokenizer call per special-token setting."""
        keys = [(s, self._special(s, add_special_tokens)) for s in strings]
        todo: dict[bool | None, list[str]] = {}
        seen: set[tuple[str, bool | None]] = set()
        for k in keys:
            if k not in self._memo and k not in seen:
                seen.add(k)
                todo.setdefault(k[1], []).append(k[0])
        for special, texts in todo.items():
            kwargs = {} if special is None else {"add_special_tokens": special}
            ids = self.tokenizer(texts, **kwargs)["input_ids"]
            for s, t in zip(texts, ids):
                self._memo[(s, special)] = list(t)
        return [self._memo[k] for k in keys]

    def encode(self, s: str, add_special_tokens: bool | None = None) -> list[int]:
        return self.encode_many([s], add_special_tokens)[0]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Pair]:
        """(context, continuation) -> (context ids, continuation ids), as TemplateLM does."""
        split: list[tuple[str, str]] = []
        empties: list[int] = []
        for i, (ctx, cont) in enumerate(pairs):
            if ctx == "":
                empties.append(i)
                split.append(("", cont))
                continue
            n = len(ctx) - len(ctx.rstrip())
            if n:
                ctx, cont = ctx[:-n], ctx[-n:] + cont
            split.append((ctx, cont))
        full = [c + x for c, x in split]
        wanted = [s for i, s in enumerate(full) if split[i][0] != ""]
        wanted += [c for c, _ in split if c != ""]
        self.encode_many(sorted(set(wanted)))  # one batched call for everything
        empty_conts = self.encode_many([split[i][1] for i in empties], add_special_tokens=False)
        out: list[Pair] = []
        e = iter(empty_conts)
        for ctx, cont in split:
            if ctx == "":
                cont_enc = next(e)
                if not cont_enc:
                    raise ValueError("a loglikelihood request has an empty context and an "
                                     "empty continuation; nothing to score")
                if cont_enc[0] != self.prefix_token_id:
                    out.append(([self.prefix_token_id], cont_enc))
                else:
                    out.append((cont_enc[:1], cont_enc[1:]))
                continue
            whole = self.encode(ctx + cont)
            ctx_enc = self.encode(ctx)
            out.append((ctx_enc, whole[len(ctx_enc):]))
        return out


def cache_for(shared: dict[str, Any], tok_hash: str) -> dict[str, Any]:
    """The per-tokenizer cache inside an ingestion run's `shared` dict."""
    return shared.setdefault("fast_engine", {}).setdefault(tok_hash, {})
