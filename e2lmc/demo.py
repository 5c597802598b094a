"""`e2lmc demo`: the whole competition on a laptop, offline.

Build (or reuse) the demo suite, run an example submission over its checkpoints as the
ingestion program would, score the result as the scoring program would, and print the
leaderboard row with the paths of the report and the outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

from e2lmc.errors import UserError
from e2lmc.suite.examples import example_dir


def run_demo(output: Path, example: str = "science_cloze", micro: bool = False,
             suite_root: Path | None = None, progress: bool = True) -> dict:
    """Suite -> ingest -> score; returns {"scores", "paths", "seconds"}."""
    from e2lmc.ingestion.run import ingest
    from e2lmc.scoring.program import score
    from e2lmc.suite.build import build_suite

    submission = example_dir(example)  # validates the name before any long work
    seconds: dict[str, float] = {}
    t0 = time.time()
    manifest = build_suite(root=suite_root, micro=micro, progress=progress)
    suite = manifest.parent
    seconds["suite"] = time.time() - t0
    output = Path(output)
    res, scored = output / "ingestion", output / "scores"
    t0 = time.time()
    doc = ingest(submission, suite, res)
    if doc.get("status") == "failed":
        raise UserError(f"{res}: ingestion of example {example!r} failed: {doc.get('error')}")
    seconds["ingest"] = time.time() - t0
    t0 = time.time()
    scores = score(res, suite, scored)
    seconds["score"] = time.time() - t0
    paths = {"suite": suite, "submission": submission, "ingestion_output": res,
             "scores": scored / "scores.json", "report": scored / "detailed_results.html"}
    return {"scores": scores, "paths": paths, "seconds": seconds}


def format_row(example: str, scores: dict) -> str:
    keys = list(scores)
    head = " | ".join(["submission"] + keys)
    row = " | ".join([example] + [f"{scores[k]:.4f}" if isinstance(scores[k], float)
                                  else str(scores[k]) for k in keys])
    return f"{head}\n{row}"


def curve_table(ingestion_output: Path, suite: Path) -> str:
    """Each model's metric at its first and last public and its last hidden checkpoint:
    the three points that show whether the suite's curves behave (learning during the
    public stretch, larger models ahead at the end, the web model behind)."""
    from e2lmc.manifest import load_manifest
    from e2lmc.results import read_results

    values = {r.key: r.value for r in read_results(ingestion_output)}
    lines = ["model                 first public  last public  last hidden"]
    for m in load_manifest(suite).models:
        public = [c for c in m.checkpoints if c.stage == "public"]
        hidden = [c for c in m.checkpoints if c.stage == "hidden"]
        points = [public[0], public[-1], hidden[-1]]
        cells = [values.get(c.key) for c in points]
        lines.append(f"{m.name:20s}" + "".join(
            f"{'failed' if v is None else f'{v:.3f}':>13s}" for v in cells))
    return "\n".join(lines)


def cli_demo(args) -> int:
    result = run_demo(Path(args.output), example=args.example, micro=args.micro,
                      suite_root=Path(args.suite_dir) if args.suite_dir else None)
    print("\nLeaderboard row")
    print(format_row(args.example, result["scores"]))
    print(f"\nAccuracy of each model on {args.example} (the hidden column is never shown to "
          "participants)")
    print(curve_table(result["paths"]["ingestion_output"], result["paths"]["suite"]))
    print()
    for label, path in result["paths"].items():
        print(f"{label:17s} {path}")
    s = result["seconds"]
    print(f"\ntook {sum(s.values()):.0f} s (suite {s['suite']:.0f} s, ingest "
          f"{s['ingest']:.0f} s, score {s['score']:.0f} s)")
    return 0
