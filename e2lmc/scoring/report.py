"""`detailed_results.html`: the participant-facing report, one self-contained file.

Participants see this page, so it is built only from what they may see: the curves at
`public` checkpoints and aggregates (SQ components, RC agreement per checkpoint, CS
win/tie/loss per checkpoint, gate outcomes). No value of a hidden checkpoint is passed in.
Images are PNG data URIs (Codabench shows the file as is).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from e2lmc.scoring.curves import Curve

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#a15c00}.muted{color:#777}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
img{max-width:100%}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plot_public_curves(curves: list[Curve], metric: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in curves if c.points]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for c in shown:
        ax.plot(c.tokens, c.values, marker="o", ms=3, label=c.model)
    ax.set_xlabel("tokens seen (billions)")
    ax.set_ylabel(metric)
    ax.set_title("Public checkpoints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_bars(labels: list[str], values: list[float], title: str, ylabel: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any, first: bool) -> str:
        cls = ' class="l"' if first or isinstance(v, str) else ""
        text = f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
        return f"<td{cls}>{text}</td>"

    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(src: str | None) -> str:
    return f'<img alt="plot" src="{src}">' if src else '<p class="muted">nothing to plot</p>'


def render_report(*, scores: dict[str, float], details: dict[str, Any],
                  public_curves: list[Curve], extra_sections: list[tuple[str, str]] = ()) -> str:
    """The whole page. `public_curves` must hold public points only."""
    sub = details.get("submission", {})
    sq, rc, cs = details["signal_quality"], details["ranking_consistency"], \
        details["scientific_compliance"]
    parts = [f"<h1>E2LM results: {html.escape(str(sub.get('task', 'submission')))}</h1>",
             f'<p class="muted">metric {html.escape(str(sub.get("metric", "")))} · '
             f'{sub.get("n_docs", "?")} documents · fingerprint '
             f'{html.escape(str(sub.get("fingerprint", ""))[:12])}</p>']
    for note in details.get("notes", []):
        parts.append(f'<p class="note">{html.escape(note)}</p>')

    parts.append("<h2>Score</h2>")
    parts.append(_table(["column", "value"], [[k, float(v)] for k, v in scores.items()]))

    parts.append("<h2>Curves (public checkpoints)</h2>")
    parts.append(_img(_plot_public_curves(public_curves, str(sub.get("metric", "metric")))))

    parts.append("<h2>Signal quality</h2>")
    rows = [[m, r["n"], r["monotonicity"], r["smoothness"], r["sq"], r["state"]]
            for m, r in sq.get("models", {}).items()]
    parts.append(_table(["model", "points", "monotonicity", "smoothness", "SQ", "note"], rows))

    parts.append("<h2>Ranking consistency</h2>")
    parts.append(f"<p>{html.escape(rc['state'])}. Models: "
                 f"{html.escape(', '.join(rc.get('models', [])))}. Share of model pairs that "
                 "keep their order at each later checkpoint (values hidden).</p>")
    ck = rc.get("checkpoints", [])
    parts.append(_img(_plot_bars([c["checkpoint"] for c in ck], [c["agreement"] for c in ck],
                                 "RC agreement per hidden checkpoint", "pairs in order")))

    parts.append("<h2>Compliance with scientific knowledge</h2>")
    parts.append(f"<p>{html.escape(cs['state'])}. Science model "
                 f"{html.escape(str(cs.get('science_model')))} against web-only model "
                 f"{html.escape(str(cs.get('web_model')))}: wins {cs.get('wins', 0)}, ties "
                 f"{cs.get('ties', 0)}, losses {cs.get('losses', 0)}.</p>")
    parts.append(_table(["checkpoint", "tokens (B)", "science model"],
                        [[c["checkpoint"], float(c["tokens_b"]), c["result"]]
                         for c in cs.get("checkpoints", [])]))

    parts.append("<h2>Validation checks</h2>")
    parts.append(_table(["check", "mode", "state", "value", "threshold", "passed", "note"],
                        [[g["name"], g["mode"], g["state"],
                          "-" if g["value"] is None else float(g["value"]),
                          float(g["threshold"]), str(g["passed"]), g["reason"]]
                         for g in details.get("gates", [])]))
    for title, body in extra_sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>E2LM results</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
