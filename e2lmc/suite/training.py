"""Train one tiny Llama on a token stream, saving HF checkpoints at fixed milestones.

Each model trains in one process on one thread: results are then bit-identical for a given
seed whatever the machine's core count (multi-threaded reductions change float sums), and
several models train side by side, which uses the cores better than threading matrices
this small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size: str  # s | m | l
    arch: str  # arch1 (deep, narrow) | arch2 (shallow, wide)
    data: str  # science | web
    hidden: int
    layers: int
    heads: int
    intermediate: int


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    batch: int  # sequences per step
    seq_len: int
    lr_width: float  # peak learning rate x hidden width: see peak_lr
    warmup: int
    min_lr_ratio: float
    decay_frac: float  # share of the steps, at the end, over which the rate decays
    weight_decay: float
    checkpoints: tuple[int, ...]  # steps after which a checkpoint is saved

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def llama_config(spec: ModelSpec, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        intermediate_size=spec.intermediate, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )


def count_params(spec: ModelSpec, vocab_size: int) -> int:
    """Parameters of the model (tied embeddings counted once), without building it."""
    d, f = spec.hidden, spec.intermediate
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    return vocab_size * d + spec.layers * per_layer + d


def peak_lr(spec: ModelSpec, t: TrainSpec) -> float:
    """Adam's best rate falls as the model gets wider (the muP rule for hidden weights):
    one rate for every width would be too high for the wide models and let the small ones
    learn fastest, the opposite of what the suite must show."""
    return t.lr_width / spec.hidden


def lr_at(step: int, t: TrainSpec, peak: float) -> float:
    """Warmup, stable, decay (WSD): linear warmup, constant, then a linear decay to
    `min_lr_ratio` of the peak over the last `decay_frac` of the steps. The public
    checkpoints fall in the stable phase, as early checkpoints of long runs do."""
    if step < t.warmup:
        return peak * (step + 1) / t.warmup
    decay_start = t.steps * (1 - t.decay_frac)
    if step < decay_start:
        return peak
    frac = (step - decay_start) / max(1.0, t.steps - decay_start)
    return peak * (1 - (1 - t.min_lr_ratio) * frac)


def train_model(spec: ModelSpec, train: TrainSpec, stream: np.ndarray, tokenizer_dir: Path,
                out_dir: Path, seed: int, report: Callable[[int], None] | None = None) -> None:
    """Train `spec` on consecutive windows of `stream`; save `out_dir/iter_XXXXXXX/`."""
    import torch
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(spec, tok))
    model.train()
    peak = peak_lr(spec, train)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak, betas=(0.9, 0.95), eps=1e-8)
    window = train.seq_len + 1
    need = train.steps * train.batch * window
    if len(stream) < need:
        raise ValueError(f"token stream too short: {len(stream)} < {need}")
    data = torch.from_numpy(stream[:need].astype(np.int64)).view(train.steps, train.batch,
                                                                 window)
    saves = set(train.checkpoints)
    for step in range(train.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, train, peak)
        _loss(model, data[step]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step + 1 in saves:
            ckpt = out_dir / checkpoint_name(step + 1)
            model.save_pretrained(ckpt)
            tok.save_pretrained(ckpt)
        if report is not None:
            report(step + 1)


def _loss(model, batch):
    """Next-token cross-entropy over a batch of windows (inputs = window[:-1])."""
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
