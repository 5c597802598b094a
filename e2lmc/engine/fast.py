"""The fast engine: lm-eval's HFLM results, with each shared token computed once.

`FastLM` answers the same requests as lm-eval 0.4.13's `HFLM` and returns the same
numbers (to float rounding), but:
- requests are tokenized once per submission and tokenizer (`tokcache`), and the
  weight-independent scoring plan (`trie`) is built once, both kept in `shared`;
- every shared token prefix (the few-shot prefix of a task, the context shared by the
  answer choices of a document) is forwarded once per checkpoint, its key/value cache
  reused below it;
- next-token log-probabilities are computed only where a continuation is scored;
- a batch of rows that are each one plain sequence (rolling windows) runs with the
  model's own causal mask, which attention kernels run much faster than a tree mask;
- rows are length-sorted and batched under a token budget; a batch that runs out of
  memory is split in half and retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from lm_eval.api.model import LM

from e2lmc.engine import tokcache
from e2lmc.engine.trie import ROOT, Plan, Row, build_plan

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks
LOGIT_CHUNK = 2048  # positions per lm-head call: bounds the (positions x vocab) buffer

Past = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), batch 1


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def halve_on_oom(run: Callable[[list], Any], items: list, combine: Callable[[Any, Any], Any],
                 device: torch.device) -> Any:
    """`run(items)`; on out-of-memory, run each half (recursively) and `combine` them.
    Any other error, or a single item that does not fit, is raised."""
    try:
        return run(items)
    except Exception as exc:  # noqa: BLE001 - only memory errors are retried
        if not _is_oom(exc) or len(items) == 1:
            raise
    if device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(items) // 2
    log.info("out of memory on %d items; retrying as %d + %d", len(items), half,
             len(items) - half)
    return combine(halve_on_oom(run, items[:half], combine, device),
                   halve_on_oom(run, items[half:], combine, device))


class FastLM(LM):
    """An lm-eval LM over one checkpoint; `counters` reports the work done."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str = "cpu",
                 max_length: int = 2048, batch_tokens: int = 65536,
                 shared: dict[str, Any] | None = None, row_tokens: int = 512,
                 add_bos_token: bool | None = None, name: str = "model") -> None:
        super().__init__()
        from lm_eval.models.utils import configure_pad_token

        self.model = model.eval()
        self.tokenizer = configure_pad_token(tokenizer, model_config=model.config)
        self._device = torch.device(device)
        self.max_length = int(max_length)
        self.batch_tokens = int(batch_tokens)
        self.row_tokens = int(row_tokens)
        self.shared = shared if shared is not None else {}
        self.name = name
        self.tok_hash = tokcache.tokenizer_hash(self.tokenizer)
        self._cache = tokcache.cache_for(self.shared, self.tok_hash)
        self.encoder = self._cache.get("encoder")
        if self.encoder is None:
            self.encoder = self._cache["encoder"] = tokcache.Encoder(
                self.tokenizer, self.prefix_token_id, add_bos_token)
        self.counters: dict[str, float] = {
            "tokens_forwarded": 0, "unique_tokens": 0, "tokens_requested": 0,
            "tokens_padded": 0, "requests": 0, "seconds": 0.0,
        }
        base_prefix = getattr(model, "base_model_prefix", "model")
        self._base = getattr(model, base_prefix)
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        impl = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"the fast engine packs sequences with a tree attention mask, "
                             f"which needs attn_implementation sdpa or eager, not {impl!r}")
        window = getattr(model.config, "sliding_window", None)
        if window and getattr(model.config, "use_sliding_window", True) and window < max_length:
            raise ValueError(f"{type(model).__name__} uses sliding-window attention "
                             f"({window} < max_length {max_length}), which the fast engine's "
                             "packed rows do not reproduce; use --engine hf")
        self._sdpa = impl == "sdpa"
        import inspect

        params = inspect.signature(self._base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, *, device: str = "cpu", dtype: str = "float32",
                        max_length: int = 2048, batch_tokens: int = 65536,
                        shared: dict[str, Any] | None = None, **kwargs: Any) -> "FastLM":
        """Load a manifest checkpoint the way HFLM does (`from_pretrained` + subfolder)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        pretrained, subfolder = checkpoint.load_target()
        sub = {"subfolder": subfolder} if subfolder else {}
        tokenizer = AutoTokenizer.from_pretrained(pretrained, use_fast=True, **sub)
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        try:
            model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch_dtype,
                                                         attn_implementation="sdpa", **sub)
        except ValueError:  # an architecture without SDPA support
            model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch_dtype,
                                                         attn_implementation="eager", **sub)
        model.to(device)
        return cls(model, tokenizer, device=device, max_length=max_length,
                   batch_tokens=batch_tokens, shared=shared,
                   name=getattr(checkpoint, "key", str(pretrained)), **kwargs)

    # -- lm-eval interface -------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKS

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        return {"model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                "model_dtype": str(self.model.dtype), "engine": "fast"}

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False
                      ) -> list[tuple[float, bool]]:
        t0 = time.perf_counter()
        args = [tuple(r.args) for r in requests]
        key = ("ll", tokcache.requests_digest("ll", args))
        plan = self._plan(key, lambda: self.encoder.encode_pairs(args))
        out = self.run_plan(plan)
        for a, res in zip(args, out):
            self.cache_hook.add_partial("loglikelihood", a, res)
        self.counters["seconds"] += time.perf_counter() - t0
        return out

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        t0 = time.perf_counter()
        args = [tuple(r.args) for r in requests]
        key = ("rolling", tokcache.requests_digest("rolling", args))
        owner: list[int] = []

        def windows() -> list[tuple[list[int], list[int]]]:
            out = []
            for i, tokens in enumerate(self.encoder.encode_many([a[0] for a in args])):
                for w in get_rolling_token_windows(token_list=tokens,
                                                   prefix_token=self.prefix_token_id,
                                                   max_seq_len=self.max_length, context_len=1):
                    out.append(make_disjoint_window(w))
                    owner.append(i)
            return out

        plan = self._plan(key, windows)
        owners = self._cache.setdefault(("owner",) + key, np.asarray(owner, dtype=np.int64))
        scores = self.run_plan(plan)
        totals = np.bincount(owners, weights=[s for s, _ in scores], minlength=len(args))
        result = [float(x) for x in totals]
        for a, res in zip(args, result):
            self.cache_hook.add_partial("loglikelihood_rolling", a, res)
        self.counters["seconds"] += time.perf_counter() - t0
        return result

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        from e2lmc.engine.generate import generate_until

        t0 = time.perf_counter()
        out = generate_until(self, [tuple(r.args) for r in requests])
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", tuple(r.args), res)
        self.counters["seconds"] += time.perf_counter() - t0
        return out

    # -- scoring -----------------------------------------------------------------------

    def score_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                     plan_key: Any = None) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (log-likelihood, is greedy), as HFLM does.

        With `plan_key`, the plan is kept in `shared` and reused by later checkpoints."""
        if plan_key is None:
            return self.run_plan(self._build(pairs))
        return self.run_plan(self._plan(("tokens", plan_key), lambda: pairs))

    def _build(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Plan:
        return build_plan(pairs, self.max_length, row_tokens=self.row_tokens,
                          batch_tokens=self.batch_tokens)

    def _plan(self, key: tuple, make_pairs: Callable[[], Sequence]) -> Plan:
        """The cached plan for a request list; tokenizes only on the first checkpoint.

        Only the plan is kept (not the token lists): it holds every unique token once."""
        full_key = ("plan",) + key + (self.max_length, self.row_tokens, self.batch_tokens)
        plan = self._cache.get(full_key)
        if plan is None:
            plan = self._cache[full_key] = self._build(make_pairs())
        return plan

    def run_plan(self, plan: Plan) -> list[tuple[float, bool]]:
        n_entries = len(plan.entry_request)
        logp = np.zeros(n_entries, dtype=np.float64)
        greedy = np.zeros(n_entries, dtype=bool)
        self._run_group(plan, ROOT, None, logp, greedy)
        totals = np.bincount(plan.entry_request, weights=logp, minlength=plan.n_requests)
        misses = np.bincount(plan.entry_request, weights=~greedy, minlength=plan.n_requests)
        self.counters["unique_tokens"] += plan.unique_tokens
        self.counters["tokens_requested"] += plan.requested_tokens
        self.counters["requests"] += plan.n_requests
        return [(float(t), bool(m == 0)) for t, m in zip(totals, misses)]

    def _run_group(self, plan: Plan, past_node: int, past: Past | None,
                   logp: np.ndarray, greedy: np.ndarray) -> None:
        past_len = int(plan.node_end[past_node]) if past_node != ROOT else 0
        for wave in plan.groups.get(past_node, []):
            kept: dict[int, Past] = {}
            for batch in wave.batches:
                kept.update(self._run_batch(batch, past, past_len, logp, greedy))
            for node in wave.prefix_nodes:
                self._run_group(plan, node, kept.pop(node), logp, greedy)

    def _run_batch(self, rows: list[Row], past: Past | None, past_len: int,
                   logp: np.ndarray, greedy: np.ndarray) -> dict[int, Past]:
        return halve_on_oom(lambda part: self._forward(part, past, past_len, logp, greedy),
                            rows, lambda a, b: {**a, **b}, self._device)

    @torch.no_grad()
    def _forward(self, rows: list[Row], past: Past | None, past_len: int,
                 logp: np.ndarray, greedy: np.ndarray) -> dict[int, Past]:
        dev = self._device
        n, width = len(rows), max(len(r) for r in rows)
        ids = np.full((n, width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = r.tokens
        if past is None and all(r.causal for r in rows):
            mask = positions = None  # right-padded causal rows: the model's own causal mask
        else:
            mask, positions = self._tree_mask(rows, width, past_len)
        need_cache = any(r.prefixes for r in rows)
        cache = None
        if past is not None or need_cache:
            from transformers import DynamicCache

            data = None if past is None else [
                (k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in past]
            cache = DynamicCache(data, config=self.model.config) if data is not None \
                else DynamicCache(config=self.model.config)
        out = self._base(input_ids=torch.from_numpy(ids).to(dev), attention_mask=mask,
                         position_ids=positions, use_cache=cache is not None,
                         **{self._cache_kw: cache})
        hidden = out.last_hidden_state
        real = sum(len(r) for r in rows)
        self.counters["tokens_forwarded"] += real
        self.counters["tokens_padded"] += n * width - real
        self._score_rows(rows, hidden, width, logp, greedy)
        kept: dict[int, Past] = {}
        if need_cache:
            layers = _cache_tensors(cache)
            for b, r in enumerate(rows):
                for node, col, length in r.prefixes:
                    s = slice(past_len + col, past_len + col + length)
                    kept[node] = [(_join(None if past is None else past[i][0], k[b:b + 1, :, s]),
                                   _join(None if past is None else past[i][1], v[b:b + 1, :, s]))
                                  for i, (k, v) in enumerate(layers)]
        return kept

    def _tree_mask(self, rows: list[Row], width: int, past_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(4-D attention mask, position ids) letting each column see exactly its
        ancestors in the row and the whole cached prefix; padding sees only itself."""
        dev = self._device
        n = len(rows)
        depth = np.zeros((n, width), dtype=np.int64)
        lo = np.tile(np.arange(width), (n, 1))
        hi = lo + 1  # padding sees only itself (keeps its activations finite)
        for b, r in enumerate(rows):
            k = len(r)
            depth[b, :k], lo[b, :k], hi[b, :k] = r.depth, r.lo, r.hi
        q = torch.arange(width, device=dev)[None, :, None]
        lo_t = torch.from_numpy(lo).to(dev)[:, None, :]
        hi_t = torch.from_numpy(hi).to(dev)[:, None, :]
        allowed = (q >= lo_t) & (q < hi_t)  # [n, query, key]
        if past_len:
            allowed = torch.cat([allowed.new_ones(n, width, past_len), allowed], dim=2)
        allowed = allowed[:, None]
        positions = torch.from_numpy(depth).to(dev)
        if self._sdpa:
            return allowed, positions
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask, positions

    def _score_rows(self, rows: list[Row], hidden: torch.Tensor, width: int,
                    logp: np.ndarray, greedy: np.ndarray) -> None:
        flat, offs = [], [0]
        for b, r in enumerate(rows):
            flat.append(r.want_cols + b * width)
            offs.append(offs[-1] + len(r.want_cols))
        index = np.concatenate(flat)
        if not len(index):
            return
        ent_want = np.concatenate([r.entry_want + o for r, o in zip(rows, offs)])
        ent_tgt = np.concatenate([r.entry_target for r in rows])
        ent_ids = np.concatenate([r.entry_ids for r in rows])
        h = hidden.reshape(-1, hidden.shape[-1])[torch.from_numpy(index).to(hidden.device)]
        lse = torch.empty(len(index), dtype=torch.float32, device=h.device)
        top = torch.empty(len(index), dtype=torch.long, device=h.device)
        tgt_logit = torch.empty(len(ent_ids), dtype=torch.float32, device=h.device)
        want_t = torch.from_numpy(ent_want).to(h.device)
        tgt_t = torch.from_numpy(ent_tgt).to(h.device)
        for s in range(0, len(index), LOGIT_CHUNK):
            logits = self._head(h[s:s + LOGIT_CHUNK]).float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            lse[s:s + LOGIT_CHUNK] = torch.logsumexp(logits, dim=-1)
            top[s:s + LOGIT_CHUNK] = logits.argmax(dim=-1)
            sel = (want_t >= s) & (want_t < s + LOGIT_CHUNK)
            tgt_logit[sel] = logits[want_t[sel] - s, tgt_t[sel]]
        logp[ent_ids] = (tgt_logit - lse[want_t]).double().cpu().numpy()
        greedy[ent_ids] = (top[want_t] == tgt_t).cpu().numpy()


def _join(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b.clone() if a is None else torch.cat([a, b], dim=2)


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))
