"""The leaderboard score: weighted SQ/RC/CS, then the validation gates.

A gate (alignment judge, leakage check) is a value plus an explicit state. A value that
was not measured is never a silent zero: `state` says why, and `mode` decides what
happens — `gate` zeroes the score when a measured value fails the threshold, `report`
only shows it, `required` fails the scoring when it could not be measured, `off` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from e2lmc.errors import UserError
from e2lmc.scoring.config import Weights

MEASURED, NOT_MEASURED, OFF = "measured", "not_measured", "off"
# scores.json has no null: a gate that was not measured shows this sentinel.
NOT_MEASURED_VALUE = -1.0


@dataclass
class GateResult:
    name: str
    mode: str
    threshold: float
    higher_is_better: bool  # alignment: accept rate >= threshold; leakage: rate <= threshold
    state: str = NOT_MEASURED
    value: float | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """None when there is nothing to judge (not measured, or off)."""
        if self.state != MEASURED or self.value is None:
            return None
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    @property
    def leaderboard_value(self) -> float:
        return float(self.value) if self.state == MEASURED and self.value is not None \
            else NOT_MEASURED_VALUE

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "state": self.state, "value": self.value,
                "threshold": self.threshold, "higher_is_better": self.higher_is_better,
                "passed": self.passed, "reason": self.reason, "detail": self.detail}


def weighted_score(sq: float, rc: float, cs: float, w: Weights) -> float:
    """0.5*SQ + 0.1*RC + 0.4*CS with the default weights."""
    return w.signal_quality * sq + w.ranking_consistency * rc + w.scientific_compliance * cs


def apply_gates(raw: float, gates: list[GateResult]) -> tuple[float, list[str]]:
    """The final score and the reasons it was changed (empty when untouched)."""
    notes: list[str] = []
    score = raw
    for g in gates:
        if g.mode == OFF:
            continue
        if g.mode == "required" and g.state != MEASURED:
            raise UserError(f"the {g.name} check is required by scoring.yaml but was not "
                            f"measured: {g.reason or g.state}")
        if g.mode in ("gate", "required") and g.passed is False:
            score = 0.0
            cmp = "below" if g.higher_is_better else "above"
            notes.append(f"{g.name} {g.value:.3f} is {cmp} the threshold {g.threshold:.3f}: "
                         "score set to 0")
        elif g.state != MEASURED:
            notes.append(f"{g.name} not measured ({g.reason or g.state}); no gate applied")
    return score, notes
