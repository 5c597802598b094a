"""The scoring plan: each scored position sees exactly its own prefix, each token is
planned once, and every request gets exactly its continuation positions."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from e2lmc.engine.trie import ROOT, build_plan

MAX_LEN = 12

token_lists = st.lists(st.integers(0, 3), min_size=1, max_size=16)
requests = st.lists(st.tuples(token_lists, st.lists(st.integers(0, 3), min_size=1,
                                                    max_size=4)), min_size=1, max_size=12)


def _walk(plan, node, past):
    """Yield (visible tokens, row, entry) for every score entry, recursing into caches.

    A causal batch without a cache is run with the model's plain causal mask and default
    positions, so there each column sees every column before it, at its own index."""
    for wave in plan.groups.get(node, []):
        kept = {}
        for batch in wave.batches:
            plain = not past and all(r.causal for r in batch)
            for row in batch:
                if plain:
                    assert list(row.depth) == list(range(len(row)))
                for e, w, tgt in zip(row.entry_ids, row.entry_want, row.entry_target):
                    c = int(row.want_cols[w])
                    cols = (range(c + 1) if plain else
                            [j for j in range(len(row)) if row.lo[j] <= c < row.hi[j]])
                    yield past + [int(row.tokens[j]) for j in cols], int(tgt), int(e)
                for pnode, col, length in row.prefixes:
                    kept[pnode] = past + [int(t) for t in row.tokens[col:col + length]]
        for pnode in wave.prefix_nodes:
            yield from _walk(plan, pnode, kept.pop(pnode))


@settings(max_examples=60, deadline=None)
@given(requests, st.sampled_from([1, 3, 8, 64]), st.sampled_from([4, 16, 1000]))
def test_plan_scores_exactly_each_continuation(reqs, row_tokens, batch_tokens):
    plan = build_plan(reqs, MAX_LEN, row_tokens=row_tokens, batch_tokens=batch_tokens,
                      kv_tokens=8)
    seqs = [(list(c) + list(x))[-(MAX_LEN + 1):] for c, x in reqs]
    inputs = [s[:-1] for s in seqs]
    distinct_prefixes = {tuple(s[:k]) for s in inputs for k in range(1, len(s) + 1)}
    assert plan.unique_tokens == len(distinct_prefixes)
    forwarded = sum(len(r) for waves in plan.groups.values() for w in waves
                    for b in w.batches for r in b)
    assert forwarded == plan.unique_tokens + plan.inlined_tokens
    assert plan.requested_tokens == sum(len(s) for s in inputs)

    seen = Counter()
    for visible, target, entry in _walk(plan, ROOT, []):
        r = int(plan.entry_request[entry])
        d = len(visible) - 1
        assert visible == inputs[r][:d + 1], "a position attends to something else than its prefix"
        assert target == seqs[r][d + 1]
        seen[(r, d)] += 1
    expected = Counter((r, d) for r, (s, (_, x)) in enumerate(zip(seqs, reqs))
                       for d in range(len(s) - 1 - len(x), len(s) - 1))
    assert seen == expected


def test_few_shot_prefix_is_one_cached_prefix():
    shots = list(range(100, 160))  # a 60-token few-shot prefix shared by every document
    reqs = [(shots + [d, d + 1, d + 2], [7 + c]) for d in range(0, 300, 3) for c in range(4)]
    plan = build_plan(reqs, 2048, row_tokens=64, batch_tokens=4096)
    assert plan.unique_tokens == 60 + 100 * 3
    assert plan.requested_tokens == 400 * 63
    first = plan.groups[ROOT][0]
    assert len(first.prefix_nodes) == 1  # the few-shot prefix, cached once
    assert sum(len(r) for b in first.batches for r in b) == 60


def test_rolling_windows_are_causal_chains():
    """First windows share only the BOS: each runs as one causal row from the root, the
    BOS forwarded again in front, instead of behind a 1-token cache with a mask."""
    bos, n = 1, 40
    windows = [([bos] + list(range(10 + d, 10 + d + 90)), [d + 5]) for d in range(n)]
    plan = build_plan(windows, 2048, row_tokens=64, batch_tokens=4096)
    rows = [r for w in plan.groups[ROOT] for b in w.batches for r in b]
    chains = [r for r in rows if r.causal and len(r) == 91]
    assert len(chains) == n and all(r.tokens[0] == bos for r in chains)
    assert plan.inlined_tokens == n
    assert all(len({r.causal for r in b}) == 1 for w in plan.groups[ROOT] for b in w.batches)
