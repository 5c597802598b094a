"""Cloze accuracy of a causal LM on multiple-choice docs, straight from transformers.

Test helper only: the product evaluates through lm-eval and the ingestion engine.
"""

from __future__ import annotations

from pathlib import Path


QA_PROMPT = "Question: {question}\nAnswer:"


def cloze_accuracy(model_dir: str | Path, docs: list[dict], prompt: str = QA_PROMPT,
                   batch: int = 256) -> float:
    """Share of docs whose gold choice has the highest summed log-prob after the prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    reqs = []  # (doc index, choice index, context ids, continuation ids)
    for i, d in enumerate(docs):
        ctx = tok(prompt.format(**d), add_special_tokens=False)["input_ids"]
        for j, c in enumerate(d["choices"]):
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            reqs.append((i, j, ctx, cont))
    scores: dict[tuple[int, int], float] = {}
    pad = tok.pad_token_id
    with torch.no_grad():
        for k in range(0, len(reqs), batch):
            chunk = reqs[k:k + batch]
            seqs = [r[2] + r[3] for r in chunk]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            for n, s in enumerate(seqs):
                ids[n, :len(s)] = torch.tensor(s)
            mask = (torch.arange(width)[None, :] < torch.tensor([len(s) for s in seqs])[:, None])
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask.long()).logits,
                                     dim=-1)
            for n, (i, j, ctx, cont) in enumerate(chunk):
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
                scores[(i, j)] = float(logp[n, pos, torch.tensor(cont)].sum())
    right = 0
    for i, d in enumerate(docs):
        best = max(range(len(d["choices"])), key=lambda j: scores[(i, j)])
        right += best == d["label"]
    return right / len(docs)
