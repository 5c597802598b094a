"""`e2lmc suite build`: the demo checkpoint suite, built once and cached.

Layout of a built suite (one folder per config hash under the cache root):

    <root>/<full|micro>-<hash>/
        manifest.yaml          e2lmc.manifest format, sources relative to this folder
        scoring.yaml           the demo scoring config, RC reference set at this suite's
                               public/hidden boundary
        suite.json             the config, parameter counts, build time
        tokenizer/             the shared tokenizer (HF format)
        dense-s-arch1/iter_0000032/ ...   one HF checkpoint (with tokenizer) per milestone

The folder is assembled under a temporary name and renamed at the end, so an interrupted
build never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from e2lmc.manifest import Checkpoint, Defaults, Manifest, Model
from e2lmc.suite.world import MICRO_FRACTION
from e2lmc.suite.training import ModelSpec, TrainSpec, checkpoint_name, count_params

FORMAT_VERSION = 1
DEFAULT_SEED = 1234
DEMO_SCORING = Path(__file__).resolve().parents[1] / "data" / "demo" / "scoring.yaml"


@dataclass(frozen=True)
class SuiteConfig:
    micro: bool
    seed: int
    vocab_size: int
    world_fraction: float  # share of each entity list in the world (1.0 = full)
    models: tuple[ModelSpec, ...]
    train: TrainSpec
    public_steps: tuple[int, ...]
    hidden_steps: tuple[int, ...]

    def key(self) -> str:
        """Hash of everything that determines the suite's bytes (and the library versions)."""
        import tokenizers
        import torch
        import transformers

        doc = {"format": FORMAT_VERSION, "config": asdict(self),
               "versions": [torch.__version__, transformers.__version__,
                            tokenizers.__version__]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def boundary_tokens_b(self) -> float:
        return tokens_b(self.public_steps[-1], self.train)


def _spec(size: str, arch: str, hidden: int, layers: int, ff: int,
          data: str = "science") -> ModelSpec:
    name = f"dense-{size}-{arch}" + ("-web" if data == "web" else "")
    return ModelSpec(name=name, size=size, arch=arch, data=data, hidden=hidden, layers=layers,
                     heads=max(1, hidden // 16), intermediate=ff)


# Three sizes x two shapes of about equal parameter count (arch1 deep and narrow, arch2
# shallow and wide), plus a web-only model of the smallest size and shape.
MODELS = (
    _spec("s", "arch1", 48, 4, 128), _spec("s", "arch2", 64, 2, 176),
    _spec("m", "arch1", 64, 6, 176), _spec("m", "arch2", 96, 3, 208),
    _spec("l", "arch1", 80, 8, 224), _spec("l", "arch2", 112, 4, 304),
    _spec("s", "arch1", 48, 4, 128, data="web"),
)
# The micro suite's models are shallower: at the micro suite's few steps deep models have
# not yet started to learn, and each layer costs a fixed time per step on CPU.
MICRO_MODELS = (
    _spec("s", "arch1", 32, 2, 96), _spec("s", "arch2", 40, 1, 128),
    _spec("m", "arch1", 64, 3, 176), _spec("m", "arch2", 96, 1, 256),
    _spec("l", "arch1", 128, 3, 352), _spec("l", "arch2", 160, 2, 448),
    _spec("s", "arch1", 32, 2, 96, data="web"),
)
# peak learning rate x width (see training.peak_lr): 0.4 gives 8e-3 at width 48 and
# 3.6e-3 at width 112
LR_WIDTH = 0.4


def suite_config(micro: bool = False, seed: int | None = None) -> SuiteConfig:
    seed = DEFAULT_SEED if seed is None else seed
    if micro:  # a fifth of the world, smaller models, shorter sequences, fewer checkpoints
        models, fraction = MICRO_MODELS, MICRO_FRACTION
        steps, batch, seq_len, warmup = 320, 16, 32, 10
        public, hidden = tuple(range(32, 193, 32)), (256, 320)
    else:
        models, fraction = MODELS, 1.0
        steps, batch, seq_len, warmup = 512, 32, 64, 20
        public, hidden = tuple(range(32, 321, 32)), (384, 448, 512)
    train = TrainSpec(steps=steps, batch=batch, seq_len=seq_len, lr_width=LR_WIDTH,
                      warmup=warmup, min_lr_ratio=0.1, decay_frac=0.2, weight_decay=0.1,
                      checkpoints=public + hidden)
    return SuiteConfig(micro=micro, seed=seed, vocab_size=1024, world_fraction=fraction,
                       models=models, train=train, public_steps=public, hidden_steps=hidden)


def tokens_b(step: int, train: TrainSpec) -> float:
    return round(step * train.tokens_per_step / 1e9, 9)


def cache_root(root: Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    base = os.environ.get("E2LMC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "e2lmc") / "suite"


def suite_dir(cfg: SuiteConfig, root: Path | None = None) -> Path:
    return cache_root(root) / f"{'micro' if cfg.micro else 'full'}-{cfg.key()}"


def build_suite(root: Path | None = None, micro: bool = False, seed: int | None = None,
                force: bool = False, progress: bool = True) -> Path:
    """Build the suite (or find it in the cache); returns its manifest.yaml path."""
    cfg = suite_config(micro=micro, seed=seed)
    final = suite_dir(cfg, root)
    manifest_path = final / "manifest.yaml"
    if manifest_path.is_file() and not force:
        return manifest_path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build_into(tmp, cfg, progress)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest_path


def _build_into(out: Path, cfg: SuiteConfig, progress: bool) -> None:
    from e2lmc.suite.tokenizer import train_tokenizer
    from e2lmc.suite.world import build_world

    t0 = time.time()
    out.mkdir(parents=True)
    world = build_world()
    if cfg.world_fraction < 1.0:
        world = world.subset(cfg.world_fraction)
    tok_dir = out / "tokenizer"
    tok = train_tokenizer(tok_dir, world, cfg.seed, cfg.vocab_size)
    need = cfg.train.steps * cfg.train.batch * (cfg.train.seq_len + 1)
    streams = out / ".streams"
    streams.mkdir()
    for data in sorted({m.data for m in cfg.models}):
        np.save(streams / f"{data}.npy", token_stream(world, data, cfg.seed, tok, need))
    from e2lmc.suite.parallel import train_all

    train_all(cfg, out, tok_dir, streams, progress=progress)
    shutil.rmtree(streams)
    vocab = len(tok)
    models = []
    for spec in cfg.models:
        mdir = out / spec.name
        ckpts = tuple(
            Checkpoint(model=spec.name, name=checkpoint_name(s), source=str(mdir),
                       subfolder=checkpoint_name(s), tokens_b=tokens_b(s, cfg.train),
                       stage="public" if s in cfg.public_steps else "hidden", iteration=s)
            for s in cfg.train.checkpoints)
        models.append(Model(name=spec.name, size=spec.size, arch=spec.arch, data=spec.data,
                            params=float(count_params(spec, vocab)), checkpoints=ckpts))
    Manifest(path=None, models=models,
             defaults=Defaults(dtype="float32", device="cpu", max_length=2048)
             ).write(out / "manifest.yaml")
    write_scoring(out / "scoring.yaml", cfg)
    (out / "suite.json").write_text(json.dumps({
        "key": cfg.key(), "config": asdict(cfg), "build_seconds": round(time.time() - t0, 1),
        "params": {s.name: count_params(s, vocab) for s in cfg.models},
        "tokens_per_model": cfg.train.tokens,
    }, indent=2))


def write_scoring(path: Path, cfg: SuiteConfig) -> None:
    """The packaged demo scoring.yaml with RC's reference point at this suite's boundary."""
    doc = yaml.safe_load(DEMO_SCORING.read_text())
    doc.setdefault("rc", {})["reference_tokens_b"] = cfg.boundary_tokens_b
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def token_stream(world, data: str, seed: int, tokenizer, n_tokens: int) -> np.ndarray:
    """The first `n_tokens` of the corpus `data`, documents separated by end-of-text."""
    from e2lmc.suite.corpora import documents

    eos = tokenizer.eos_token_id
    out: list[int] = []
    docs = documents(world, data, seed)
    while len(out) < n_tokens:
        batch = list(itertools.islice(docs, 256))
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            out.extend(ids)
            out.append(eos)
    assert len(tokenizer) < 2 ** 16
    return np.asarray(out[:n_tokens], dtype=np.uint16)


def cli_suite_build(args) -> int:
    manifest = build_suite(root=Path(args.dir) if args.dir else None, micro=args.micro,
                           seed=args.seed, force=args.force)
    print(manifest)
    return 0
