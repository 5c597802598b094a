"""Benchmark the evaluation engines per request type, every route timed in one run.

Three request types, each as a generated task over the same checkpoints:
  mc        5-shot multiple-choice cloze (4 choices; `loglikelihood`), `--items` documents;
  gen       5-shot question answering (`generate_until`, greedy, stop at a newline);
  rolling   wikitext-like pages (`loglikelihood_rolling`, word perplexity), some longer
            than the context window.
Four routes answer each task:
  (1) cli     one `python -m lm_eval --model hf ...` process per checkpoint (what the
              stock CLI does per checkpoint: load + evaluate, everything rebuilt);
  (2) hf      lm-eval's stock HFLM, all checkpoints in one process (`simple_evaluate`);
  (3) fast    the fast engine's FastLM in the same harness as (2): the engines compared
              alone (tokenization and plan kept across checkpoints in `shared`);
  (4) ingest  `e2lmc ingest --engine fast` on the task as a task-folder submission (the
              product route: requests rendered once in a confined task process, which
              also scores each checkpoint).
It prints, per request type, each route's wall time, the speed-up of the route over the
baselines (1) and (2) measured in the same run (baseline time / route time), the time
spent inside the engine where it is measured (FastLM's counters; for HFLM the time in its
request methods) with the same ratio against (2), and how far each route's task metric
is from stock HFLM's.

    python benchmarks/engine.py --grid tiny --items 2000 --checkpoints 3
    python benchmarks/engine.py --small --grid demo-micro --threads 1   # ~5 min on CPU
    python benchmarks/engine.py --types rolling --rolling-docs 200
    python benchmarks/engine.py --synthetic-1b --device cuda     # GPU: (2) vs (3)

`--synthetic-1b` builds randomly initialised Llamas shaped like the organizers' 1B model
(bf16) and MMLU-shaped token requests (14,042 documents x 4 choices, 57 subjects, one
5-shot prefix per subject), and times (2) and (3) per checkpoint. `--shape smoke` runs the
same code on a small model, to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TYPES = ("mc", "gen", "rolling")


@dataclass
class BenchTask:
    """One generated task: its lm-eval name, the metric compared, the two folders."""

    kind: str
    name: str
    metric: str
    label: str
    include: Path
    submission: Path


# -- inputs ----------------------------------------------------------------------------

def make_grid(kind: str, root: Path, n_checkpoints: int):
    """Checkpoints to evaluate: the tiny random grid, or the demo suite when available."""
    if kind == "tiny":
        from e2lmc.suite.tiny import make_tiny_grid

        return make_tiny_grid(root / "grid", n_models=1, n_checkpoints=n_checkpoints,
                              n_hidden=0).checkpoints
    try:
        from e2lmc.suite.build import build_suite
    except ImportError:
        sys.exit("the demo suite is not available in this checkout (e2lmc.suite.build); "
                 "use --grid tiny")
    from e2lmc.manifest import Manifest, load_manifest

    built = build_suite(micro=kind == "demo-micro")
    manifest = built if isinstance(built, Manifest) else load_manifest(built)
    return manifest.checkpoints[:n_checkpoints]


def _words(rng: random.Random, lo: int, hi: int) -> str:
    from e2lmc.suite.tiny import _WORDS

    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def mc_doc(rng: random.Random) -> dict[str, Any]:
    choices = [_words(rng, 1, 4) for _ in range(4)]
    return {"question": _words(rng, 6, 18), "choices": choices, "answer": rng.randrange(4)}


def gen_doc(rng: random.Random) -> dict[str, Any]:
    return {"question": _words(rng, 4, 14), "answer": _words(rng, 1, 3)}


def rolling_pages(n: int, max_words: int, seed: int) -> list[dict[str, Any]]:
    """Pages of science-and-web prose, lengths spread log-uniformly up to `max_words`
    (the longest take several context windows), like wikitext's documents."""
    from e2lmc.suite.corpora import documents
    from e2lmc.suite.world import build_world

    rng = random.Random(seed)
    stream = documents(build_world(), "science", seed)
    pages = []
    for _ in range(n):
        target = int(max_words ** rng.uniform(0.5, 1.0))
        text = ""
        while len(text.split()) < target:
            text += ("\n\n" if text else "") + next(stream)
        pages.append({"page": text})
    return pages


_DATA = """dataset_path: json
dataset_kwargs:
  data_files:
    train: {base}train.jsonl
    test: {base}test.jsonl
test_split: test
"""
_YAML = {
    "mc": """output_type: multiple_choice
training_split: train
fewshot_split: train
num_fewshot: 5
fewshot_config:
  sampler: first_n
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "gen": """output_type: generate_until
training_split: train
fewshot_split: train
num_fewshot: 5
fewshot_config:
  sampler: first_n
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
  - metric: chrf
""",
    "rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{page}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}
# chrF for generation: any change of a generated text moves it (exact match stays 0 on
# untrained models)
_METRIC = {"mc": "acc,none", "gen": "chrf,none", "rolling": "word_perplexity,none"}
_LABEL = {"mc": "multiple choice, 5-shot", "gen": "generate_until, 5-shot",
          "rolling": "loglikelihood_rolling"}


def write_task(folder: Path, kind: str, args, seed: int = 0) -> BenchTask:
    """The task of one request type, written twice: an lm-eval include folder (absolute
    data paths) and an e2lmc task-folder submission (relative)."""
    rng = random.Random(seed)
    if kind == "rolling":
        test = rolling_pages(args.rolling_docs, args.rolling_words, seed)
        train = test[:2]  # unused, but a split must not be empty
    else:
        make = mc_doc if kind == "mc" else gen_doc
        n = args.items if kind == "mc" else args.gen_items
        train, test = [make(rng) for _ in range(20)], [make(rng) for _ in range(n)]
    name = f"e2lmc_bench_{kind}"
    include, submission = folder / kind / "include", folder / kind / "submission"
    for d, base in ((include, f"{include}/"), (submission, "")):
        d.mkdir(parents=True, exist_ok=True)
        for split, docs in (("train", train), ("test", test)):
            (d / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
        body = _YAML[kind].format(max_gen_toks=args.max_gen_toks)
        (d / f"{name}.yaml").write_text(f"task: {name}\n" + _DATA.format(base=base) + body)
    (submission / "metadata.yaml").write_text(
        f"task_name: {name}\ntask_metric: {_METRIC[kind]}\n")
    return BenchTask(kind, name, _METRIC[kind], _LABEL[kind], include, submission)


# -- routes ----------------------------------------------------------------------------

@dataclass
class Outcome:
    """One route on one task: wall seconds, metric per checkpoint, engine seconds."""

    seconds: float
    values: list[float]
    engine_s: float | None = None
    counters: dict[str, float] | None = None


def _metric(results: dict[str, Any], task: BenchTask) -> float:
    return float(results["results"][task.name][task.metric])


def route_cli(checkpoints, task: BenchTask, args) -> Outcome:
    values = []
    t0 = time.perf_counter()
    for ck in checkpoints:
        pretrained, subfolder = ck.load_target()
        margs = f"pretrained={pretrained},dtype={args.dtype},max_length={args.max_length}"
        if subfolder:
            margs += f",subfolder={subfolder}"
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", margs,
                   "--include_path", str(task.include), "--tasks", task.name,
                   "--device", args.device, "--batch_size", str(args.hf_batch_size),
                   "--output_path", out]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            found = sorted(Path(out).rglob("results_*.json"))
            values.append(_metric(json.loads(found[-1].read_text()), task))
    return Outcome(time.perf_counter() - t0, values)


def _time_requests(lm: Any, clock: list[float]) -> None:
    """Add the time spent in the LM's request methods to clock[0]."""
    def timed(method: Callable) -> Callable:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                clock[0] += time.perf_counter() - t0
        return run

    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        setattr(lm, name, timed(getattr(lm, name)))


def route_hf(checkpoints, task: BenchTask, args) -> Outcome:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    values, clock = [], [0.0]
    t0 = time.perf_counter()
    tm = TaskManager(include_path=str(task.include), include_defaults=False)
    for ck in checkpoints:
        pretrained, subfolder = ck.load_target()
        lm = HFLM(pretrained=pretrained, subfolder=subfolder or "", device=args.device,
                  dtype=args.dtype, max_length=args.max_length, batch_size=args.hf_batch_size)
        _time_requests(lm, clock)
        values.append(_metric(simple_evaluate(model=lm, tasks=[task.name], task_manager=tm,
                                              verbosity="ERROR"), task))
    return Outcome(time.perf_counter() - t0, values, engine_s=clock[0])


def route_fast(checkpoints, task: BenchTask, args) -> Outcome:
    """The product route: `e2lmc ingest --engine fast` on the task-folder submission."""
    from e2lmc.ingestion.run import ingest
    from e2lmc.manifest import Defaults, Manifest, Model
    from e2lmc.results import read_results

    work = Path(tempfile.mkdtemp(prefix="e2lmc-bench-ingest-"))
    try:
        by_model: dict[str, list] = {}
        for ck in checkpoints:
            by_model.setdefault(ck.model, []).append(ck)
        models = [Model(name=m, size="s", arch="a", data="science", params=None,
                        checkpoints=tuple(cks)) for m, cks in by_model.items()]
        Manifest(path=None, models=models, defaults=Defaults(
            device=args.device, dtype=args.dtype, max_length=args.max_length,
            batch_tokens=args.batch_tokens)).write(work / "input" / "manifest.yaml")
        t0 = time.perf_counter()
        doc = ingest(task.submission, work / "input", work / "output", engine="fast",
                     device=args.device, log=lambda *a, **k: None)
        seconds = time.perf_counter() - t0
        if doc["status"] != "ok":
            sys.exit(f"ingestion failed: {doc.get('error')}")
        values = {r.key: r.value for r in read_results(work / "output")}
        counters = doc["engine"]["counters"]
        return Outcome(seconds, [values[ck.key] for ck in checkpoints],
                       engine_s=counters.get("seconds"), counters=counters)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def route_fastlm(checkpoints, task: BenchTask, args) -> Outcome:
    """FastLM in the harness of route (2), one `shared` dict across checkpoints."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from e2lmc.engine.fast import FastLM

    values, shared, counters = [], {}, {}
    t0 = time.perf_counter()
    tm = TaskManager(include_path=str(task.include), include_defaults=False)
    for ck in checkpoints:
        lm = FastLM.from_checkpoint(ck, device=args.device, dtype=args.dtype,
                                    max_length=args.max_length,
                                    batch_tokens=args.batch_tokens, shared=shared)
        values.append(_metric(simple_evaluate(model=lm, tasks=[task.name], task_manager=tm,
                                              verbosity="ERROR"), task))
        for k, v in lm.counters.items():
            counters[k] = counters.get(k, 0) + v
    return Outcome(time.perf_counter() - t0, values, engine_s=counters["seconds"],
                   counters=counters)


ROUTES = (("cli", "(1) lm_eval CLI per checkpoint", route_cli),
          ("hf", "(2) stock HFLM, one process", route_hf),
          ("fast", "(3) FastLM, one process", route_fastlm),
          ("ingest", "(4) e2lmc ingest --engine fast", route_fast))


def warm_up(task: BenchTask) -> None:
    """Load the task once untimed (imports, `datasets` cache), so that the route run first
    in this process does not pay for the ones after it."""
    from lm_eval.tasks import TaskManager

    TaskManager(include_path=str(task.include), include_defaults=False).load([task.name])


def run_task(checkpoints, task: BenchTask, args) -> dict[str, Outcome]:
    warm_up(task)
    out = {}
    for key, name, route in reversed(ROUTES):  # the quick routes first
        if key in args.skip:
            continue
        out[key] = route(checkpoints, task, args)
        print(f"  {task.kind}: {name} done in {out[key].seconds:.1f} s", flush=True)
    return out


# -- synthetic 1B-shaped run -----------------------------------------------------------

SHAPES = {
    "1b": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=20,
               num_key_value_heads=4, head_dim=64, intermediate_size=6144, vocab_size=65536),
    "smoke": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=65536),
}


def synthetic_requests(n_docs: int, n_subjects: int = 57, seed: int = 0,
                       vocab: int = 65536) -> list[tuple[list[int], list[int]]]:
    """MMLU-shaped token requests: a ~600-token 5-shot prefix per subject, a question of
    40-160 tokens, four answer choices of 1-12 tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prefixes = [rng.integers(10, vocab, int(rng.integers(450, 750))).tolist()
                for _ in range(n_subjects)]
    reqs = []
    for d in range(n_docs):
        ctx = prefixes[d % n_subjects] + rng.integers(10, vocab, int(rng.integers(40, 160))).tolist()
        for _ in range(4):
            reqs.append((ctx, rng.integers(10, vocab, int(rng.integers(1, 12))).tolist()))
    return reqs


def _word_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="w1", eos_token="w2",
                                   pad_token="w3", unk_token="w0")


def run_synthetic(args) -> None:
    import numpy as np
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import LlamaConfig, LlamaForCausalLM

    from e2lmc.engine.fast import FastLM

    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    reqs = synthetic_requests(args.items, vocab=shape["vocab_size"])
    tokenizer = _word_tokenizer(shape["vocab_size"])
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"synthetic {args.shape}: {args.items} docs x 4 choices = {len(reqs)} requests, "
          f"device {card}, {args.dtype}")
    shared: dict = {}
    for k in range(args.checkpoints):
        cfg = LlamaConfig(max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                          pad_token_id=3, tie_word_embeddings=False, **shape)
        torch.manual_seed(k)
        with torch.device(args.device):
            model = LlamaForCausalLM(cfg).to(dtype).eval()
        fast = FastLM(model, tokenizer, device=args.device, max_length=args.max_length,
                      batch_tokens=args.batch_tokens, shared=shared)
        _sync(args.device)
        t0 = time.perf_counter()
        out_fast = fast.score_tokens(reqs, plan_key="synthetic")
        _sync(args.device)
        t_fast = time.perf_counter() - t0
        line = (f"checkpoint {k}: fast {t_fast:.1f} s "
                f"(forwarded {fast.counters['tokens_forwarded']:,} / unique "
                f"{fast.counters['unique_tokens']:,} tokens; requested "
                f"{fast.counters['tokens_requested']:,})")
        if not args.skip_hf:
            hf = HFLM(pretrained=model, tokenizer=tokenizer, device=args.device,
                      max_length=args.max_length, batch_size=args.hf_batch_size)
            t0 = time.perf_counter()
            out_hf = hf._loglikelihood_tokens([((None, None), c, x) for c, x in reqs],
                                              disable_tqdm=True)
            _sync(args.device)
            t_hf = time.perf_counter() - t0
            a = np.array([o[0] for o in out_fast]).reshape(-1, 4)
            b = np.array([o[0] for o in out_hf]).reshape(-1, 4)
            same_pick = float((a.argmax(1) == b.argmax(1)).mean())
            line += (f"; stock HFLM {t_hf:.1f} s; speed-up {t_hf / t_fast:.1f}x; "
                     f"max |delta logprob| {np.abs(a - b).max():.3g}; "
                     f"same argmax choice {same_pick:.2%}")
        print(line, flush=True)
        del model, fast
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- report ---------------------------------------------------------------------------

def _ratio(baseline: Outcome | None, seconds: float | None, engine: bool = False) -> str:
    """Baseline time / route time: how many times faster the route is."""
    base = None if baseline is None else (baseline.engine_s if engine else baseline.seconds)
    return f"{base / seconds:.2f}x" if base and seconds else "-"


def _metric_gap(values: list[float], ref: list[float] | None) -> str:
    """Largest relative difference of a route's metric from stock HFLM's."""
    if ref is None:
        return "-"
    gap = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(values, ref))
    return "identical" if gap == 0 else f"{gap:.1e}"


def report(results: dict[str, dict[str, Outcome]], n_checkpoints: int) -> None:
    print(f"\n{'request type':24s} {'route':31s} {'wall s':>7s} {'vs CLI':>7s} "
          f"{'vs HFLM':>7s} {'engine s':>8s} {'vs HFLM':>7s}  metric vs HFLM")
    for kind, outcomes in results.items():
        cli, hf = outcomes.get("cli"), outcomes.get("hf")
        for n, (key, name, _) in enumerate(k for k in ROUTES if k[0] in outcomes):
            o = outcomes[key]
            engine = f"{o.engine_s:8.1f}" if o.engine_s is not None else f"{'-':>8s}"
            print(f"{_LABEL[kind] if n == 0 else '':24s} {name:31s} {o.seconds:7.1f} "
                  f"{_ratio(cli, o.seconds):>7s} {_ratio(hf, o.seconds):>7s} {engine} "
                  f"{_ratio(hf, o.engine_s, engine=True):>7s}  "
                  f"{_metric_gap(o.values, hf.values if hf else None)}")
        for key in ("fast", "ingest"):
            if key in outcomes:
                print(f"{'':24s} {key}: " + _counters_line(outcomes[key]))
    print(f"\n'vs X' = X's time / the route's time (the route's speed-up), same run, "
          f"{n_checkpoints} checkpoints; engine s = time inside the LM's request methods")


def _counters_line(o: Outcome) -> str:
    c = o.counters or {}
    return (f"{c.get('tokens_forwarded', 0):,.0f} tokens forwarded, "
            f"{c.get('unique_tokens', 0):,.0f} unique, {c.get('tokens_requested', 0):,.0f} "
            f"requested (no sharing); outside the engine {o.seconds - (o.engine_s or 0):.1f} s;"
            " metric " + " ".join(f"{v:.4g}" for v in o.values))


# -- main ------------------------------------------------------------------------------

def _small(args) -> None:
    """A CPU run of about five minutes: two checkpoints, small tasks (the rolling one at
    the competition's 100-document minimum)."""
    from e2lmc.ingestion.validate import MIN_DOCS

    args.checkpoints = min(args.checkpoints, 2)
    args.items = args.items or 300
    args.gen_items = min(args.gen_items, 300)
    args.rolling_docs = min(args.rolling_docs, MIN_DOCS)
    args.rolling_words = min(args.rolling_words, 1500)


def _threads(n: int | None) -> None:
    """Fix the CPU threads of this process and of the processes it starts."""
    if n:
        import torch

        torch.set_num_threads(n)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=["tiny", "demo", "demo-micro"], default="tiny")
    ap.add_argument("--types", default=",".join(TYPES),
                    help=f"request types to time, comma-separated (default {','.join(TYPES)})")
    ap.add_argument("--items", type=int, default=None,
                    help="multiple-choice documents (default 2000; 14042 with --synthetic-1b)")
    ap.add_argument("--gen-items", type=int, default=500, help="generate_until documents")
    ap.add_argument("--max-gen-toks", type=int, default=32)
    ap.add_argument("--rolling-docs", type=int, default=200, help="loglikelihood_rolling pages")
    ap.add_argument("--rolling-words", type=int, default=4000, help="longest page, in words")
    ap.add_argument("--small", action="store_true",
                    help="2 checkpoints, 300 mc and gen documents, 100 rolling pages of up "
                         "to 1,500 words: about 5 minutes on a 2-core CPU")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--hf-batch-size", type=int, default=32)
    ap.add_argument("--skip-cli", action="store_true", help="skip route (1)")
    ap.add_argument("--skip-hf", action="store_true", help="skip route (2)")
    ap.add_argument("--skip-ingest", action="store_true", help="skip route (4)")
    ap.add_argument("--synthetic-1b", action="store_true")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.skip = {k for k, flag in (("cli", args.skip_cli), ("hf", args.skip_hf),
                                   ("ingest", args.skip_ingest)) if flag}
    _threads(args.threads)
    if args.synthetic_1b:
        args.items = args.items or 14042
        run_synthetic(args)
        return
    if args.small:
        _small(args)
    args.items = args.items or 2000
    kinds = [k for k in args.types.split(",") if k]
    if set(kinds) - set(TYPES):
        ap.error(f"--types: choose among {', '.join(TYPES)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        checkpoints = make_grid(args.grid, tmp_path, args.checkpoints)
        tasks = [write_task(tmp_path / "tasks", kind, args) for kind in kinds]
        print(f"grid {args.grid}: {len(checkpoints)} checkpoints; device {args.device}, "
              f"{args.dtype}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"mc {args.items} docs, gen {args.gen_items} docs (max {args.max_gen_toks} "
              f"tokens), rolling {args.rolling_docs} pages (up to {args.rolling_words} words)",
              flush=True)
        results = {task.kind: run_task(checkpoints, task, args) for task in tasks}
    report(results, len(checkpoints))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
