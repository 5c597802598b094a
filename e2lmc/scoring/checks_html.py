"""Report sections for the validation checks' examples and the diagnostics.

Built from the gates' details and the diagnostics' aggregates only, so they are safe for
the participant-facing page (no hidden-checkpoint value, never the judge key).
"""

from __future__ import annotations

import html
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _pre(text: str) -> str:
    return f"<pre style='white-space:pre-wrap;background:#f7f7f7;padding:.4rem'>" \
           f"{html.escape(text)}</pre>"


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


def gate_examples_section(gates: list[dict[str, Any]]) -> str:
    """Items the judge rejected and items whose prompt gives the answer away."""
    parts = []
    for g in gates:
        d = g.get("detail") or {}
        if g["name"] == "alignment" and d.get("rejected_examples"):
            parts.append(f"<p>The judge ({html.escape(str(d.get('model')))}, "
                         f"{html.escape(str(d.get('rubric_version')))}) accepted "
                         f"{d.get('accepted')} and rejected {d.get('rejected')} of "
                         f"{d.get('sample_size')} sampled items. Rejected examples:</p>")
            parts += [_pre(f"{e['task']} #{e['doc_id']}\n{e['text']}")
                      for e in d["rejected_examples"]]
        if g["name"] == "leakage" and d.get("examples"):
            parts.append(f"<p>{d.get('leaked')} of {d.get('checked')} checked items give the "
                         f"answer away in their prompt ({d.get('skipped_trivial')} items with "
                         "short or generic answers not checked). Examples:</p>")
            parts += [_pre(f"{e['task']} #{e['doc_id']} answer: {e['gold']} ({e['why']})\n"
                           f"{e['prompt']}") for e in d["examples"]]
    return "".join(parts)
