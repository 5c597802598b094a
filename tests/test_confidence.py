"""Intervals from resampling documents: coverage on curves of known noise, the cases with no
interval, the scoring program's files, and `e2lmc rank`'s separability."""

import json

import numpy as np
import pytest
from test_scoring_program import make_res

from e2lmc.cli import main
from e2lmc.outcomes import CheckpointRef, Outcomes
from e2lmc.scoring.confidence import (KEYS, NO_OUTCOMES, NOT_A_MEAN, NOT_COVERED,
                                      SWITCHED_OFF, bootstrap, interval, reflect,
                                      replicate_curves, resample_counts)
from e2lmc.scoring.config import CheckpointFilter, ModelSelector, SQConfig
from e2lmc.scoring.curves import Curve, Point
from e2lmc.scoring.program import score
from e2lmc.scoring.rank import Entry, prob_higher, rank
from e2lmc.scoring.sq import signal_quality, sq_curve

N_CK = 14  # the official SQ curve length
SQ_ONLY = SQConfig(models=ModelSelector(names=["m"]), checkpoints=CheckpointFilter(stage=None))


def sq_of(curves: dict[str, Curve]) -> dict[str, float]:
    return {"signal_quality": signal_quality(curves, SQ_ONLY)["value"]}


def true_curve(wiggle: float = 0.01) -> np.ndarray:
    """Accuracy rising 0.30 -> 0.45 with a fixed wiggle, so that SQ is below 1."""
    c = np.arange(N_CK)
    return 0.30 + 0.15 * c / (N_CK - 1) + wiggle * np.sin(1.7 * c)


def draw_documents(mu: np.ndarray, n: int, churn: float, rng: np.random.Generator) -> np.ndarray:
    """0/1 outcomes of n documents drawn from a population whose mean at checkpoint i is
    exactly mu[i]: a document is learned once mu passes its difficulty, and with
    probability `churn` its outcome at a checkpoint is drawn afresh (Bernoulli(mu[i]))."""
    learned = rng.random(n)[None, :] < mu[:, None]
    fresh = rng.random((len(mu), n)) < mu[:, None]
    return np.where(rng.random((len(mu), n)) < churn, fresh, learned).astype(np.float32)


def one_model(value: np.ndarray, curve_values: np.ndarray | None = None):
    """Curves and outcomes of a single model `m`, its metric the documents' mean."""
    refs = [CheckpointRef("m", f"iter_{i:02d}", "public", float(i + 1)) for i in range(len(value))]
    out = Outcomes(refs, [("t", j) for j in range(value.shape[1])], value,
                   np.full_like(value, np.nan))
    means = out.curves() if curve_values is None else curve_values
    points = [Point(r.checkpoint, r.tokens_b, r.stage, float(v)) for r, v in zip(refs, means)]
    return {"m": Curve("m", {}, points)}, out


def test_intervals_cover_the_true_sq_and_checkpoint_means():
    """Over independent draws of 1,000 documents, the 95% interval of SQ holds the SQ of
    the population's curve, and each checkpoint's interval its mean, about 95% of the time
    (75 of 80 and 95% here; plain percentiles of the replicates would hold SQ in 6 of 80)."""
    mu = true_curve()
    truth = sq_curve(mu)["sq"]
    rng = np.random.default_rng(7)
    draws, replicates = 80, 100
    sq_hits = mean_hits = 0
    for d in range(draws):
        value = draw_documents(mu, 1000, churn=0.3, rng=rng)
        curves, outcomes = one_model(value)
        conf = bootstrap(curves, outcomes, sq_of, replicates=replicates, seed=d)
        iv = conf["intervals"]["signal_quality"]
        sq_hits += iv["low"] <= truth <= iv["high"]
        reps = replicate_curves(value, 400, seed=d)  # cheap: no scoring per replicate
        for i, m in enumerate(value.mean(axis=1, dtype=np.float64)):
            iv = interval(reflect(m, reps[i], 0.0, 1.0))
            mean_hits += iv["low"] <= mu[i] <= iv["high"]
    assert 0.88 <= sq_hits / draws <= 0.99, sq_hits / draws
    assert 0.92 <= mean_hits / (draws * N_CK) <= 0.98, mean_hits / (draws * N_CK)


def test_replicates_resample_documents_jointly_and_reproducibly():
    counts = resample_counts(50, 8, np.random.default_rng(0))
    assert counts.shape == (8, 50) and (counts.sum(axis=1) == 50).all()
    value = np.random.default_rng(1).random((3, 50)).astype(np.float32)
    value[2] = value[0]  # two checkpoints where every document scores the same
    reps = replicate_curves(value, 300, seed=4)
    assert np.array_equal(reps, replicate_curves(value, 300, seed=4))
    assert np.allclose(reps[0], reps[2])  # same documents on every checkpoint
    assert abs(reps[1].mean() - value[1].mean()) < 3 * value[1].std() / np.sqrt(50 * 300)
    binary = replicate_curves((value > 0.5).astype(np.float32), 300, seed=4)
    assert np.allclose(binary * 50, np.round(binary * 50))  # means of 50 drawn documents


def test_no_interval_without_a_mean_over_documents():
    value = draw_documents(true_curve(), 200, 0.3, np.random.default_rng(0))
    curves, outcomes = one_model(value)
    assert bootstrap(curves, None, sq_of) == {"available": False, "reason": NO_OUTCOMES}
    # a corpus-level metric (perplexity, F1 over the corpus) is not the documents' mean
    not_mean, _ = one_model(value, curve_values=value.mean(axis=1) ** 0.5)
    assert bootstrap(not_mean, outcomes, sq_of) == {"available": False, "reason": NOT_A_MEAN}
    # a checkpoint the outcomes lack cannot be resampled
    curves["m"].points.append(Point("iter_99", 99.0, "public", 0.5))
    assert bootstrap(curves, outcomes, sq_of) == {"available": False, "reason": NOT_COVERED}


def test_scoring_program_writes_intervals_and_shows_public_ones_only(tmp_path):
    res, _ = make_res(tmp_path, outcomes=True)
    score(res, tmp_path / "ref", tmp_path / "out")
    conf = json.loads((tmp_path / "out/scores_details.json").read_text())["confidence"]
    assert conf["available"] and conf["documents"] == 500 and set(conf["intervals"]) == set(KEYS)
    for key in KEYS:
        iv = conf["intervals"][key]
        assert 0.0 <= iv["low"] <= iv["high"] <= 1.0
        assert len(conf["replicate_scores"][key]) == conf["replicates"] == 1000
    sq = conf["intervals"]["signal_quality"]
    shown = f"interval of SQ over resampled documents: {sq['low']:.4f} to {sq['high']:.4f}"
    assert shown in (tmp_path / "out/detailed_results.html").read_text()
    assert sq["low"] < sq["high"]

    # SQ over hidden checkpoints too: its interval stays in the organizers' details
    ref = tmp_path / "ref/scoring.yaml"
    ref.write_text(ref.read_text().replace("checkpoints: {stage: public}",
                                           "checkpoints: {stage: null}"))
    score(res, tmp_path / "ref", tmp_path / "hidden_sq")
    conf = json.loads((tmp_path / "hidden_sq/scores_details.json").read_text())["confidence"]
    page = (tmp_path / "hidden_sq/detailed_results.html").read_text()
    assert conf["available"] and "interval of SQ over" not in page
    assert "No interval is shown: SQ reads hidden checkpoints" in page
    for iv in conf["intervals"].values():
        assert f"{iv['low']:.4f} to" not in page and f"to {iv['high']:.4f}" not in page


def test_scoring_program_says_why_there_is_no_interval(tmp_path):
    res, _ = make_res(tmp_path)  # an output without item_outcomes.parquet (an older run)
    score(res, tmp_path / "ref", tmp_path / "out")
    details = json.loads((tmp_path / "out/scores_details.json").read_text())
    assert details["confidence"] == {"available": False, "reason": NO_OUTCOMES}
    assert f"Interval {NO_OUTCOMES}." in (tmp_path / "out/detailed_results.html").read_text()


def test_scoring_yaml_sets_the_bootstrap(tmp_path):
    """`confidence` in scoring.yaml: replicates, seed and level are the organizers'; 0
    replicates switches the intervals off, with the reason."""
    res, _ = make_res(tmp_path, outcomes=True)
    ref = tmp_path / "ref/scoring.yaml"
    base = ref.read_text()
    for name, extra in (("few", "confidence: {replicates: 200, seed: 7, level: 0.9}\n"),
                        ("off", "confidence: {replicates: 0}\n")):
        ref.write_text(base + extra)
        score(res, tmp_path / "ref", tmp_path / name)
    few = json.loads((tmp_path / "few/scores_details.json").read_text())["confidence"]
    assert (few["replicates"], few["seed"], few["level"]) == (200, 7, 0.9)
    assert len(few["replicate_scores"]["score"]) == 200
    off = json.loads((tmp_path / "off/scores_details.json").read_text())["confidence"]
    assert off == {"available": False, "reason": SWITCHED_OFF}


def test_prob_higher_counts_pairs_and_ties():
    assert prob_higher(np.array([2.0, 3.0]), np.array([1.0])) == 1.0
    assert prob_higher(np.array([1.0]), np.array([1.0])) == 0.5
    # pairs: (2,1) > ; (2,2) tie ; (2,3) < ; (3,1) > ; (3,2) > ; (3,3) tie
    assert prob_higher(np.array([2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(4 / 6)


def entry(name: str, centre: float, spread: float | None) -> Entry:
    reps = None if spread is None else centre + spread * np.random.default_rng(
        len(name)).standard_normal(1000)
    iv = None if reps is None else interval(reps)
    return Entry(name, f"task_{name}", centre, iv, reps, "" if reps is not None else NOT_A_MEAN)


def test_rank_orders_by_score_and_separates_neighbours():
    rows = rank([entry("b", 0.50, 0.01), entry("a", 0.60, 0.01), entry("c", 0.495, 0.01),
                 entry("d", 0.40, None)])
    assert [r["folder"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[0]["separable_from_next"] and rows[0]["p_above_next"] > 0.999  # 10 sd apart
    assert not rows[1]["separable_from_next"] and 0.5 < rows[1]["p_above_next"] < 0.95
    assert rows[2]["p_above_next"] is None and rows[2]["separable_from_next"] is None
    assert rows[3]["p_above_next"] is None and rows[3]["reason"] == NOT_A_MEAN


def test_rank_command_on_scoring_outputs(tmp_path, capsys):
    folders = []
    for name, seed in (("first", 0), ("second", 1)):
        res, _ = make_res(tmp_path / name, seed=seed)
        score(res, tmp_path / name / "ref", tmp_path / name / "out")
        folders.append(str(tmp_path / name / "out"))
    details = tmp_path / "first/out/scores_details.json"
    doc = json.loads(details.read_text())
    doc["confidence"] = {"available": True, "level": 0.95, "replicates": 3,
                         "intervals": {"score": {"low": 0.1, "high": 0.2}},
                         "replicate_scores": {"score": [0.1, 0.15, 0.2]}}
    doc["scores"]["score"] = 0.99  # first on the board
    details.write_text(json.dumps(doc))
    assert main(["rank", *folders, "--json", str(tmp_path / "rank.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "interval"]
    assert lines[1].split()[:5] == ["1", "0.9900", "0.1000-0.2000", "-", "-"]
    assert lines[-1] == f"{folders[1]}: {NO_OUTCOMES}"
    ranked = json.loads((tmp_path / "rank.json").read_text())
    assert ranked["threshold"] == 0.95
    assert [r["folder"] for r in ranked["submissions"]] == folders
    assert main(["rank", str(tmp_path)]) == 2  # not a scoring output: one clear error
