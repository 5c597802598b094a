"""Report sections for the items the validation checks flagged, and the diagnostics.

Built from the gates' counts and document ids and the diagnostics' aggregates only: the
page is public on Codabench, so it names flagged items by id, never by their text (the
organizers' scores_details.json keeps the text), and holds no hidden-checkpoint value and
never the judge key.
"""

from __future__ import annotations

import html
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "not measured"
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def diagnostics_section(diag: dict[str, Any]) -> str:
    """SNR, distance above chance and decision accuracy, with one line on how to read each."""
    snr, chance, da = diag.get("snr") or {}, diag.get("above_chance"), \
        diag.get("decision_accuracy") or {}
    rows = [
        ("signal-to-noise ratio", snr.get("value"),
         f"spread of the models at the last public checkpoint ({_fmt(snr.get('signal'))}) over "
         f"the detrended checkpoint-to-checkpoint noise of the last {snr.get('window')} "
         f"checkpoints ({_fmt(snr.get('noise'))}); below about 1 the models cannot be told apart"
         + (f" ({snr['reason']})" if snr.get("reason") else "")),
    ]
    if chance:
        rows.append(("distance above chance", chance.get("distance"),
                     f"mean accuracy {_fmt(chance.get('mean'))} at the last public checkpoint "
                     f"against chance {_fmt(chance.get('chance'))}; normalized "
                     f"{_fmt(chance.get('normalized'))}; {chance.get('models_above')} of "
                     f"{chance.get('models')} models above chance"))
    rows.append(("decision accuracy", da.get("value"),
                 f"share of the {da.get('pairs', 0)} model pairs ordered at the public horizon "
                 "as at the last hidden checkpoint (hidden values are not shown)"
                 + (f" ({da['reason']})" if da.get("reason") else "")))
    body = "".join(f"<tr><td class='l'>{html.escape(n)}</td><td>{_fmt(v)}</td>"
                   f"<td class='l'>{html.escape(t)}</td></tr>" for n, v, t in rows)
    return ("<p class='muted'>Not part of the score: indicators used to pick benchmarks for "
            "early training.</p><table><tr><th class='l'>diagnostic</th><th>value</th>"
            f"<th class='l'>meaning</th></tr>{body}</table>")


def _ids(examples: list[dict[str, Any]]) -> str:
    return ", ".join(html.escape(f"{e['task']} #{e['doc_id']}") for e in examples)


def flagged_items_section(gates: list[dict[str, Any]]) -> str:
    """Which items the judge rejected and which prompts give the answer away, by id."""
    parts = []
    for g in gates:
        d = g.get("detail") or {}
        if g["name"] == "alignment" and d.get("rejected_examples"):
            parts.append(f"<p>The judge ({html.escape(str(d.get('model')))}, "
                         f"{html.escape(str(d.get('rubric_version')))}) accepted "
                         f"{int(d.get('accepted', 0))} and rejected {int(d.get('rejected', 0))} "
                         f"of {int(d.get('sample_size', 0))} sampled items; for example, "
                         f"by document id: {_ids(d['rejected_examples'])}.</p>")
        if g["name"] == "leakage" and d.get("examples"):
            parts.append(f"<p>{int(d.get('leaked', 0))} of {int(d.get('checked', 0))} checked "
                         "items give the answer away in their prompt "
                         f"({int(d.get('skipped_trivial', 0))} items with short or generic "
                         f"answers not checked); for example, by document id: "
                         f"{_ids(d['examples'])}.</p>")
    if parts:
        parts.append("<p class='muted'>This page is public, so it names items by their "
                     "document id in your task, never by their text.</p>")
    return "".join(parts)
