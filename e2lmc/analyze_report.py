"""The item-analysis report: markdown with three figures, and the per-item table.

- heatmap.png: items x public checkpoints (every model, training order), kept items on
  top: the per-item learning curves at a glance;
- curves.png: each model's curve on all items (dashed) and on the kept ones (solid), the
  fit architecture beside the held-out one;
- sweep.png: SQ against the number of kept items on both architectures, which shows
  where choosing on the fit models starts to fit noise;
- items.csv: one row per item with its statistics, flags and whether it is kept.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from e2lmc.item_stats import FLAGS, ItemStats, finite_rows
from e2lmc.outcomes import Outcomes
from e2lmc.subset import Selection, Split

HEATMAP_ROWS = 1500  # more items than this are averaged in bands (a figure has no more pixels)
LISTED = 20  # doc ids listed per flag in the markdown


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(path: Path, o: Outcomes, models: list[str], sel: Selection) -> None:
    plt = _plt()
    kept = [j for j in sel.order if sel.keep[j]]
    order = np.array(kept + [j for j in sel.order if not sel.keep[j]], dtype=np.int64)
    blocks = [(m, finite_rows(o, m)) for m in models]
    cols = [i for _, rows in blocks for i in rows]
    img = o.value[np.ix_(cols, order)].T.astype(np.float64)
    band = max(1, -(-len(order) // HEATMAP_ROWS))
    img = np.add.reduceat(img, np.arange(0, len(order), band), axis=0) / np.diff(
        np.r_[np.arange(0, len(order), band), len(order)])[:, None]
    fig, ax = plt.subplots(figsize=(10, 7))
    shown = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0, vmax=1)
    ax.axhline(len(kept) / band - 0.5, color="red", lw=1.5)
    edges = np.cumsum([len(rows) for _, rows in blocks])
    for x in edges[:-1]:
        ax.axvline(x - 0.5, color="white", lw=1)
    ax.set_xticks(edges - np.array([len(r) for _, r in blocks]) / 2 - 0.5,
                  [m for m, _ in blocks], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"items, kept above the red line ({len(kept)}), then by trend"
                  + (f"; bands of {band}" if band > 1 else ""))
    ax.set_title("value of each item at each public checkpoint (training order per model)")
    fig.colorbar(shown, ax=ax, fraction=0.03, label="value")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(path: Path, o: Outcomes, split: Split, sel: Selection) -> None:
    plt = _plt()
    groups = [("fit", split.fit_arch, split.fit), ("held out", split.held_arch, split.held)]
    groups = [g for g in groups if g[2]]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    full = o.value.mean(axis=1, dtype=np.float64)
    sub = o.value[:, sel.keep].mean(axis=1, dtype=np.float64)
    for ax, (role, arch, models) in zip(axes[0], groups):
        for k, m in enumerate(models):
            rows = finite_rows(o, m)
            x = [o.checkpoints[i].tokens_b for i in rows]
            colour = f"C{k}"
            ax.plot(x, full[rows], "--", color=colour, alpha=0.6, label=f"{m}, all")
            ax.plot(x, sub[rows], "-o", color=colour, ms=3, label=f"{m}, kept")
        key = "fit" if role == "fit" else "held"
        ax.set_title(f"{arch} ({role}): SQ {_fmt(sel.full[key])} -> {_fmt(sel.subset[key])}")
        ax.set_xlabel("training tokens (B)")
        ax.set_ylabel("metric")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(path: Path, split: Split, sel: Selection) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(sel.sizes, sel.fit_sq, label=f"{split.fit_arch} (chooses)")
    if split.held:
        ax.plot(sel.sizes, sel.held_sq, label=f"{split.held_arch} (held out)")
    ax.axvline(int(sel.keep.sum()), color="grey", ls=":", label="proposed subset")
    ax.set_xlabel("kept items (best trend on the fit models first)")
    ax.set_ylabel("SQ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_items(path: Path, o: Outcomes, stats: ItemStats, sel: Selection) -> None:
    rank = np.empty(len(sel.order), dtype=np.int64)
    rank[sel.order] = np.arange(1, len(sel.order) + 1)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "doc_id", "kept", "rank", "fit_trend", "trend", "flip_rate",
                    "first", "last", "discrimination", *FLAGS])
        for j, (task, doc) in enumerate(o.items):
            w.writerow([task, doc, int(sel.keep[j]), int(rank[j]),
                        *(f"{x[j]:.4f}" for x in (sel.trend, stats.trend, stats.flip_rate,
                                                  stats.first, stats.last,
                                                  stats.discrimination)),
                        *(int(stats.flags[f][j]) for f in FLAGS)])


def verdict(sel: Selection) -> str:
    full, sub = sel.full["held"], sel.subset["held"]
    if full is None or sub is None:
        return ("No other architecture in this output: the subset is not validated. "
                "Evaluate the public checkpoints of both architectures before trusting it.")
    if sub > full:
        return ("The gain holds on the held-out architecture: the kept items carry a signal "
                "that models the choice never saw learn too.")
    return ("The gain does not hold on the held-out architecture: the subset fits noise of "
            "the fit models. Keep the full task, or fix the flagged items by hand.")


def markdown(summary: dict[str, Any], o: Outcomes, stats: ItemStats, split: Split,
             sel: Selection) -> str:
    n, k = len(o.items), int(sel.keep.sum())
    lines = [
        f"# Item analysis: {summary['task']}", "",
        f"{n} items over the public checkpoints of {len(stats.models)} models "
        f"({', '.join(stats.models)}); ingestion output `{summary['res']}`.", "",
        "## The proposed subset", "",
        f"Items ranked by their trend on the {split.fit_arch} models; the {k} best kept "
        f"(the size with the highest SQ there, at least {summary['min_docs']}). SQ is the "
        "official formula with the scoring configuration's checkpoint selection.", "",
        f"| SQ | all {n} items | kept {k} items |", "|---|---|---|",
        f"| {split.fit_arch} (chooses the subset) | {_fmt(sel.full['fit'])} | "
        f"{_fmt(sel.subset['fit'])} |",
    ]
    if split.held:
        lines.append(f"| {split.held_arch} (held out) | {_fmt(sel.full['held'])} | "
                     f"{_fmt(sel.subset['held'])} |")
    lines += ["", verdict(sel), ""]
    docs = summary["documents"]
    if docs["all"] != n:
        lines += [f"{n - docs['all']} items repeat another item's prompt and choices, and the "
                  f"ingestion counts such repeats once: {docs['all']} documents in all, "
                  f"{docs['kept']} kept (the minimum of {summary['min_docs']} counts "
                  "documents).", ""]
    if not summary["curve_is_item_mean"]:
        lines += ["Note: the task's metric is not the mean of its per-item values (a group "
                  "averaged by subtask, say), so these curves are the items' mean, not the "
                  "exact metric.", ""]
    lines += ["![curves before and after](curves.png)", "", "![SQ by subset size](sweep.png)",
              "", "## Items", "", "| flag | items | meaning |", "|---|---|---|"]
    meaning = {"never_learned": "0 at every checkpoint of every model",
               "always_right": "1 at every checkpoint of every model",
               "noisy": "flips at half the steps or more",
               "anti_correlated": "gets worse with training"}
    for f in FLAGS:
        lines.append(f"| {f} | {int(stats.flags[f].sum())} | {meaning[f]} |")
    disc = stats.discrimination
    mean_disc = float(np.nanmean(disc)) if np.isfinite(disc).any() else None
    lines += ["", f"Mean discrimination (largest minus smallest models, later public "
                  f"checkpoints): {_fmt(mean_disc)}; items where the smallest models do "
                  f"better: {int((disc < 0).sum())}.", ""]
    for f in FLAGS:
        ids = [f"{o.items[j][0]}:{o.items[j][1]}" for j in np.flatnonzero(stats.flags[f])]
        if ids:
            more = f" and {len(ids) - LISTED} more" if len(ids) > LISTED else ""
            lines.append(f"- {f}: {', '.join(ids[:LISTED])}{more}")
    lines += ["", "![items x checkpoints](heatmap.png)", "", "## Files", "",
              "- `items.csv`: every item's statistics, flags, rank and whether it is kept;",
              "- `analysis.json`: the numbers above;"]
    if summary.get("filtered_submission"):
        lines.append(f"- `{summary['filtered_submission']}`: the submission keeping only the "
                     "kept items (a folder and a zip), checked as the ingestion checks it.")
    return "\n".join(lines) + "\n"


def write_report(out: Path, summary: dict[str, Any], o: Outcomes, stats: ItemStats,
                 split: Split, sel: Selection) -> Path:
    heatmap(out / "heatmap.png", o, stats.models, sel)
    curves(out / "curves.png", o, split, sel)
    sweep(out / "sweep.png", split, sel)
    write_items(out / "items.csv", o, stats, sel)
    path = out / "report.md"
    path.write_text(markdown(summary, o, stats, split, sel), encoding="utf-8")
    return path
