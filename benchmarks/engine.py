"""Benchmark the evaluation engines on one grid and one 5-shot cloze task.

Three routes answer the same task on the same checkpoints, timed in one run:
  (1) cli   one `python -m lm_eval --model hf ...` process per checkpoint (stock route);
  (2) hf    lm-eval's stock HFLM, all checkpoints in one process (`simple_evaluate`,
            task index built once, only the benchmark task folder);
  (3) fast  `e2lmc ingest --engine fast` on the same task as a task-folder submission
            (the product route: requests rendered once in the task process, tokenized
            and planned once, shared prefixes forwarded once).
It prints wall time per route, the speed-up of (3) over (1) and (2), the tokens each
route forwards, and checks that the task metric is the same on every route.

    python benchmarks/engine.py --grid tiny --items 2000 --checkpoints 3
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK = "e2lmc_bench_cloze"


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


def write_cloze_task(folder: Path, n_items: int, seed: int = 0) -> tuple[Path, Path]:
    """A 5-shot multiple-choice cloze task over the tiny words, written twice: an lm-eval
    include folder (absolute data paths) and an e2lmc task-folder submission (relative)."""
    from e2lmc.suite.tiny import _WORDS

    rng = random.Random(seed)

    def doc() -> dict[str, Any]:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        choices = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
                   for _ in range(4)]
        return {"question": " ".join(words), "choices": choices, "answer": rng.randrange(4)}

    include, submission = folder / "include", folder / "submission"
    for d in (include, submission):
        d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 20), ("test", n_items)):
        lines = "".join(json.dumps(doc()) + "\n" for _ in range(n))
        for d in (include, submission):
            (d / f"{split}.jsonl").write_text(lines)
    for d, base in ((include, f"{include}/"), (submission, "")):
        (d / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {base}train.jsonl
    test: {base}test.jsonl
output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
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
""")
    (submission / "metadata.yaml").write_text(f"task_name: {TASK}\ntask_metric: acc,none\n")
    return include, submission


# -- routes ----------------------------------------------------------------------------

def _acc(results: dict[str, Any]) -> float:
    return float(results["results"][TASK]["acc,none"])


def route_cli(checkpoints, task_dir: Path, args) -> tuple[float, list[float]]:
    accs = []
    t0 = time.perf_counter()
    for ck in checkpoints:
        pretrained, subfolder = ck.load_target()
        margs = f"pretrained={pretrained},dtype={args.dtype},max_length={args.max_length}"
        if subfolder:
            margs += f",subfolder={subfolder}"
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", margs,
                   "--include_path", str(task_dir), "--tasks", TASK, "--device", args.device,
                   "--batch_size", str(args.hf_batch_size), "--output_path", out]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            found = sorted(Path(out).rglob("results_*.json"))
            accs.append(_acc(json.loads(found[-1].read_text())))
    return time.perf_counter() - t0, accs


def route_hf(checkpoints, task_dir: Path, args) -> tuple[float, list[float]]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    accs = []
    t0 = time.perf_counter()
    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    for ck in checkpoints:
        pretrained, subfolder = ck.load_target()
        lm = HFLM(pretrained=pretrained, subfolder=subfolder or "", device=args.device,
                  dtype=args.dtype, max_length=args.max_length, batch_size=args.hf_batch_size)
        accs.append(_acc(simple_evaluate(model=lm, tasks=[TASK], task_manager=tm,
                                         verbosity="ERROR")))
    return time.perf_counter() - t0, accs


def route_fast(checkpoints, submission: Path, args) -> tuple[float, list[float], dict]:
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
        doc = ingest(submission, work / "input", work / "output", engine="fast",
                     device=args.device, log=lambda *a, **k: None)
        seconds = time.perf_counter() - t0
        if doc["status"] != "ok":
            sys.exit(f"ingestion failed: {doc.get('error')}")
        values = {r.key: r.value for r in read_results(work / "output")}
        return seconds, [values[ck.key] for ck in checkpoints], doc["engine"]["counters"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


# -- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=["tiny", "demo", "demo-micro"], default="tiny")
    ap.add_argument("--items", type=int, default=None,
                    help="documents (default 2000; 14042 with --synthetic-1b)")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--hf-batch-size", type=int, default=32)
    ap.add_argument("--skip-cli", action="store_true", help="skip route (1)")
    ap.add_argument("--skip-hf", action="store_true", help="skip route (2)")
    ap.add_argument("--synthetic-1b", action="store_true")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.synthetic_1b:
        args.items = args.items or 14042
        run_synthetic(args)
        return
    args.items = args.items or 2000

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        checkpoints = make_grid(args.grid, tmp_path, args.checkpoints)
        task_dir, submission = write_cloze_task(tmp_path / "task", args.items)
        print(f"grid {args.grid}: {len(checkpoints)} checkpoints; task: {args.items} items, "
              f"5-shot cloze, 4 choices; device {args.device}, {args.dtype}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        t_fast, acc_fast, tok = route_fast(checkpoints, submission, args)
        rows.append(("(3) e2lmc ingest --engine fast", t_fast, acc_fast))
        print(f"(3) done in {t_fast:.1f} s", flush=True)
        if not args.skip_hf:
            t_hf, acc_hf = route_hf(checkpoints, task_dir, args)
            rows.append(("(2) stock HFLM, one process", t_hf, acc_hf))
            print(f"(2) done in {t_hf:.1f} s", flush=True)
        if not args.skip_cli:
            t_cli, acc_cli = route_cli(checkpoints, task_dir, args)
            rows.append(("(1) lm_eval CLI per checkpoint", t_cli, acc_cli))
            print(f"(1) done in {t_cli:.1f} s", flush=True)

    print()
    print(f"{'route':34s} {'wall s':>8s} {'s/ckpt':>7s} {'fast is':>9s}   acc per checkpoint")
    for name, t, accs in sorted(rows, key=lambda r: r[0]):
        print(f"{name:34s} {t:8.1f} {t / len(checkpoints):7.1f} {t / t_fast:8.1f}x   "
              + " ".join(f"{a:.4f}" for a in accs))
    same = all(r[2] == acc_fast for r in rows)
    print(f"task metric identical on every route: {same}")
    ratio = tok["tokens_forwarded"] / max(tok["unique_tokens"], 1)
    print(f"(3) tokens forwarded {tok['tokens_forwarded']:,} / unique {tok['unique_tokens']:,}"
          f" = {ratio:.3f}; stock routes forward about {tok['tokens_requested']:,} "
          f"(every request's context+continuation, no sharing)")


if __name__ == "__main__":
    main()
