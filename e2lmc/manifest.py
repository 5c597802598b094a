"""The checkpoint manifest: which models and checkpoints a task is evaluated on.

One YAML file per task (`input_data/<task>/manifest.yaml`). The demo suite writes the same
format. Ingestion reads it (trusted side only: participant code never sees it); scoring
gets the model attributes through `ingestion.json`, never the load paths.

    version: 1
    defaults: {dtype: auto, device: auto, max_length: 2048, max_gen_toks: 256,
               batch_tokens: 65536, hf_batch_size: 1, bootstrap_iters: 100000,
               allow_network: false, download: false, time_budget_s: null, engine: fast}
    models:
      - name: dense-1b-arch1
        source: hf://tiiuae/dense-1b-arch1     # or a local dir (relative to this file);
                                               # hub weights load from their copy staged
                                               # by `e2lmc stage` unless download: true
        size: 1b
        params: 1.0e9
        arch: arch1
        data: science                          # science | web
        checkpoints:
          - {name: iter_0004000, subfolder: iter_0004000, tokens_b: 8.39, stage: public}
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2lmc.errors import UserError
from e2lmc.yamlfile import read_yaml_mapping

STAGES = ("public", "hidden")
DATA_KINDS = ("science", "web")
HF_PREFIX = "hf://"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of one model, in training order."""

    model: str
    name: str
    source: str  # hf://OWNER/REPO or an absolute local directory
    subfolder: str | None
    tokens_b: float
    stage: str
    iteration: int | None = None

    @property
    def key(self) -> str:
        """Stable identity of this (model, checkpoint) pair in results files."""
        return f"{self.model}/{self.name}"

    @property
    def is_hub(self) -> bool:
        return self.source.startswith(HF_PREFIX)

    def load_target(self) -> tuple[str, str | None]:
        """(`pretrained`, `subfolder`) as `from_pretrained` takes them."""
        if self.is_hub:
            return self.source[len(HF_PREFIX):], self.subfolder
        if self.subfolder:
            return str(Path(self.source) / self.subfolder), None
        return self.source, None


@dataclass(frozen=True)
class Model:
    name: str
    size: str
    arch: str
    data: str
    params: float | None
    checkpoints: tuple[Checkpoint, ...]

    def attributes(self) -> dict[str, Any]:
        """What scoring may know about a model (no load paths)."""
        return {"size": self.size, "arch": self.arch, "data": self.data, "params": self.params}


@dataclass
class Defaults:
    dtype: str = "auto"  # auto = bfloat16 on cuda, float32 on cpu
    device: str = "auto"  # auto | cpu | cuda
    max_length: int = 2048
    max_gen_toks: int = 256  # the most tokens a generate_until request may ask for
    batch_tokens: int = 65536
    # `--engine hf`: requests per batch; 1 is the lm_eval CLI's default (padding in a
    # larger batch moves log-likelihoods by about 1e-6)
    hf_batch_size: int = 1
    # resamples for the stderr of median, f1, mcc, perplexity, bleu...: lm-eval's default;
    # about 100,000 x one metric call per checkpoint (see docs/organizers.md)
    bootstrap_iters: int = 100_000
    allow_network: bool = False
    download: bool = False  # hub checkpoints: False = only their staged copy (e2lmc stage)
    time_budget_s: float | None = None
    engine: str = "fast"


@dataclass
class Manifest:
    path: Path | None
    models: list[Model]
    defaults: Defaults = field(default_factory=Defaults)

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [c for m in self.models for c in m.checkpoints]

    def model(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The YAML document; local sources relative to `relative_to` when given."""

        def src(s: str) -> str:
            if relative_to is None or s.startswith(HF_PREFIX):
                return s
            return os.path.relpath(s, relative_to)

        models = []
        for m in self.models:
            sources = {c.source for c in m.checkpoints}
            model_src = sources.pop() if len(sources) == 1 else None
            ckpts = []
            for c in m.checkpoints:
                row: dict[str, Any] = {"name": c.name}
                if model_src is None:
                    row["source"] = src(c.source)
                if c.subfolder:
                    row["subfolder"] = c.subfolder
                row["tokens_b"] = c.tokens_b
                row["stage"] = c.stage
                if c.iteration is not None:
                    row["iteration"] = c.iteration
                ckpts.append(row)
            entry: dict[str, Any] = {"name": m.name}
            if model_src is not None:
                entry["source"] = src(model_src)
            entry.update({"size": m.size, "params": m.params, "arch": m.arch, "data": m.data,
                          "checkpoints": ckpts})
            models.append(entry)
        return {"version": 1, "defaults": asdict(self.defaults), "models": models}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(relative_to=path.parent), sort_keys=False))
        tmp.replace(path)
        return path


def _need(d: dict, key: str, where: str, path: Path) -> Any:
    if key not in d or d[key] is None:
        raise UserError(f"{path}: {where} is missing `{key}`; add it (see the manifest format "
                        "in docs/organizers.md)")
    return d[key]


def _resolve_source(source: str, base: Path, data_dir: Path | None) -> str:
    if source.startswith(HF_PREFIX):
        return source
    if source.startswith("/app/data/") and data_dir is not None:
        return str(data_dir / source[len("/app/data/"):])
    p = Path(source)
    return str(p if p.is_absolute() else (base / p).resolve())


def load_manifest(path_or_dir: str | Path, data_dir: str | Path | None = None) -> Manifest:
    """Read and validate a manifest; every problem is a UserError naming the file."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / "manifest.yaml"
    doc = read_yaml_mapping(
        path, missing="manifest not found; pass the folder that holds manifest.yaml",
        expected="a mapping with `models`; see docs/organizers.md")
    base = path.parent
    ddir = Path(data_dir) if data_dir else None

    known = set(Defaults.__dataclass_fields__)
    raw_defaults = doc.get("defaults") or {}
    unknown = set(raw_defaults) - known
    if unknown:
        raise UserError(f"{path}: unknown keys in `defaults`: {sorted(unknown)}; "
                        f"allowed: {sorted(known)}")
    defaults = Defaults(**raw_defaults)
    for key in ("allow_network", "download"):
        if not isinstance(getattr(defaults, key), bool):
            raise UserError(f"{path}: defaults.{key} must be true or false")
    for key, least in (("hf_batch_size", 1), ("bootstrap_iters", 0)):
        value = getattr(defaults, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{path}: defaults.{key} must be a whole number >= {least}")

    raw_models = _need(doc, "models", "the manifest", path)
    if not isinstance(raw_models, list) or not raw_models:
        raise UserError(f"{path}: `models` must be a non-empty list")
    models: list[Model] = []
    names: set[str] = set()
    for i, rm in enumerate(raw_models):
        where = f"models[{i}]"
        name = str(_need(rm, "name", where, path))
        if name in names:
            raise UserError(f"{path}: model name {name!r} appears twice; names must be unique")
        names.add(name)
        data = str(rm.get("data", "science"))
        if data not in DATA_KINDS:
            raise UserError(f"{path}: {where}.data is {data!r}; use one of {DATA_KINDS}")
        model_src = rm.get("source")
        ckpts: list[Checkpoint] = []
        seen: set[str] = set()
        raw_ckpts = _need(rm, "checkpoints", where, path)
        for j, rc in enumerate(raw_ckpts):
            cw = f"{where}.checkpoints[{j}]"
            cname = str(_need(rc, "name", cw, path))
            if cname in seen:
                raise UserError(f"{path}: {cw}: checkpoint {cname!r} of {name} appears twice")
            seen.add(cname)
            source = rc.get("source", model_src)
            if source is None:
                raise UserError(f"{path}: {cw} has no `source` and neither has model {name}")
            stage = str(rc.get("stage", "public"))
            if stage not in STAGES:
                raise UserError(f"{path}: {cw}.stage is {stage!r}; use one of {STAGES}")
            tokens = float(_need(rc, "tokens_b", cw, path))
            if not math.isfinite(tokens) or tokens < 0:
                raise UserError(f"{path}: {cw}.tokens_b must be a finite number >= 0")
            if ckpts and tokens < ckpts[-1].tokens_b:
                raise UserError(f"{path}: {cw}: checkpoints of {name} must be listed in "
                                "training order (tokens_b increasing)")
            it = rc.get("iteration")
            ckpts.append(Checkpoint(
                model=name, name=cname, source=_resolve_source(str(source), base, ddir),
                subfolder=rc.get("subfolder"), tokens_b=tokens, stage=stage,
                iteration=int(it) if it is not None else None,
            ))
        params = rm.get("params")
        models.append(Model(
            name=name, size=str(rm.get("size", "")), arch=str(rm.get("arch", "")), data=data,
            params=float(params) if params is not None else None, checkpoints=tuple(ckpts),
        ))
    return Manifest(path=path, models=models, defaults=defaults)
