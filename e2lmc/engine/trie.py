"""Plan a set of scoring requests so every shared token prefix is computed once.

A request is an input token sequence (context plus continuation minus its last token, as
HFLM feeds it) and the positions whose next-token log-probabilities it needs. All inputs
go into a radix tree (a trie over token ids with single-child chains merged into one
edge): a token shared by many requests is one node. The tree is cut into *items*:

- a subtree that fits in one row of `row_tokens` tokens (or a single long edge) is a
  *unit*, forwarded whole;
- a larger subtree contributes only its own edge, a *prefix*, whose key/value cache is
  kept and reused by every item below it (the few-shot prefix of a task, a long document
  context shared by its answer choices);
- a single path longer than a row below a short prefix is a *chain*: it is forwarded
  from the root with that prefix again in front (the BOS of a rolling window), because a
  row that is one causal sequence needs no attention mask, which attention kernels run
  much faster than the same row behind a cache and a mask.

Items with the same prefix above them are packed side by side into rows; a tree-shaped
attention mask lets each token see exactly its own ancestors, and position ids are tree
depths, so each token gets the same logits as in its own unpadded sequence. The plan
depends only on token ids, so it is built once and reused for every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

ROOT = 0
INLINE_SHARE = 4  # a chain re-forwards a cached prefix of at most 1/4 of its own length
PAD_SHARE = 8  # a row is padded by at most 1/8 of its batch's width


@dataclass
class Row:
    """One packed row: tokens, tree depths and the mask interval of every column.

    Column j is visible to query columns i with lo[j] <= i < hi[j] (its descendants).
    """

    tokens: np.ndarray
    depth: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    want_cols: np.ndarray  # columns whose next-token distribution is needed
    entry_want: np.ndarray  # per score entry: index into want_cols
    entry_target: np.ndarray  # per score entry: the token whose log-prob is scored
    entry_ids: np.ndarray  # per score entry: global entry index
    prefixes: list[tuple[int, int, int]]  # (node, column, length): caches to keep
    causal: bool = False  # one path, each column seeing all before it: no mask needed

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Wave:
    """Rows under one cached prefix, batched; then the prefixes they produce, recursed."""

    batches: list[list[Row]]
    prefix_nodes: list[int]


@dataclass
class Plan:
    n_requests: int
    entry_request: np.ndarray  # per score entry: the request it belongs to
    groups: dict[int, list[Wave]]  # cached prefix node (ROOT = none) -> its waves
    node_end: np.ndarray  # depth after each node's edge = its cached length
    unique_tokens: int  # tokens in the tree
    requested_tokens: int  # input tokens summed over requests (no sharing)
    row_tokens: int
    padded_tokens: int = 0
    inlined_tokens: int = 0  # cached-prefix tokens forwarded again in front of chains
    stats: dict[str, int] = field(default_factory=dict)


class _Tree:
    """Radix tree over sequences; node i covers depths [start[i], end[i]) of seqs[src[i]]."""

    def __init__(self, seqs: Sequence[np.ndarray]):
        self.seqs = seqs
        self.start = [0]
        self.end = [0]
        self.src = [-1]
        self.parent = [-1]
        self.children: list[list[int]] = [[]]
        self.terminal = np.zeros(len(seqs), dtype=np.int64)
        keys = [s.astype(">u4").tobytes() for s in seqs]
        order = sorted(range(len(seqs)), key=keys.__getitem__)
        stack = [ROOT]
        prev: np.ndarray | None = None
        for i in order:
            s = seqs[i]
            lcp = 0 if prev is None else _lcp(prev, s)
            while stack[-1] != ROOT and self.start[stack[-1]] >= lcp:
                stack.pop()
            top = stack[-1]
            if self.end[top] > lcp:  # split top at depth lcp
                mid = self._new(self.start[top], lcp, self.src[top], self.parent[top])
                siblings = self.children[self.parent[top]]
                siblings[-1] = mid  # the stack path is always the newest child
                self.children[mid].append(top)
                self.parent[top] = mid
                self.start[top] = lcp
                stack[-1] = mid
                top = mid
            if len(s) > lcp:
                leaf = self._new(lcp, len(s), i, top)
                self.children[top].append(leaf)
                stack.append(leaf)
            self.terminal[i] = stack[-1]
            prev = s

    def _new(self, start: int, end: int, src: int, parent: int) -> int:
        self.start.append(start)
        self.end.append(end)
        self.src.append(src)
        self.parent.append(parent)
        self.children.append([])
        return len(self.start) - 1

    def tokens(self, node: int) -> np.ndarray:
        return self.seqs[self.src[node]][self.start[node]:self.end[node]]

    def subtree_sizes(self) -> list[int]:
        size = [e - s for s, e in zip(self.start, self.end)]
        for node in reversed(self.preorder(ROOT)):
            p = self.parent[node]
            if p >= 0:
                size[p] += size[node]
        return size

    def preorder(self, node: int) -> list[int]:
        out, todo = [], [node]
        while todo:
            n = todo.pop()
            out.append(n)
            todo.extend(reversed(self.children[n]))
        return out


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


def build_plan(requests: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int,
               row_tokens: int = 512, batch_tokens: int = 65536,
               kv_tokens: int = 1 << 17) -> Plan:
    """Plan (context ids, continuation ids) requests with HFLM's left truncation.

    HFLM feeds `(context + continuation)[-(max_length + 1):][:-1]` and scores the last
    len(continuation) positions; the plan scores the same tokens at the same positions.
    `kv_tokens` bounds the prefix cache tokens held at once (a memory knob).
    """
    seqs: list[np.ndarray] = []
    conts: list[int] = []
    as_array: dict[int, tuple[Sequence[int], np.ndarray]] = {}  # choices share a context
    for ctx, cont in requests:
        check_request(ctx, cont, max_length)
        hit = as_array.get(id(ctx))
        if hit is None or hit[0] is not ctx:
            hit = as_array[id(ctx)] = (ctx, np.asarray(ctx, dtype=np.int32))
        full = np.concatenate([hit[1], np.asarray(cont, dtype=np.int32)])
        seqs.append(full[-(max_length + 1):])
        conts.append(len(cont))
    inputs = [s[:-1] for s in seqs]
    tree = _Tree(inputs)
    n_nodes = len(tree.start)
    start = np.asarray(tree.start)
    end = np.asarray(tree.end)

    # score entries: (request, position=(node, depth), target)
    pos_index: dict[tuple[int, int], int] = {}
    pos_node: list[int] = []
    pos_depth: list[int] = []
    e_req: list[int] = []
    e_pos: list[int] = []
    e_tgt: list[int] = []
    for r, (seq, c) in enumerate(zip(seqs, conts)):
        m = len(seq) - 1
        u = int(tree.terminal[r])
        for d in range(m - 1, m - c - 1, -1):
            while tree.start[u] > d:
                u = tree.parent[u]
            key = (u, d)
            p = pos_index.get(key)
            if p is None:
                p = pos_index[key] = len(pos_node)
                pos_node.append(u)
                pos_depth.append(d)
            e_req.append(r)
            e_pos.append(p)
            e_tgt.append(int(seq[d + 1]))
    entries_by_node: dict[int, list[int]] = {}
    for e, p in enumerate(e_pos):
        entries_by_node.setdefault(pos_node[p], []).append(e)

    size = tree.subtree_sizes()
    row_cap = max(1, row_tokens)  # an edge longer than a row gets a row of its own

    # cut the tree into items per cached prefix: (kind, node, tokens in row)
    items: dict[int, list[tuple[str, int, int]]] = {}
    todo = [(c, ROOT) for c in reversed(tree.children[ROOT])]
    while todo:
        node, past = todo.pop()
        if size[node] > row_cap and tree.children[node]:
            items.setdefault(past, []).append(("prefix", node, tree.end[node] - tree.start[node]))
            todo.extend((c, node) for c in reversed(tree.children[node]))
        elif _as_chain(tree, node, past, size[node], row_cap):
            items.setdefault(ROOT, []).append(("chain", node, tree.end[node]))
        else:
            items.setdefault(past, []).append(("unit", node, size[node]))

    plan = Plan(n_requests=len(seqs), entry_request=np.asarray(e_req, dtype=np.int64),
                groups={}, node_end=end, unique_tokens=int(sum(end - start)),
                requested_tokens=int(sum(len(s) for s in inputs)), row_tokens=row_cap)
    e_tgt_arr = np.asarray(e_tgt, dtype=np.int64)
    e_pos_arr = np.asarray(e_pos, dtype=np.int64)
    depth_of = np.asarray(pos_depth, dtype=np.int64)
    node_of = np.asarray(pos_node, dtype=np.int64)

    for past, group in items.items():
        waves: list[Wave] = []
        # prefixes split into waves so at most ~kv_tokens of cache is held at once
        units = [it for it in group if it[0] != "prefix"]
        prefixes = [it for it in group if it[0] == "prefix"]
        chunks: list[list[tuple[str, int, int]]] = []
        held = 0
        for it in prefixes:
            cost = int(end[it[1]])
            if chunks and held + cost > kv_tokens:
                chunks.append([])
                held = 0
            if not chunks:
                chunks.append([])
            chunks[-1].append(it)
            held += cost
        if not chunks:
            chunks = [[]]
        chunks[0] = units + chunks[0]
        past_len = int(end[past]) if past != ROOT else 0
        for chunk in chunks:
            rows = [_layout(tree, row_items, entries_by_node, e_pos_arr, e_tgt_arr,
                            node_of, depth_of) for row_items in _pack(chunk, row_cap)]
            rows.sort(key=lambda r: (r.causal, len(r)), reverse=True)
            batches = _batch(rows, past_len, batch_tokens)
            plan.padded_tokens += sum(len(b[0]) * len(b) - sum(len(r) for r in b)
                                      for b in batches)
            waves.append(Wave(batches=batches,
                              prefix_nodes=[it[1] for it in chunk if it[0] == "prefix"]))
        plan.groups[past] = waves
    plan.inlined_tokens = sum(tree.start[it[1]] for it in items.get(ROOT, ())
                              if it[0] == "chain")
    plan.stats = {"nodes": n_nodes - 1, "positions": len(pos_node), "entries": len(e_req),
                  "groups": len(plan.groups)}
    return plan


def _as_chain(tree: _Tree, node: int, past: int, size: int, row_cap: int) -> bool:
    """Whether a unit is better forwarded from the root, its cached prefix re-forwarded in
    its own row: a single path longer than a row under a prefix of at most 1/INLINE_SHARE
    of it (the BOS of a rolling window). Such a row is plainly causal, and attention
    kernels run a causal row much faster than the same row behind a cache and a mask."""
    return (past != ROOT and not tree.children[node] and size > row_cap
            and tree.start[node] * INLINE_SHARE <= size)


def check_request(ctx: Sequence[int], cont: Sequence[int], max_length: int) -> None:
    """Refuse what HFLM._loglikelihood_tokens asserts against, with the same exception
    type (AssertionError), so a request fails alike on either engine, before any work."""
    if not len(ctx):
        raise AssertionError("a loglikelihood request's context encodes to no tokens "
                             "(e.g. a whitespace-only context); HFLM refuses it")
    if not len(cont):
        raise AssertionError("a loglikelihood request's continuation encodes to no tokens; "
                             "HFLM refuses it")
    if len(cont) > max_length:
        raise AssertionError(f"a continuation of {len(cont)} tokens exceeds the model's "
                             f"maximum length {max_length}; HFLM refuses it")


def _pack(items: list[tuple[str, int, int]], cap: int) -> list[list[tuple[str, int, int]]]:
    """Largest items first; each row's tail is filled with the smallest items left."""
    items = sorted(items, key=lambda it: it[2], reverse=True)
    rows: list[list[tuple[str, int, int]]] = []
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        row, used = [items[lo]], items[lo][2]
        lo += 1
        while lo <= hi and used + items[lo][2] <= cap:
            row.append(items[lo])
            used += items[lo][2]
            lo += 1
        while lo <= hi and used + items[hi][2] <= cap:
            row.append(items[hi])
            used += items[hi][2]
            hi -= 1
        rows.append(row)
    return rows


def _batch(rows: list[Row], past_len: int, batch_tokens: int) -> list[list[Row]]:
    """Length-sorted rows, grouped so rows x (padded length + cached prefix) fits; causal
    rows are never batched with masked ones, so a causal batch needs no mask, and a row
    padded by more than 1/PAD_SHARE of the batch width starts a new batch."""
    batches: list[list[Row]] = []
    for row in rows:
        last = batches[-1] if batches else None
        if (last and last[0].causal == row.causal
                and (len(last[0]) - len(row)) * PAD_SHARE <= len(last[0])
                and (len(last) + 1) * (len(last[0]) + past_len) <= batch_tokens):
            last.append(row)
        else:
            batches.append([row])
    return batches


def _layout(tree: _Tree, row_items: list[tuple[str, int, int]],
            entries_by_node: dict[int, list[int]], e_pos: np.ndarray, e_tgt: np.ndarray,
            pos_node: np.ndarray, pos_depth: np.ndarray) -> Row:
    toks, depth, lo, hi = [], [], [], []
    node_col: dict[int, int] = {}
    prefixes: list[tuple[int, int, int]] = []
    col = 0
    for kind, node, _ in row_items:
        nodes = tree.preorder(node) if kind == "unit" else [node]
        first = col
        lead = tree.start[node] if kind == "chain" else 0  # its path, scored elsewhere
        toks.append(tree.seqs[tree.src[node]][:lead])
        depth.append(np.arange(lead, dtype=np.int64))
        col += lead
        for n in nodes:
            node_col[n] = col
            t = tree.tokens(n)
            toks.append(t)
            depth.append(np.arange(tree.start[n], tree.end[n], dtype=np.int64))
            col += len(t)
        # subtree end column of every node: preorder lays subtrees out contiguously
        sub_end = _subtree_end_cols(tree, nodes, node_col) if kind == "unit" \
            else {node: col}
        lo.append(np.arange(first, first + lead, dtype=np.int64))
        hi.append(np.full(lead, col, dtype=np.int64))
        for n in nodes:
            c0 = node_col[n]
            k = tree.end[n] - tree.start[n]
            lo.append(np.arange(c0, c0 + k, dtype=np.int64))
            hi.append(np.full(k, sub_end[n], dtype=np.int64))
        if kind == "prefix":
            prefixes.append((node, first, col - first))
    ents_arr = np.asarray(sorted(e for n in node_col for e in entries_by_node.get(n, ())),
                          dtype=np.int64)
    if len(ents_arr):
        p = e_pos[ents_arr]
        nodes_of = pos_node[p]
        starts = np.asarray(tree.start, dtype=np.int64)[nodes_of]
        cols = np.asarray([node_col[n] for n in nodes_of.tolist()]) + pos_depth[p] - starts
        want_cols, entry_want = np.unique(cols, return_inverse=True)
    else:
        want_cols = entry_want = np.zeros(0, dtype=np.int64)
    lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
    return Row(tokens=np.concatenate(toks), depth=np.concatenate(depth), lo=lo_all, hi=hi_all,
               want_cols=want_cols.astype(np.int64), entry_want=entry_want.astype(np.int64),
               entry_target=e_tgt[ents_arr] if len(ents_arr) else ents_arr,
               entry_ids=ents_arr, prefixes=prefixes,
               causal=bool((lo_all == np.arange(col)).all() and (hi_all == col).all()))


def _subtree_end_cols(tree: _Tree, nodes: list[int], node_col: dict[int, int]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for n in reversed(nodes):  # children before parents
        kids = tree.children[n]
        ends[n] = ends[kids[-1]] if kids else node_col[n] + tree.end[n] - tree.start[n]
    return ends
