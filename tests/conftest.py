"""Shared fixtures. Tests never reach the network: hub access is switched off here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PUBLIC_CURVES = SHARED_DATA / "e2lm_public_curves.json"


@pytest.fixture(scope="session")
def public_curves() -> Path:
    """The organizers' published curves; tests that need them skip when absent."""
    if not PUBLIC_CURVES.is_file():
        pytest.skip(f"{PUBLIC_CURVES} not found (the shared data folder is not beside the repo)")
    return PUBLIC_CURVES


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory):
    """Random tiny Llama checkpoints: 3 models (the last web-only) x 3 checkpoints."""
    from e2lmc.suite.tiny import make_tiny_grid

    return make_tiny_grid(tmp_path_factory.mktemp("tiny_grid"), n_models=3, n_checkpoints=3)


@pytest.fixture(scope="session")
def micro_suite(tmp_path_factory) -> Path:
    """The trained micro demo suite (built once per session); its manifest.yaml path."""
    from e2lmc.suite.build import build_suite

    return build_suite(root=tmp_path_factory.mktemp("suite"), micro=True, progress=False)
