"""The leakage check: true leaks are caught, listed options and trivial answers are not."""

from __future__ import annotations

import pytest

from e2lmc.results import Item
from e2lmc.scoring.combine import MEASURED, NOT_MEASURED, OFF, apply_gates
from e2lmc.scoring.config import LeakageConfig
from e2lmc.scoring.leakage import check_item, check_leakage, normalize

MC = ["Paris", "London", "Berlin", "Rome"]
LETTERED = "Question: Which organelle makes ATP?\nA. ribosome\nB. mitochondria\n" \
           "C. nucleus\nD. vacuole\nAnswer:"


def item(prompt: str, gold: str, choices=None, doc_id: int = 0) -> Item:
    return Item(task="t", doc_id=doc_id, prompt=prompt, gold=gold, choices=choices,
                gold_index=choices.index(gold) if choices and gold in choices else None)


def test_normalize():
    assert normalize("  The MITOCHONDRIA,\n is—an organelle! ") == "mitochondria is organelle"


@pytest.mark.parametrize("it", [
    item("The capital of France is Paris. What is the capital of France?", "Paris", MC),
    item("Question: Water (H2O) boils at 100 degrees Celsius at sea level. At what "
         "temperature does water boil?\nAnswer:", "100 degrees Celsius"),
    item("Hint: the answer is the MITOCHONDRIA.\nQuestion: Which organelle makes ATP?",
         "the mitochondria"),
    # lists the options, but says the answer once more
    item(LETTERED.replace("Question:", "Note: mitochondria make ATP.\nQuestion:"),
         "mitochondria", ["ribosome", "mitochondria", "nucleus", "vacuole"]),
], ids=["stated-fact", "cloze", "normalized", "listed-but-repeated"])
def test_true_leaks(it):
    v = check_item(it)
    assert v.checked and v.leaked, v.why


@pytest.mark.parametrize("it", [
    item("Which is heavier, a brick or a feather?", "a brick", ["a brick", "a feather"]),
    item(LETTERED, "mitochondria", ["ribosome", "mitochondria", "nucleus", "vacuole"]),
    item("Compare: is Paris or London further north?", "London", ["Paris", "London"]),
    item("What forms during the ionization of table salt in water?", "ion", None),
    item("What is the capital of France?", "Paris", MC),
], ids=["comparison", "lettered-options", "two-options", "substring-only", "clean"])
def test_no_false_alarm_when_checked(it):
    v = check_item(it)
    assert not v.leaked, v.why


@pytest.mark.parametrize("gold", ["yes", "No", "True", "7", "A", "ab"])
def test_trivial_answers_are_not_checked(gold):
    v = check_item(item(f"Is it {gold}? {gold} or not?", gold))
    assert not v.checked and not v.leaked


def test_rate_examples_and_gate():
    items = [item(f"Question {i}: which gas do plants release?", "oxygen", doc_id=i)
             for i in range(8)]
    items += [item(f"Plants release oxygen ({i}). Which gas do plants release?", "oxygen",
                   doc_id=10 + i) for i in range(2)]
    items += [item("Is the sky blue?", "yes", doc_id=99)]
    cfg = LeakageConfig(threshold=0.1, mode="gate")
    gate = check_leakage(items, cfg)
    assert gate.name == "leakage" and not gate.higher_is_better
    assert gate.state == MEASURED and gate.value == pytest.approx(2 / 10)
    d = gate.detail
    assert (d["items"], d["checked"], d["skipped_trivial"], d["leaked"]) == (11, 10, 1, 2)
    assert [e["doc_id"] for e in d["examples"]] == [10, 11]
    assert gate.passed is False
    assert apply_gates(0.9, [gate])[0] == 0.0
    assert apply_gates(0.9, [check_leakage(items, LeakageConfig(threshold=0.25))])[0] == 0.9


def test_examples_are_capped():
    items = [item(f"Oxygen {i}: which gas?", "oxygen", doc_id=i) for i in range(20)]
    gate = check_leakage(items, LeakageConfig())
    assert gate.value == 1.0 and len(gate.detail["examples"]) == 5


def test_states_when_nothing_to_check():
    assert check_leakage([], LeakageConfig()).state == NOT_MEASURED
    gate = check_leakage([item("yes?", "yes")], LeakageConfig())
    assert gate.state == NOT_MEASURED and "too short" in gate.reason
    assert check_leakage([item("x", "y")], LeakageConfig(mode="off")).state == OFF
