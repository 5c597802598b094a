"""`scoring.yaml`: every parameter of the score, in one typed place.

A missing file or key takes the documented default; an unknown key or a wrong type is a
UserError naming the file, so a typo never silently changes the leaderboard.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2lmc.errors import UserError
from e2lmc.yamlfile import read_yaml_mapping

CONFIG_NAME = "scoring.yaml"


@dataclass
class CheckpointFilter:
    """Which checkpoints of a curve count. None means no constraint."""

    stage: str | None = "public"  # public | hidden | None (both)
    iteration_step: int | None = None  # keep iterations that are multiples of this
    min_tokens_b: float | None = None
    max_tokens_b: float | None = None


@dataclass
class ModelSelector:
    """Models chosen by name, or by attributes from the manifest (arch, data, size)."""

    names: list[str] | None = None
    arch: str | None = None
    data: str | None = None
    size: str | None = None


@dataclass
class Weights:
    signal_quality: float = 0.5
    ranking_consistency: float = 0.1
    scientific_compliance: float = 0.4


@dataclass
class SQConfig:
    models: ModelSelector = field(default_factory=lambda: ModelSelector(arch="arch1",
                                                                        data="science"))
    checkpoints: CheckpointFilter = field(default_factory=CheckpointFilter)
    # The official lag range 1..floor(n/4)-1 is empty for n < 8. `lag1` then uses lag 1
    # alone (needs n >= 3); `zero` scores smoothness 0 instead.
    short_curve: str = "lag1"


@dataclass
class RCConfig:
    models: ModelSelector = field(default_factory=lambda: ModelSelector(data="science"))
    # Reference point: each model's last checkpoint with tokens_b <= this (about 200B).
    reference_tokens_b: float = 200.0
    # Compare with checkpoints after the reference point, of this stage.
    compare_stage: str | None = "hidden"


@dataclass
class CSConfig:
    science_model: str | None = None  # default: the science model paired with the web one
    web_model: str | None = None  # default: the only model with data == web
    checkpoints: CheckpointFilter = field(default_factory=CheckpointFilter)
    # A checkpoint is a win when science - web > margin, a loss when < -margin, else a tie.
    margin: float = 0.0


@dataclass
class JudgeConfig:
    model: str = "gpt-4o-2024-08-06"
    base_url: str | None = None
    samples: int = 50
    seed: int = 0
    concurrency: int = 8
    threshold: float = 0.5  # minimum accepted fraction
    mode: str = "report"  # gate | report | required | off
    api_key_env: str = "E2LMC_JUDGE_API_KEY"
    api_key_file: str | None = "judge_key"  # in the reference data; bundle build writes it
    timeout_s: float = 60.0
    max_retries: int = 5
    retry_base_s: float = 1.0  # first backoff delay; doubles on each retry (capped at 60 s)
    cache_dir: str | None = None  # verdict cache; default: <output>/../judge_cache or ~/.cache


@dataclass
class LeakageConfig:
    threshold: float = 0.1  # maximum share of items whose answer is in the prompt
    mode: str = "gate"  # gate | report | off
    min_answer_chars: int = 3


@dataclass
class ConfidenceConfig:
    """The bootstrap over documents behind each score's interval (docs/scoring.md)."""

    replicates: int = 1000  # 0 switches the intervals off
    seed: int = 0
    level: float = 0.95


@dataclass
class ScoringConfig:
    weights: Weights = field(default_factory=Weights)
    sq: SQConfig = field(default_factory=SQConfig)
    rc: RCConfig = field(default_factory=RCConfig)
    cs: CSConfig = field(default_factory=CSConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)
    path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


GATE_MODES = {"gate", "report", "required", "off"}


def _build(cls: type, raw: Any, where: str, path: Path) -> Any:
    """Build dataclass `cls` from a YAML mapping, checking keys and types."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise UserError(f"{path}: `{where}` must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = set(raw) - fields
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)} in `{where or 'top level'}`;"
                        f" allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}".strip("."), path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str, path: Path) -> Any:
    if dataclasses.is_dataclass(hint):
        if hint is ModelSelector and isinstance(value, list):
            return ModelSelector(names=[str(v) for v in value])
        return _build(hint, value, where, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, path)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{path}: `{where}` must be a list")
        return [_coerce(args[0], v, where, path) for v in value]
    if hint is str and isinstance(value, bool):
        # YAML 1.1 reads a bare `off`/`on` as a boolean; `mode: off` means the string
        return "on" if value else "off"
    try:
        if hint is float and not isinstance(value, bool):
            return float(value)
        if hint is int and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
        if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if hint is bool and isinstance(value, bool):
            return value
    except (TypeError, ValueError):
        pass
    raise UserError(f"{path}: `{where}` should be {getattr(hint, '__name__', hint)}, "
                    f"got {value!r}")


def parse_config(doc: Any, path: Path) -> ScoringConfig:
    cfg = _build(ScoringConfig, doc or {}, "", path)
    cfg.path = path
    for name in ("judge", "leakage"):
        mode = getattr(cfg, name).mode
        if mode not in GATE_MODES:
            raise UserError(f"{path}: `{name}.mode` is {mode!r}; use one of {sorted(GATE_MODES)}")
    if cfg.sq.short_curve not in ("lag1", "zero"):
        raise UserError(f"{path}: `sq.short_curve` must be lag1 or zero")
    c = cfg.confidence
    if not (0 <= c.replicates <= 100_000 and 0.5 <= c.level < 1):
        raise UserError(f"{path}: `confidence` needs 0 <= replicates <= 100000 (0: no "
                        f"intervals) and 0.5 <= level < 1; got {c.replicates} and {c.level}")
    w = cfg.weights
    if min(w.signal_quality, w.ranking_consistency, w.scientific_compliance) < 0:
        raise UserError(f"{path}: weights must be >= 0")
    return cfg


def load_config(ref_dir: str | Path) -> ScoringConfig:
    """`scoring.yaml` from the reference-data folder (or a direct file path)."""
    p = Path(ref_dir)
    path = p if p.is_file() else p / CONFIG_NAME
    doc = read_yaml_mapping(
        path, missing=f"scoring configuration not found; the reference data must hold "
        f"{CONFIG_NAME} (see docs/scoring.md)", expected="a mapping of scoring settings",
        empty_ok=True)
    return parse_config(doc, path)
