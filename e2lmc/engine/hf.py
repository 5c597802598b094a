"""lm-eval's stock HFLM behind the engine interface: the reference engine.

Slow but trusted to match upstream lm-eval exactly; the fast engine is checked against it.
"""

from __future__ import annotations

from e2lmc.errors import UserError
from e2lmc.manifest import Checkpoint


def load_hflm(checkpoint: Checkpoint, device: str, dtype: str, max_length: int = 2048,
              batch_size: int = 1):
    """One checkpoint as an lm-eval `HFLM`.

    Hub sources load `OWNER/REPO` with the checkpoint's `subfolder` (weights and tokenizer);
    local sources load the directory (already joined with its subfolder). `batch_size` is
    the manifest's `hf_batch_size`: 1, the lm_eval CLI's default, gives the CLI's numbers
    to the bit; a larger batch pads and moves log-likelihoods by about 1e-6.
    """
    from lm_eval.models.huggingface import HFLM

    pretrained, subfolder = checkpoint.load_target()
    if not checkpoint.is_hub:
        from pathlib import Path

        if not (Path(pretrained) / "config.json").is_file():
            raise UserError(f"checkpoint {checkpoint.key}: no config.json in {pretrained}; "
                            "point the manifest at a saved Hugging Face model folder")
    return HFLM(pretrained=pretrained, subfolder=subfolder or "", device=device, dtype=dtype,
                max_length=int(max_length), batch_size=int(batch_size),
                trust_remote_code=False)
