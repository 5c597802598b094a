"""The leakage check: does an item's own prompt give its answer away?

An item leaks when its gold answer, normalized, appears as whole words in its prompt (the
few-shot examples are already excluded from `Item.prompt`). Two rules keep false alarms
out: answers too short or too generic to mean anything when found (yes, true, a single
digit, anything under `min_answer_chars`) are not checked, and when the prompt names most
of the answer options ("Which is heavier, a brick or a feather?", or lettered options) the
gold answer's presence proves nothing, unless the prompt repeats it more often than any
other option.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from e2lmc.results import Item
from e2lmc.scoring.combine import MEASURED, NOT_MEASURED, OFF, GateResult
from e2lmc.scoring.config import LeakageConfig

MAX_EXAMPLES = 5
EXAMPLE_CHARS = 400

TRIVIAL_ANSWERS = frozenset({
    "yes", "no", "true", "false", "maybe", "none", "neither", "both", "all", "correct",
    "incorrect", "right", "wrong", "unknown", "not", "positive", "negative", "neutral",
    "entailment", "contradiction", "none of above", "all of above",
})

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, no accents' variants, no punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _NON_WORD.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def is_trivial(norm_answer: str, min_chars: int) -> bool:
    """Answers whose presence in a prompt is no evidence of a leak."""
    return (len(norm_answer) < min_chars or norm_answer in TRIVIAL_ANSWERS
            or bool(re.fullmatch(r"\d", norm_answer)))


def count_in(norm_needle: str, norm_hay: str) -> int:
    """Whole-word occurrences of one normalized text in another."""
    if not norm_needle:
        return 0
    return len(re.findall(rf"(?<!\w){re.escape(norm_needle)}(?!\w)", norm_hay))


@dataclass
class ItemLeak:
    """The verdict on one item: `checked` False when the rules exclude it."""

    checked: bool
    leaked: bool
    why: str


def check_item(item: Item, min_answer_chars: int = 3) -> ItemLeak:
    gold = normalize(item.gold)
    if is_trivial(gold, min_answer_chars):
        return ItemLeak(False, False, "answer too short or generic to check")
    prompt = normalize(item.prompt)
    gold_hits = count_in(gold, prompt)
    if gold_hits == 0:
        return ItemLeak(True, False, "answer not in prompt")
    others = [normalize(c) for c in (item.choices or [])]
    others = [c for c in others if c and c != gold]
    if others:
        other_hits = [count_in(c, prompt) for c in others]
        present = 1 + sum(h > 0 for h in other_hits)
        if present >= max(2, (len(others) + 2) // 2):  # at least half of the options named
            if gold_hits > max(other_hits):
                return ItemLeak(True, True, "prompt lists the options but repeats the answer")
            return ItemLeak(True, False, "prompt lists the options")
    return ItemLeak(True, True, "answer appears in prompt")


def check_leakage(items: list[Item], cfg: LeakageConfig) -> GateResult:
    """The `leakage` gate: the share of checkable items whose prompt holds the answer."""
    gate = GateResult(name="leakage", mode=cfg.mode, threshold=cfg.threshold,
                      higher_is_better=False)
    if cfg.mode == OFF:
        gate.state, gate.reason = OFF, "leakage.mode is off"
        return gate
    if not items:
        gate.state, gate.reason = NOT_MEASURED, "the submission rendered no items"
        return gate
    verdicts = [check_item(it, cfg.min_answer_chars) for it in items]
    checked = sum(v.checked for v in verdicts)
    leaked = [(it, v) for it, v in zip(items, verdicts) if v.leaked]
    gate.detail = {
        "items": len(items), "checked": checked, "skipped_trivial": len(items) - checked,
        "leaked": len(leaked),
        "examples": [{"task": it.task, "doc_id": it.doc_id, "gold": it.gold, "why": v.why,
                      "prompt": it.prompt if len(it.prompt) <= EXAMPLE_CHARS
                      else it.prompt[:EXAMPLE_CHARS] + "..."}
                     for it, v in leaked[:MAX_EXAMPLES]],
    }
    if checked == 0:
        gate.state = NOT_MEASURED
        gate.reason = "every answer is too short or generic to check (e.g. yes/no, one letter)"
        return gate
    gate.state, gate.value = MEASURED, len(leaked) / checked
    return gate
