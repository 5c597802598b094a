"""The organizers' published-curves format (the file the official scoring notebook reads).

    {"metadata": {...}, "data": {MODEL: {"iteration": [...], "gtokens": [...], BENCH: [...]}}}

`e2lmc score-curves` applies the notebook's default selection (iterations that are
multiples of 4000, at most 206B tokens) and prints SQ per model and their mean.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from e2lmc.errors import UserError
from e2lmc.results import write_json
from e2lmc.scoring.config import CheckpointFilter, ModelSelector, SQConfig
from e2lmc.scoring.curves import Curve, Point
from e2lmc.scoring.sq import signal_quality

_SIZE_ARCH = {"arch1", "arch2"}


def model_attributes(name: str) -> dict[str, Any]:
    """`dense-1b-arch1` -> size 1b, arch arch1 (all published models are science models)."""
    parts = name.split("-")
    arch = next((p for p in parts if p in _SIZE_ARCH), "")
    size = parts[1] if len(parts) > 2 else ""
    return {"size": size, "arch": arch, "data": "science", "params": None}


def load_curves(path: str | Path, benchmark: str) -> dict[str, Curve]:
    """One Curve per model for `benchmark`; every published checkpoint is `public`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        data = doc["data"]
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: not a curves file (expected JSON with a `data` mapping of "
                        "models to arrays)") from None
    curves: dict[str, Curve] = {}
    for model, arrays in data.items():
        if benchmark not in arrays:
            known = sorted(k for k, v in arrays.items() if k not in ("iteration", "gtokens")
                           and isinstance(v, list) and v and isinstance(v[0], (int, float)))
            raise UserError(f"{path}: model {model} has no benchmark {benchmark!r}; "
                            f"available: {', '.join(known)}")
        pts = []
        for it, tok, val in zip(arrays["iteration"], arrays["gtokens"], arrays[benchmark]):
            value = float(val) if val is not None else math.nan
            pts.append(Point(f"iter_{int(it):07d}", float(tok), "public", value, int(it)))
        curves[model] = Curve(model, model_attributes(model), pts)
    return curves


def score_curves(path: str | Path, benchmark: str, models: list[str] | None = None,
                 checkpoints: CheckpointFilter | None = None) -> dict[str, Any]:
    """SQ of `benchmark` over `models` (default: the arch1 models), notebook selection."""
    curves = load_curves(path, benchmark)
    if models:
        missing = [m for m in models if m not in curves]
        if missing:
            raise UserError(f"{path}: unknown model(s) {missing}; available: {sorted(curves)}")
    flt = checkpoints or CheckpointFilter(stage=None, iteration_step=4000, max_tokens_b=206.0)
    selector = ModelSelector(names=models) if models else ModelSelector(arch="arch1")
    return signal_quality(curves, SQConfig(models=selector, checkpoints=flt))


def cli_score_curves(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    flt = CheckpointFilter(stage=None, iteration_step=args.iteration_step or None,
                           min_tokens_b=args.min_tokens_b, max_tokens_b=args.max_tokens_b)
    res = score_curves(args.curves, args.benchmark, models, flt)
    print(f"benchmark {args.benchmark}")
    print(f"{'model':<22}{'n':>4}{'monotonicity':>14}{'smoothness':>12}{'SQ':>9}")
    for name, m in res["models"].items():
        print(f"{name:<22}{m['n']:>4}{m['monotonicity']:>14.4f}{m['smoothness']:>12.4f}"
              f"{m['sq']:>9.4f}" + ("" if m["state"] == "ok" else f"   ({m['state']})"))
    print(f"{'mean':<26}{res['monotonicity']:>14.4f}{res['smoothness']:>12.4f}"
          f"{res['value']:>9.4f}")
    if args.output:
        write_json(args.output, {"benchmark": args.benchmark, **res})
    return 0
