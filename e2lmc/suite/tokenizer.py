"""The suite's shared BPE tokenizer, trained on both corpora (as the real suite shares one)."""

from __future__ import annotations

import itertools
from pathlib import Path

from e2lmc.suite.corpora import documents
from e2lmc.suite.tiny import make_tokenizer
from e2lmc.suite.world import World


def train_tokenizer(out_dir: Path, world: World, seed: int, vocab_size: int,
                    n_docs: int = 3000):
    """Train on `n_docs` documents of each corpus; saves HF files to `out_dir`."""
    texts = list(itertools.islice(documents(world, "science", seed), n_docs))
    texts += list(itertools.islice(documents(world, "web", seed), n_docs))
    return make_tokenizer(out_dir, texts, vocab_size=vocab_size)
