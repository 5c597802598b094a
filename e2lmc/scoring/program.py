"""The scoring step: ingestion output + scoring.yaml -> scores.json, details, HTML report.

Reads the ingestion contract (e2lmc.results), refuses a failed or partial ingestion and
any output it cannot verify with the signing key (e2lmc.signing: `signing.key` in the
reference data, else the local user's key), and writes three files atomically:
`scores.json` (flat, finite, keys = leaderboard columns), `scores_details.json` (every
component, per model, the intervals from resampling documents and the flagged items' text:
the organizers' view, which the phases' `hide_score_output` keeps from participants) and
`detailed_results.html` (public on Codabench: no item text, and only the intervals of
scores read from public checkpoints). Neither participant-visible file holds a metric
value of a hidden checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from e2lmc import signing
from e2lmc.errors import IngestionFailed
from e2lmc.outcomes import Outcomes
from e2lmc.results import Item, read_verified, read_verified_outcomes, write_json
from e2lmc.scoring.checks_html import diagnostics_section, flagged_items_section
from e2lmc.scoring.combine import GateResult, apply_gates, weighted_score
from e2lmc.scoring.confidence import bootstrap, participant_view
from e2lmc.scoring.config import ScoringConfig, load_config
from e2lmc.scoring.cs import scientific_compliance
from e2lmc.scoring.curves import Curve, curves_from_results, select_models
from e2lmc.scoring.diagnostics import chance_level, compute_diagnostics, is_accuracy_metric
from e2lmc.scoring.judge import resolve_cache_dir, run_judge
from e2lmc.scoring.leakage import check_leakage
from e2lmc.scoring.rc import ranking_consistency
from e2lmc.scoring.report import render_report
from e2lmc.scoring.sq import signal_quality

# The leaderboard's column keys; competition.yaml must list exactly these.
LEADERBOARD_KEYS = ("score", "signal_quality", "ranking_consistency", "scientific_compliance",
                    "alignment", "leakage", "documents")
SCORES_JSON = "scores.json"
DETAILS_JSON = "scores_details.json"
REPORT_HTML = "detailed_results.html"


def _gates(cfg: ScoringConfig, items: list[Item], fingerprint: str, ref: Path,
           output: Path) -> list[GateResult]:
    """The validation checks on the rendered items: alignment judge, leakage."""
    return [
        run_judge(items, cfg.judge, fingerprint=fingerprint, ref_dir=ref,
                  cache_dir=resolve_cache_dir(cfg.judge, output)),
        check_leakage(items, cfg.leakage),
    ]


def _diagnostics(curves: dict[str, Curve], cfg: ScoringConfig, items: list[Item],
                 metric: str | None) -> dict[str, Any]:
    """SNR and decision accuracy over the RC models; chance only for accuracy metrics."""
    chosen = {c.model: c for c in select_models(curves, cfg.rc.models)} or curves
    chance = chance_level(items) if is_accuracy_metric(metric) else None
    return compute_diagnostics(chosen, chance=chance)


def _public_only(curves: dict[str, Curve]) -> list[Curve]:
    return [Curve(c.model, c.attributes, [p for p in c.points if p.stage == "public"])
            for c in curves.values()]


def compute_scores(curves: dict[str, Curve], cfg: ScoringConfig, gates: list[GateResult],
                   n_docs: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """The leaderboard row and the details behind it (pure: no I/O)."""
    sq = signal_quality(curves, cfg.sq)
    rc = ranking_consistency(curves, cfg.rc)
    cs = scientific_compliance(curves, cfg.cs)
    raw = weighted_score(sq["value"], rc["value"], cs["value"], cfg.weights)
    final, notes = apply_gates(raw, gates)
    by_name = {g.name: g for g in gates}
    scores = {
        "score": final,
        "signal_quality": sq["value"],
        "ranking_consistency": rc["value"],
        "scientific_compliance": cs["value"],
        "alignment": by_name["alignment"].leaderboard_value,
        "leakage": by_name["leakage"].leaderboard_value,
        "documents": float(n_docs),  # the benchmark's size, shown beside its score
    }
    bad = {k: v for k, v in scores.items() if not math.isfinite(v) or abs(v) >= 1e10}
    if bad:  # a bug, not a user error: the formulas above must never produce these
        raise RuntimeError(f"non-finite scores {bad}")
    details = {"raw_score": raw, "weights": dataclasses.asdict(cfg.weights), "notes": notes,
               "signal_quality": sq, "ranking_consistency": rc, "scientific_compliance": cs,
               "gates": [g.summary() for g in gates]}
    return scores, details


def _confidence(curves: dict[str, Curve], outcomes: Outcomes | None, cfg: ScoringConfig,
                gates: list[GateResult]) -> dict[str, Any]:
    """Intervals from resampling documents; the gates' verdicts stay as measured."""
    boot = cfg.confidence
    return bootstrap(curves, outcomes, lambda c: compute_scores(c, cfg, gates)[0],
                     score_max=weighted_score(1.0, 1.0, 1.0, cfg.weights),
                     replicates=boot.replicates, seed=boot.seed, level=boot.level)


def score(res: str | Path, ref: str | Path, output: str | Path) -> dict[str, float]:
    """Score one ingestion output; returns the scores.json dict."""
    res, ref, output = Path(res), Path(ref), Path(output)
    cfg = load_config(ref)
    ingestion, rows, items = read_verified(res, signing.load_key(ref))
    ok_rows = [r for r in rows if r.status == "ok" and r.value is not None]
    if not ok_rows:
        raise IngestionFailed(f"{res}/results.jsonl: no checkpoint was evaluated successfully; "
                              "see the errors in the ingestion output")
    curves = curves_from_results(rows, ingestion.get("models", {}))
    sub = ingestion.get("submission", {})
    gates = _gates(cfg, items, str(sub.get("fingerprint") or ""), ref, output)
    scores, details = compute_scores(curves, cfg, gates, int(sub.get("n_docs") or 0))
    details["diagnostics"] = _diagnostics(curves, cfg, items, sub.get("metric"))
    details["confidence"] = _confidence(curves, read_verified_outcomes(res, ingestion), cfg,
                                        gates)
    failed = [r.key for r in rows if r.status != "ok"]
    if failed:
        details["notes"].append(f"{len(failed)} checkpoint(s) failed in ingestion and were "
                                "left out of the curves")
    details["submission"] = sub
    details["scores"] = scores
    output.mkdir(parents=True, exist_ok=True)
    sections = [("Diagnostics", diagnostics_section(details["diagnostics"]))]
    flagged = flagged_items_section(details["gates"])
    if flagged:
        sections.append(("Flagged items", flagged))
    html = render_report(scores=scores, details=details, public_curves=_public_only(curves),
                         confidence=participant_view(details["confidence"], cfg),
                         extra_sections=sections)
    tmp = output / (REPORT_HTML + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    write_json(output / DETAILS_JSON, details)
    tmp.replace(output / REPORT_HTML)
    write_json(output / SCORES_JSON, scores)  # last: its presence means scoring finished
    return scores


def cli_score(args: argparse.Namespace) -> int:
    scores = score(args.res, args.ref, args.output)
    print(json.dumps(scores, indent=2))
    return 0
