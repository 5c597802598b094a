"""Tiny random Llama checkpoints and a local BPE tokenizer, for tests and offline checks.

These load through the same code as the real checkpoints (a local directory, optionally
with a `subfolder` per checkpoint), so the loading path is exercised without the hub.
The trained demo suite lives in `e2lmc.suite.build`; this module only makes random ones.
"""

from __future__ import annotations

import random
from pathlib import Path

from e2lmc.manifest import Checkpoint, Defaults, Manifest, Model

_WORDS = (
    "the a of and to in is was for on that with as by at from it this be are or an which "
    "atom element planet orbit mass energy cell organism compound acid water heat light "
    "question answer science model data what when where who why how many much one two three "
    "red blue green small large fast slow yes no true false first second third number"
).split()


def tiny_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) + "."
            for _ in range(n_lines)]


def make_tokenizer(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer and save it in HF format (tokenizer.json + config)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts or tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|pad|>", model_max_length=2048,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def make_random_llama(out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0,
                      hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      intermediate: int = 64) -> Path:
    """Save a randomly initialised LlamaForCausalLM (fp32) plus the tokenizer files."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        intermediate_size=intermediate, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_tiny_grid(root: str | Path, n_models: int = 2, n_checkpoints: int = 3,
                   n_hidden: int = 1) -> Manifest:
    """A manifest over random checkpoints laid out like the real repos.

    Model i lives in `root/model-i/iter_XXXXXXX/`; the last `n_hidden` checkpoints of each
    model are `hidden`. The last model is a web-only model when n_models > 2.
    """
    root = Path(root)
    tok_dir = root / "tokenizer"
    make_tokenizer(tok_dir)
    models = []
    for i in range(n_models):
        arch = "arch1" if i % 2 == 0 else "arch2"
        data = "web" if (n_models > 2 and i == n_models - 1) else "science"
        name = f"tiny-{i}-{arch}" + ("-web" if data == "web" else "")
        mdir = root / name
        ckpts = []
        for j in range(n_checkpoints):
            it = (j + 1) * 1000
            sub = f"iter_{it:07d}"
            make_random_llama(mdir / sub, tok_dir, seed=1000 * i + j)
            ckpts.append(Checkpoint(
                model=name, name=sub, source=str(mdir), subfolder=sub,
                tokens_b=round(0.001 * it, 6), iteration=it,
                stage="hidden" if j >= n_checkpoints - n_hidden else "public",
            ))
        models.append(Model(name=name, size="tiny", arch=arch, data=data, params=None,
                            checkpoints=tuple(ckpts)))
    manifest = Manifest(path=root / "manifest.yaml", models=models,
                        # a batch of 32 keeps `--engine hf` runs on these quick (1, the
                        # CLI's default, is several times slower on CPU)
                        defaults=Defaults(device="cpu", dtype="float32", max_length=2048,
                                          hf_batch_size=32))
    manifest.write(root / "manifest.yaml")
    return manifest
