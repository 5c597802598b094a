"""`e2lmc analyze`: why a benchmark scores as it does, item by item, and a better subset.

Reads a participant's own ingestion output (`item_outcomes.parquet` and `ingestion.json`),
public checkpoints only, and writes into the output folder: a report (report.md and its
figures), items.csv, analysis.json and, given the submission, the filtered submission
that keeps the proposed subset (e2lmc.filtered_task). The statistics are in
e2lmc.item_stats, the choice of the subset in e2lmc.subset, the report in
e2lmc.analyze_report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from e2lmc.errors import UserError
from e2lmc.ingestion.validate import MIN_DOCS
from e2lmc.outcomes import OUTCOMES_FILE, Outcomes, read_outcomes
from e2lmc.results import INGESTION_JSON, read_items, read_results, write_json
from e2lmc.scoring.config import SQConfig, load_config


def load_public(res: Path) -> tuple[dict[str, Any], Outcomes]:
    """ingestion.json and the public part of the outcomes; a user error when unusable."""
    path = res / INGESTION_JSON
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: not found or not JSON; pass the output folder of "
                        "`e2lmc ingest` as --res") from None
    if doc.get("status") == "failed":
        raise UserError(f"{path}: the ingestion failed ({doc.get('error')}); nothing to analyse")
    if not (res / OUTCOMES_FILE).is_file():
        raise UserError(f"{res / OUTCOMES_FILE}: not found; it is written by `e2lmc ingest` "
                        "from this version on: ingest the submission again")
    o = read_outcomes(res / OUTCOMES_FILE).stage("public")
    if not o.checkpoints or not np.isfinite(o.value).any():
        raise UserError(f"{res / OUTCOMES_FILE}: no public checkpoint with per-item values "
                        "(a metric without a number per document, such as perplexity or "
                        "corpus F1, cannot be analysed item by item)")
    return doc, o


def document_groups(res: Path, o: Outcomes) -> np.ndarray:
    """One id per item; items whose rendered prompt and set of choices are the same share
    one, because the ingestion counts documents that ask for the same requests once (a
    task's minimum size is counted that way). Without items.jsonl every item is its own."""
    keys = {(i.task, i.doc_id): (i.task, i.prompt, frozenset(i.choices or ()))
            for i in read_items(res)}
    ids: dict[Any, int] = {}
    return np.array([ids.setdefault(keys.get(item, item), len(ids)) for item in o.items])


def analyze(res: Path, output: Path, submission: Path | None = None, ref: Path | None = None,
            fit_arch: str | None = None) -> dict[str, Any]:
    """The whole analysis; returns the summary written to analysis.json."""
    from e2lmc.analyze_report import write_report
    from e2lmc.filtered_task import FOLDER, write_filtered
    from e2lmc.item_stats import FLAGS, item_stats
    from e2lmc.subset import choose_subset, split_models

    t0 = time.perf_counter()
    res, output = Path(res), Path(output)
    doc, o = load_public(res)
    attrs: dict[str, dict[str, Any]] = doc.get("models") or {}
    cfg = load_config(ref).sq if ref else SQConfig()
    split = split_models(attrs, cfg, fit_arch)
    groups = document_groups(res, o)
    sel = choose_subset(o, attrs, cfg, split, MIN_DOCS, groups)
    stats = item_stats(o, split.fit + split.held, attrs)
    public = {r.key: r.value for r in read_results(res) if r.stage == "public"}
    keep: dict[str, list[int]] = {}
    for j in np.flatnonzero(sel.keep):
        task, doc_id = o.items[j]
        keep.setdefault(task, []).append(doc_id)
    summary: dict[str, Any] = {
        "task": (doc.get("submission") or {}).get("task"), "res": str(res),
        "items": len(o.items), "kept": int(sel.keep.sum()), "min_docs": MIN_DOCS,
        "documents": {"all": len(set(groups)), "kept": len(set(groups[sel.keep]))},
        "fit_arch": split.fit_arch, "held_arch": split.held_arch,
        "fit_models": split.fit, "held_models": split.held,
        "sq_full": sel.full, "sq_subset": sel.subset,
        "flags": {f: int(stats.flags[f].sum()) for f in FLAGS},
        "curve_is_item_mean": o.is_mean_of(public), "filtered_submission": None,
    }
    output.mkdir(parents=True, exist_ok=True)
    if submission is not None:
        filtered = write_filtered(Path(submission), keep, output,
                                  (doc.get("submission") or {}).get("fingerprint"))
        summary["filtered_submission"] = FOLDER
        summary["filtered_zip"] = str(filtered.zip)
    summary["report"] = str(write_report(output, summary, o, stats, split, sel))
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(output / "analysis.json", summary)
    return summary


def cli_analyze(args) -> int:
    res = Path(args.res)
    out = Path(args.output) if args.output else res.parent / "analysis"
    s = analyze(res, out, Path(args.submission) if args.submission else None,
                Path(args.ref) if args.ref else None, args.fit_arch)
    print(f"{s['items']} items; flags: " + ", ".join(f"{k} {v}" for k, v in s["flags"].items()))
    print(f"proposed subset: {s['kept']} items ({s['documents']['kept']} documents as the "
          f"ingestion counts them), chosen on {s['fit_arch']}")
    for key, arch in (("fit", s["fit_arch"]), ("held", s["held_arch"])):
        if s["sq_full"][key] is not None:
            role = "fit" if key == "fit" else "held out"
            print(f"  SQ {arch} ({role}): {s['sq_full'][key]:.4f} -> {s['sq_subset'][key]:.4f}")
    if s.get("filtered_zip"):
        print(f"filtered submission: {s['filtered_zip']}")
    print(f"report: {s['report']}  ({s['seconds']:.1f} s)")
    return 0
