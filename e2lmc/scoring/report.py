"""`detailed_results.html`: the participant-facing report, one self-contained file.

Codabench serves this page to any visitor once the competition is published (its
`get_detail_result` view checks no owner), so it is built only from what anyone may see:
the curves at `public` checkpoints and aggregates (SQ components, RC agreement per
checkpoint, CS win/tie/loss per checkpoint, check outcomes, document ids, and the intervals
that e2lmc.scoring.confidence.participant_view lets through: those of scores read from
public checkpoints alone). No value of a hidden checkpoint and no item text is passed in.
Written for people: counts as integers, "not measured" rather than the leaderboard's -1,
yes/no, token counts with units. Images are PNG data URIs (Codabench shows the file as is).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from e2lmc.scoring.combine import NOT_MEASURED_VALUE
from e2lmc.scoring.curves import Curve

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#a15c00}.muted{color:#777}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
img{max-width:100%}.bar{display:inline-block;height:.8em;background:#4c72b0;vertical-align:middle}
.win{color:#1a7f37}.loss{color:#b42318}
"""
# Leaderboard columns in the words of competition.yaml, and how to read each.
SCORE_ROWS = {
    "score": ("Score", "0.5 × SQ + 0.1 × RC + 0.4 × CS, then the validation checks"),
    "signal_quality": ("Signal quality (SQ)", "monotone and smooth curves on public checkpoints"),
    "ranking_consistency": ("Ranking consistency (RC)",
                            "models keep their early order at later, hidden checkpoints"),
    "scientific_compliance": ("Scientific compliance (CS)",
                              "the science model leads the web-only model"),
    "alignment": ("Alignment", "share of sampled items the judge accepts"),
    "leakage": ("Leakage", "share of items whose prompt holds the answer (lower is better)"),
    "documents": ("Documents", "evaluated documents of your task"),
}
# One colour per model size (smallest first), one line style per shape.
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
_STYLES = ("-", "--", ":", "-.")


def tokens(b: float) -> str:
    """Billions of tokens in a unit a reader takes in at once: 4.2B, 33M, 16k."""
    for scale, unit in ((1.0, "B"), (1e-3, "M"), (1e-6, "k")):
        if b >= scale:
            v = b / scale
            return f"{v:.0f}{unit}" if v >= 100 else f"{v:.3g}{unit}"
    return f"{b * 1e9:.0f}"


def score_text(key: str, value: float) -> str:
    """A leaderboard value as a person reads it."""
    if key == "documents":
        return f"{int(round(value)):,}"
    if key in ("alignment", "leakage") and value == NOT_MEASURED_VALUE:
        return "not measured (-1 on the leaderboard)"
    return f"{value:.4f}"


def yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _order(curves: list[Curve]) -> tuple[list[str], list[str]]:
    """Model sizes (smallest first, by their models' parameter counts) and shapes."""
    params: dict[str, list[float]] = {}
    for c in curves:
        params.setdefault(str(c.attributes.get("size", "")), []).append(
            float(c.attributes.get("params") or 0.0))
    sizes = sorted(params, key=lambda s: (min(params[s]), s))
    return sizes, sorted({str(c.attributes.get("arch", "")) for c in curves})


def _styles(curves: list[Curve]) -> dict[str, dict[str, Any]]:
    """Colour by size, line style by shape; web-only models grey and dotted, so the
    science/web pair and the size order show at a glance."""
    sizes, archs = _order(curves)
    out = {}
    for c in curves:
        if c.attributes.get("data") == "web":
            out[c.model] = {"color": "#555555", "linestyle": ":", "marker": "x", "lw": 2}
            continue
        size, arch = str(c.attributes.get("size", "")), str(c.attributes.get("arch", ""))
        out[c.model] = {"color": _COLOURS[sizes.index(size) % len(_COLOURS)],
                        "linestyle": _STYLES[archs.index(arch) % len(_STYLES)],
                        "marker": "o", "lw": 1.6}
    return out


def _legend_key(c: Curve, sizes: list[str]) -> tuple[bool, int, str]:
    """Science models by size, then web-only ones."""
    size = str(c.attributes.get("size", ""))
    return (c.attributes.get("data") == "web", sizes.index(size), c.model)


def _plot_public_curves(curves: list[Curve], metric: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    shown = [c for c in curves if c.points]
    if not shown:
        return None
    styles, sizes = _styles(shown), _order(shown)[0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for c in sorted(shown, key=lambda c: _legend_key(c, sizes)):
        ax.plot(c.tokens, c.values, ms=3.5, label=c.model, **styles[c.model])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: tokens(x) if x > 0 else "0"))
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} at the public checkpoints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows of already formatted cells; the first column and text cells align left."""
    def cell(v: Any, first: bool) -> str:
        if isinstance(v, tuple):  # (html, css class): markup built here, never user text
            return f"<td class='{v[1]}'>{v[0]}</td>"
        cls = ' class="l"' if first or isinstance(v, str) else ""
        text = f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
        return f"<td{cls}>{text}</td>"

    first = rows[0] if rows else []
    head = "".join(f'<th class="{"l" if i == 0 or _is_text(first, i) else ""}">'
                   f'{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _is_text(row: list[Any], i: int) -> bool:
    return i < len(row) and (isinstance(row[i], str)
                             or isinstance(row[i], tuple) and "l" in row[i][1].split())


def _img(src: str | None) -> str:
    return f'<img alt="plot" src="{src}">' if src else '<p class="muted">nothing to plot</p>'


def _share_bar(share: float) -> tuple[str, str]:
    width = max(0.0, min(1.0, share)) * 8
    return (f"<span class='bar' style='width:{width:.2f}em'></span> {share:.0%}", "l")


def _score_section(scores: dict[str, float]) -> str:
    rows = [[SCORE_ROWS.get(k, (k, ""))[0], (html.escape(score_text(k, float(v))), ""),
             SCORE_ROWS.get(k, (k, ""))[1]] for k, v in scores.items()]
    return _table(["column", "value", "what it measures"], rows)


def _interval_note(confidence: dict[str, Any]) -> str:
    """SQ's interval from resampling documents, or why there is none."""
    if not confidence:
        return ""
    if not confidence["available"]:
        return f'<p class="muted">Interval {html.escape(confidence["reason"])}.</p>'
    iv = confidence["intervals"].get("signal_quality")
    if iv is None:
        return ('<p class="muted">No interval is shown: SQ reads hidden checkpoints in this '
                "competition.</p>")
    return (f"<p>{confidence['level']:.0%} interval of SQ over resampled documents: "
            f"{iv['low']:.4f} to {iv['high']:.4f} ({int(confidence['replicates']):,} "
            "replicates). It estimates the SQ of your task with unlimited documents of the "
            "same kind; the noise of a finite set lowers SQ, so the interval can sit above "
            "the measured value.</p>")


def _sq_section(sq: dict[str, Any], confidence: dict[str, Any]) -> str:
    rows = [[m, int(r["n"]), r["monotonicity"], r["smoothness"], r["sq"],
             "" if r["state"] == "ok" else r["state"]]
            for m, r in sq.get("models", {}).items()]
    return _table(["model", "checkpoints", "monotonicity", "smoothness", "SQ", "note"],
                  rows) + _interval_note(confidence)


def _rc_section(rc: dict[str, Any]) -> str:
    intro = (f"<p>{html.escape(rc['state'] if rc['state'] != 'ok' else 'Measured')}. Models: "
             f"{html.escape(', '.join(rc.get('models', [])))}. For each later checkpoint, the "
             "share of model pairs still in the order they had at the reference point "
             "(values at hidden checkpoints are not shown).</p>")
    rows = [[c["checkpoint"], tokens(float(c["tokens_b"])), _share_bar(float(c["agreement"]))]
            for c in rc.get("checkpoints", [])]
    return intro + (_table(["checkpoint", "tokens", "pairs in the early order"], rows)
                    if rows else "")


def _cs_section(cs: dict[str, Any]) -> str:
    intro = (f"<p>{html.escape(cs['state'] if cs['state'] != 'ok' else 'Measured')}. Science "
             f"model {html.escape(str(cs.get('science_model')))} against web-only model "
             f"{html.escape(str(cs.get('web_model')))}: {int(cs.get('wins', 0))} wins, "
             f"{int(cs.get('ties', 0))} ties, {int(cs.get('losses', 0))} losses.</p>")
    rows = [[c["checkpoint"], tokens(float(c["tokens_b"])),
             (html.escape(c["result"]), f"l {c['result']}")] for c in cs.get("checkpoints", [])]
    return intro + (_table(["checkpoint", "tokens", "science model"], rows) if rows else "")


USE = {"gate": "a failure sets the score to 0", "required": "must be measured; a failure "
       "sets the score to 0", "report": "shown only", "off": "not run"}


def _checks_section(gates: list[dict[str, Any]]) -> str:
    def result(g: dict[str, Any]) -> str:
        if g["value"] is None:
            return "not measured" if g["mode"] != "off" else "—"
        return f"{float(g['value']):.3f}"

    def threshold(g: dict[str, Any]) -> str:
        op = "≥" if g.get("higher_is_better", True) else "≤"
        return f"{op} {float(g['threshold']):.3f}"

    rows = [[g["name"], USE.get(g["mode"], g["mode"]), result(g), threshold(g),
             yes_no(g["passed"]), g["reason"]] for g in gates]
    return _table(["check", "use", "value", "to pass", "passed", "note"], rows)


def render_report(*, scores: dict[str, float], details: dict[str, Any],
                  public_curves: list[Curve], confidence: dict[str, Any] | None = None,
                  extra_sections: list[tuple[str, str]] = ()) -> str:
    """The whole page. `public_curves` must hold public points only; `confidence` is the
    participant view of the intervals (confidence.participant_view), never the details'."""
    sub = details.get("submission", {})
    n_docs = sub.get("n_docs")
    parts = [f"<h1>E2LM results: {html.escape(str(sub.get('task', 'submission')))}</h1>",
             f'<p class="muted">metric {html.escape(str(sub.get("metric", "")))} · '
             f'{f"{int(n_docs):,}" if n_docs is not None else "?"} documents · fingerprint '
             f'{html.escape(str(sub.get("fingerprint", ""))[:12])}</p>']
    for note in details.get("notes", []):
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    sections = [
        ("Score", _score_section(scores)),
        ("Curves on the public checkpoints",
         _img(_plot_public_curves(public_curves, str(sub.get("metric", "metric"))))),
        ("Signal quality", _sq_section(details["signal_quality"], confidence or {})),
        ("Ranking consistency", _rc_section(details["ranking_consistency"])),
        ("Compliance with scientific knowledge", _cs_section(details["scientific_compliance"])),
        ("Validation checks", _checks_section(details.get("gates", []))),
        *extra_sections,
    ]
    parts += [f"<h2>{html.escape(title)}</h2>{body}" for title, body in sections]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>E2LM results</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
