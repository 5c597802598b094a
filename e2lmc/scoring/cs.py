"""Compliance with scientific knowledge (CS): does the benchmark separate a model trained
on the science mixture from a web-only model of the same size?

Over the selected checkpoints, a checkpoint is a win when science - web > margin, a loss
when < -margin, a tie otherwise. share = (wins + ties/2) / n and CS = max(0, 2*share - 1):
overlapping curves (share about 1/2) score about 0, a consistent lead scores 1. Only the
win/tie/loss pattern leaves this module, never the web model's values.
"""

from __future__ import annotations

from typing import Any

from e2lmc.scoring.align import align
from e2lmc.scoring.config import CSConfig
from e2lmc.scoring.curves import Curve


def _pick_pair(curves: dict[str, Curve], cfg: CSConfig) -> tuple[Curve | None, Curve | None, str]:
    web_names = [n for n in sorted(curves) if curves[n].attributes.get("data") == "web"]
    web_name = cfg.web_model or (web_names[0] if web_names else None)
    if web_name not in curves:
        return None, None, "no web-only model in the results: CS 0"
    web = curves[web_name]
    if cfg.science_model:
        sci = curves.get(cfg.science_model)
        return sci, web, "ok" if sci else f"science model {cfg.science_model!r} missing: CS 0"
    sci_names = [n for n in sorted(curves) if curves[n].attributes.get("data") == "science"
                 and curves[n].attributes.get("size") == web.attributes.get("size")]
    # prefer the science model of the same architecture, then arch1 (the paper's default)
    sci_names.sort(key=lambda n: (curves[n].attributes.get("arch") != web.attributes.get("arch"),
                                  curves[n].attributes.get("arch") != "arch1", n))
    if not sci_names:
        return None, web, "no science model of the web model's size: CS 0"
    return curves[sci_names[0]], web, "ok"


def scientific_compliance(curves: dict[str, Curve], cfg: CSConfig) -> dict[str, Any]:
    sci, web, state = _pick_pair(curves, cfg)
    out: dict[str, Any] = {"value": 0.0, "state": state,
                           "science_model": sci.model if sci else None,
                           "web_model": web.model if web else None, "checkpoints": []}
    if sci is None or web is None:
        return out
    rows = align([sci.finite().select(cfg.checkpoints).points,
                  web.finite().select(cfg.checkpoints).points])
    if not rows:
        out["state"] = "no common checkpoint between the science and web models: CS 0"
        return out
    outcome = []
    for s, w in rows:
        diff = s.value - w.value
        result = "win" if diff > cfg.margin else "loss" if diff < -cfg.margin else "tie"
        outcome.append({"checkpoint": s.checkpoint, "tokens_b": s.tokens_b, "result": result})
    wins = sum(o["result"] == "win" for o in outcome)
    ties = sum(o["result"] == "tie" for o in outcome)
    share = (wins + 0.5 * ties) / len(outcome)
    out.update(value=max(0.0, 2.0 * share - 1.0), share=share, wins=wins, ties=ties,
               losses=len(outcome) - wins - ties, checkpoints=outcome)
    return out
