"""The `e2lmc` command line: one entry point, one subcommand per job.

Each subcommand names the function that runs it as "module:function"; the module is
imported only when that subcommand runs, so `e2lmc score` never imports torch.
Exit status: 0 success, 2 user error (one clear line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from e2lmc import __version__
from e2lmc.errors import UserError


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="run a submission over the checkpoint grid")
    p.add_argument("--submission", required=True, help="submission zip or folder")
    p.add_argument("--input-data", required=True, help="folder holding manifest.yaml")
    p.add_argument("--output", required=True, help="ingestion output folder")
    p.add_argument("--engine", choices=["fast", "hf"], default=None,
                   help="evaluation engine (default: the manifest's, else fast)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="override the manifest's device policy")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly with status 'partial' after this many seconds")
    p.add_argument("--data-dir", default=None,
                   help="where worker-staged weights live (Codabench: /app/data)")
    p.set_defaults(handler="e2lmc.ingestion.run:cli_ingest")


def _add_stage(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage", help="download a manifest's hub checkpoints once, into the "
                                     "worker's data folder")
    p.add_argument("manifest", help="manifest.yaml (or the folder holding it)")
    p.add_argument("--data", required=True,
                   help="the folder the worker mounts read-only at /app/data")
    p.add_argument("--output", default=None,
                   help="also write a manifest whose hub checkpoints point at the staged copies")
    p.add_argument("--mount", default="/app/data",
                   help="where the worker mounts --data (paths written by --output)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be downloaded and its size; download nothing")
    p.set_defaults(handler="e2lmc.stage:cli_stage")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score an ingestion output")
    p.add_argument("--res", required=True, help="ingestion output folder")
    p.add_argument("--ref", required=True, help="folder holding scoring.yaml")
    p.add_argument("--output", required=True, help="where scores.json and the report go")
    p.set_defaults(handler="e2lmc.scoring.program:cli_score")

    p = sub.add_parser("score-curves", help="SQ of a benchmark in the published-curves format")
    p.add_argument("curves", help="curves JSON (notebook-5 format)")
    p.add_argument("--benchmark", required=True, help="benchmark key, e.g. anli_r3")
    p.add_argument("--models", default=None,
                   help="comma-separated model names (default: the arch1 models)")
    p.add_argument("--iteration-step", type=int, default=4000,
                   help="keep iterations that are multiples of this (0: keep all)")
    p.add_argument("--max-tokens-b", type=float, default=206.0,
                   help="keep checkpoints with at most this many billion tokens")
    p.add_argument("--min-tokens-b", type=float, default=None,
                   help="keep checkpoints with at least this many billion tokens")
    p.add_argument("--output", default=None, help="also write the numbers as JSON here")
    p.set_defaults(handler="e2lmc.scoring.curves_file:cli_score_curves")

    p = sub.add_parser("rank", help="rank scored submissions; say which leaderboard "
                                    "neighbours their intervals separate")
    p.add_argument("folders", nargs="+", metavar="DIR",
                   help="scoring output folders (each holding scores_details.json)")
    p.add_argument("--threshold", type=float, default=None,
                   help="separable when P(the higher one is higher) reaches this (0.95)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the ranking here")
    p.set_defaults(handler="e2lmc.scoring.rank:cli_rank")


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="per-item signal of an ingestion output, and a subset "
                                       "of the items with a better SQ")
    p.add_argument("--res", required=True, help="ingestion output folder")
    p.add_argument("--output", default=None, help="report folder (default: RES/../analysis)")
    p.add_argument("--submission", default=None,
                   help="the ingested submission: also write it filtered to the subset")
    p.add_argument("--ref", default=None, help="folder holding scoring.yaml (default: the "
                                               "default SQ selection)")
    p.add_argument("--fit-arch", default=None,
                   help="architecture that chooses the subset (default: the SQ selection's)")
    p.set_defaults(handler="e2lmc.analyze:cli_analyze")


def _add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suite", help="the embedded demo checkpoint suite")
    ssub = p.add_subparsers(dest="suite_command", required=True)
    b = ssub.add_parser("build", help="build (or reuse) the demo suite; prints its manifest")
    b.add_argument("--dir", default=None, help="cache root (default: ~/.cache/e2lmc/suite)")
    b.add_argument("--micro", action="store_true", help="tiny suite for tests (<60 s)")
    b.add_argument("--seed", type=int, default=None, help="override the suite seed")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(handler="e2lmc.suite.build:cli_suite_build")

    d = sub.add_parser("demo", help="suite -> ingest -> score on an example submission")
    d.add_argument("--output", default="out/demo", help="output folder")
    d.add_argument("--example", default="science_cloze", help="example submission name")
    d.add_argument("--micro", action="store_true", help="use the micro suite")
    d.add_argument("--suite-dir", default=None, help="suite cache root")
    d.set_defaults(handler="e2lmc.demo:cli_demo")


def _add_submission(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-submission", help="zip a task folder as a submission")
    p.add_argument("task_dir", help="folder with the task YAML(s), helpers and data")
    p.add_argument("--task-name", required=True, help="task or group to run")
    p.add_argument("--metric", required=True, help="results key to read, e.g. acc,none")
    p.add_argument("--output", required=True, help="zip to write")
    p.add_argument("--hf-token", default=None,
                   help="token to read a private dataset (stored in metadata.yaml only)")
    p.set_defaults(handler="e2lmc.ingestion.submission:cli_make_submission")

    j = sub.add_parser("judge", help="LLM-judge alignment check of rendered items")
    j.add_argument("--items", required=True, help="items.jsonl from an ingestion output")
    j.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint")
    j.add_argument("--model", default=None, help="judge model name")
    j.add_argument("--samples", type=int, default=None, help="items to sample (default 50)")
    j.add_argument("--seed", type=int, default=None, help="sampling seed")
    j.add_argument("--output", default=None, help="write verdicts as JSON here")
    j.add_argument("--cache-dir", default=None,
                   help="verdict cache (default: ~/.cache/e2lmc/judge)")
    j.set_defaults(handler="e2lmc.scoring.judge:cli_judge")


def _add_bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="the Codabench competition bundle")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    b = bsub.add_parser("build", help="build the upload zip")
    b.add_argument("--output", default="dist/e2lmc_bundle.zip", help="zip to write")
    b.add_argument("--judge-key-file", default=None,
                   help="organizer's file holding the judge API key, copied into reference data")
    b.add_argument("--root", default=None,
                   help="checkout holding competition.yaml (default: this package's checkout)")
    b.add_argument("--queue", default=None, metavar="VHOST",
                   help="your GPU queue's vhost, written into the bundle's competition.yaml")
    c = bsub.add_parser("check", help="check a bundle zip or folder against Codabench rules")
    c.add_argument("bundle", help="zip or folder")
    for parser in (b, c):
        parser.add_argument("--allow-default-queue", action="store_true",
                            help="accept a bundle without a queue (a CPU demo competition: "
                                 "Codabench's default queue stops every step after 600 s)")
    b.set_defaults(handler="e2lmc.bundle.build:cli_bundle_build")
    c.set_defaults(handler="e2lmc.bundle.check:cli_bundle_check")

    r = sub.add_parser("run-local", help="run a submission as the Codabench worker would")
    r.add_argument("--submission", required=True, help="submission zip")
    r.add_argument("--task", required=True, help="task name (input_data/<task>, reference_data/<task>)")
    r.add_argument("--bundle", default=".", help="bundle folder or zip (default: this repo)")
    r.add_argument("--docker", default=None, metavar="IMAGE", help="run each step in this image")
    r.add_argument("--gpus", action="store_true", help="request GPUs for the prediction step")
    r.add_argument("--workdir", default=None, help="where to lay out /app (default: temp)")
    r.add_argument("--input-data", default=None, help="override input_data/<task>")
    r.add_argument("--ref", default=None, help="override reference_data/<task>")
    r.add_argument("--data", default=None,
                   help="folder the worker mounts read-only at /app/data (staged weights)")
    r.add_argument("--judge-key-file", default=None,
                   help="judge API key file, copied into the reference data as the build does")
    r.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="time limit per step (default: the platform's, the shortest "
                        "execution_time_limit of the task's phases, at most 600 s without "
                        "a queue)")
    r.add_argument("--no-network", action="store_true",
                   help="Docker mode: run containers without network")
    r.add_argument("--user", default=None, help="Docker mode: run containers as this UID[:GID]")
    r.add_argument("--env", action="append", default=None, metavar="KEY=VALUE",
                   help="extra environment variable for the programs (repeatable)")
    r.set_defaults(handler="e2lmc.bundle.worker:cli_run_local")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2lmc",
        description="Evaluate lm-eval benchmarks over early-training checkpoints and score them.",
    )
    parser.add_argument("--version", action="version", version=f"e2lmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_ingest, _add_stage, _add_score, _add_analyze, _add_suite, _add_submission,
                _add_bundle):
        add(sub)
    return parser


def _resolve(handler: str):
    module, func = handler.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_resolve(args.handler)(args) or 0)
    except UserError as exc:
        print(f"e2lmc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"e2lmc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # internal failure: keep the traceback for the organizers
        traceback.print_exc()
        print(f"e2lmc {args.command}: internal error (see traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
