"""lm-eval's stock HFLM behind the engine interface: the reference engine.

Slow but trusted to match upstream lm-eval exactly; the fast engine is checked against it.
"""

from __future__ import annotations

from e2lmc.errors import UserError
from e2lmc.manifest import Checkpoint


def load_hflm(checkpoint: Checkpoint, device: str, dtype: str, max_length: int = 2048,
              batch_tokens: int = 65536):
    """One checkpoint as an lm-eval `HFLM`.

    Hub sources load `OWNER/REPO` with the checkpoint's `subfolder` (weights and tokenizer);
    local sources load the directory (already joined with its subfolder). The batch holds
    about `batch_tokens` tokens of `max_length`-long sequences.
    """
    from lm_eval.models.huggingface import HFLM

    pretrained, subfolder = checkpoint.load_target()
    if not checkpoint.is_hub:
        from pathlib import Path

        if not (Path(pretrained) / "config.json").is_file():
            raise UserError(f"checkpoint {checkpoint.key}: no config.json in {pretrained}; "
                            "point the manifest at a saved Hugging Face model folder")
    batch_size = max(1, int(batch_tokens) // max(1, int(max_length)))
    return HFLM(pretrained=pretrained, subfolder=subfolder or "", device=device, dtype=dtype,
                max_length=int(max_length), batch_size=batch_size, max_batch_size=batch_size,
                trust_remote_code=False)
