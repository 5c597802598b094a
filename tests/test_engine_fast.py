"""The fast engine answers exactly what lm-eval's stock HFLM answers (fp32, tiny models)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from e2lmc.engine import tokcache
from e2lmc.engine.fast import FastLM
from e2lmc.suite.tiny import _WORDS

TOL = 1e-4
MAX_LEN = 96


def _req(*args):
    return SimpleNamespace(args=args)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def random_requests(seed: int, n_docs: int = 24) -> list[tuple[str, str]]:
    """Few-shot prefixes shared by documents, choices sharing a document context, empty
    contexts, trailing spaces, contexts longer than the model window, 1..N-token answers."""
    rng = random.Random(seed)
    shots = ["".join(f"Q: {_words(rng, rng.randint(3, 9))}\nA: {_words(rng, 2)}\n\n"
                     for _ in range(rng.randint(1, 3))) for _ in range(3)]
    reqs: list[tuple[str, str]] = []
    for d in range(n_docs):
        kind = rng.random()
        if kind < 0.15:
            ctx = ""
        elif kind < 0.3:  # near or beyond max length: left truncation
            ctx = _words(rng, rng.randint(MAX_LEN - 10, MAX_LEN + 40))
        else:
            ctx = rng.choice(shots) + f"Q: {_words(rng, rng.randint(1, 10))}\nA:"
            if rng.random() < 0.3:
                ctx += rng.choice([" ", "  ", "\n"])
        for _ in range(rng.randint(1, 4)):
            reqs.append((ctx, " " + _words(rng, rng.randint(1, 4))))
    reqs.append(("", "atom"))
    reqs.append(("the", " " + _words(rng, MAX_LEN // 3)))  # long continuation
    reqs.append(reqs[0])  # exact duplicate
    return reqs


@pytest.fixture(scope="module")
def checkpoints(tiny_grid):
    return tiny_grid.checkpoints[:2]


def _hflm(ck, max_length=MAX_LEN):
    from lm_eval.models.huggingface import HFLM

    pretrained, subfolder = ck.load_target()
    return HFLM(pretrained=pretrained, subfolder=subfolder or "", device="cpu",
                dtype="float32", max_length=max_length, batch_size=4)


def _fast(ck, shared=None, **kw):
    kw.setdefault("max_length", MAX_LEN)
    return FastLM.from_checkpoint(ck, device="cpu", dtype="float32",
                                  shared={} if shared is None else shared, **kw)


def _assert_same(fast_out, ref_out):
    assert len(fast_out) == len(ref_out)
    diff = np.abs(np.array([a[0] for a in fast_out]) - np.array([b[0] for b in ref_out]))
    assert diff.max() < TOL, f"max |delta logprob| = {diff.max()}"
    assert [a[1] for a in fast_out] == [b[1] for b in ref_out]


@pytest.mark.parametrize("seed,row_tokens,batch_tokens", [
    (0, 2048, 65536),  # everything in few wide rows
    (1, 24, 256),  # tiny rows: few-shot prefixes and long contexts go through the kv cache
    (2, 64, 64),  # one row per batch, many batches
])
def test_loglikelihood_matches_hflm(checkpoints, seed, row_tokens, batch_tokens):
    reqs = [_req(*a) for a in random_requests(seed)]
    for ck in checkpoints:
        ref = _hflm(ck).loglikelihood(reqs, disable_tqdm=True)
        fast = _fast(ck, row_tokens=row_tokens, batch_tokens=batch_tokens)
        _assert_same(fast.loglikelihood(reqs), ref)
        c = fast.counters
        (plan,) = [v for k, v in fast._cache.items() if k[0] == "plan"]
        assert c["tokens_forwarded"] == c["unique_tokens"] + plan.inlined_tokens
        assert c["unique_tokens"] < c["tokens_requested"]
        if row_tokens < 32:  # shared prefixes were cached and reused, several levels deep
            assert plan.stats["groups"] > 3


def test_greedy_flags_true_and_false_match(checkpoints):
    """Continuations built from the model's own argmax make `is_greedy` true."""
    ck = checkpoints[0]
    hf = _hflm(ck)
    fast = _fast(ck, row_tokens=16, batch_tokens=128)
    rng = random.Random(5)
    pairs = []
    prefix = fast.tokenizer(_words(rng, 12))["input_ids"]
    for _ in range(10):
        ctx = prefix + fast.tokenizer(" " + _words(rng, rng.randint(1, 6)))["input_ids"]
        seq = list(ctx)
        with torch.no_grad():
            for _ in range(rng.randint(1, 4)):
                seq.append(int(fast.model(torch.tensor([seq])).logits[0, -1].argmax()))
        cont = seq[len(ctx):]
        pairs.append((ctx, cont))
        pairs.append((ctx, cont[:-1] + [(cont[-1] + 1) % len(fast.tokenizer)]))
    ref = hf._loglikelihood_tokens([((None, None), c, x) for c, x in pairs], disable_tqdm=True)
    out = fast.score_tokens(pairs)
    _assert_same(out, ref)
    assert sum(g for _, g in out) == 10


def _rolling_requests(seed: int) -> list[SimpleNamespace]:
    """Pages from a few words to several windows; some start alike (shared prefixes)."""
    rng = random.Random(seed)
    pages = [_words(rng, n) for n in (1, 3, 17, 40, MAX_LEN - 1, MAX_LEN, 2 * MAX_LEN + 5,
                                      3 * MAX_LEN)]
    pages += ["the atom " + _words(rng, n) for n in (20, 60, 130)] + ["", " ", "  \n"]
    return [_req(p) for p in pages]


def _assert_same_rolling(out: list[float], ref: list[float]) -> None:
    """Within TOL plus two float32 ulps of the total: HFLM sums each window in float32, so
    a window of many tokens is itself rounded to its ulp (1.2e-4 at a total of 1,000)."""
    ref_arr = np.array(ref, dtype=np.float64)
    tol = TOL + 2 * np.spacing(np.abs(ref_arr).astype(np.float32)).astype(np.float64)
    diff = np.abs(np.array(out) - ref_arr)
    assert (diff <= tol).all(), f"max |delta| = {diff.max()}"


@pytest.mark.parametrize("row_tokens,batch_tokens", [(32, 256), (2048, 65536), (8, 64)])
def test_rolling_matches_hflm(checkpoints, row_tokens, batch_tokens):
    """Long windows run as plain causal rows (their BOS forwarded again in front), short
    pages packed with a tree mask; both score what HFLM scores."""
    ck = checkpoints[0]
    reqs = _rolling_requests(3)
    ref = _hflm(ck).loglikelihood_rolling(reqs, disable_tqdm=True)
    lm = _fast(ck, row_tokens=row_tokens, batch_tokens=batch_tokens)
    out = lm.loglikelihood_rolling(reqs)
    _assert_same_rolling(out, ref)
    (plan,) = [v for k, v in lm._cache.items() if k[0] == "plan"]
    rows = [r for waves in plan.groups.values() for w in waves for b in w.batches for r in b]
    if row_tokens < MAX_LEN:  # first windows longer than a row: chains from the root
        assert any(r.causal for r in rows) and plan.inlined_tokens > 0
    c = lm.counters
    assert c["tokens_forwarded"] == c["unique_tokens"] + plan.inlined_tokens


ROLLING_TASK = """task: roll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{page}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def test_rolling_task_metrics_match_hflm(checkpoints, tmp_path):
    """A wikitext-like task through lm-eval's own evaluator, on both engines."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    pages = [r.args[0] for r in _rolling_requests(4) if r.args[0].strip()]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"page": p}) + "\n" for p in pages))
    (tmp_path / "roll.yaml").write_text(ROLLING_TASK.format(path=tmp_path / "test.jsonl"))
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    metrics = {}
    for name, lm in (("hf", _hflm(checkpoints[1])), ("fast", _fast(checkpoints[1], row_tokens=32))):
        res = simple_evaluate(model=lm, tasks=["roll"], task_manager=tm, verbosity="ERROR")
        metrics[name] = {k: v for k, v in res["results"]["roll"].items()
                         if k.split(",")[0] in ("word_perplexity", "byte_perplexity",
                                                "bits_per_byte")}
    assert metrics["fast"].keys() == metrics["hf"].keys() and len(metrics["hf"]) == 3
    for k, v in metrics["hf"].items():
        assert metrics["fast"][k] == pytest.approx(v, rel=1e-6), k


def test_generate_until_matches_hflm(checkpoints):
    ck = checkpoints[1]
    reqs = [_req("Q: what is the atom\nA:", {"until": ["\n"], "max_gen_toks": 12}),
            _req("the planet orbit", {"until": ["."], "max_gen_toks": 16, "do_sample": False}),
            _req("water", {"until": ["\n\n", "energy"]}),
            _req("red blue green small large fast slow", {"until": ["\n"], "max_gen_toks": 5})]
    ref = _hflm(ck, max_length=512).generate_until(reqs, disable_tqdm=True)
    out = _fast(ck, max_length=512, batch_tokens=1024).generate_until(reqs)
    assert out == ref
    assert any(out)


def _few_shot_generation(seed: int, n: int) -> list[SimpleNamespace]:
    """5-shot prompts (one shared prefix) with questions of varied length, in two groups
    of generation settings."""
    rng = random.Random(seed)
    prefix = "".join(f"Question: {_words(rng, rng.randint(3, 9))}\nAnswer: "
                     f"{_words(rng, rng.randint(1, 3))}\n\n" for _ in range(5))
    reqs = []
    for i in range(n):
        kw = {"until": ["\n"], "max_gen_toks": 8 + 4 * (i % 2), "do_sample": False}
        reqs.append(_req(prefix + f"Question: {_words(rng, rng.randint(1, 12))}\nAnswer:", kw))
    reqs.append(_req(prefix + "Q", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}))
    return reqs


@pytest.mark.parametrize("batch_tokens", [4096, 700])
def test_generate_until_shared_prefix_matches_hflm(checkpoints, batch_tokens):
    """The few-shot prefix is forwarded once per batch; every row continues after it."""
    ck = checkpoints[1]
    reqs = _few_shot_generation(9, 16)
    ref = _hflm(ck, max_length=512).generate_until(reqs, disable_tqdm=True)
    lm = _fast(ck, max_length=512, batch_tokens=batch_tokens)
    assert lm.generate_until(reqs) == ref
    assert any(ref)
    c = lm.counters
    assert c["tokens_forwarded"] < c["tokens_requested"]  # the prefix was shared


def test_encodings_shared_across_checkpoints(checkpoints, monkeypatch):
    """The second checkpoint reuses the first's tokenization and plan from `shared`."""
    reqs = [_req(*a) for a in random_requests(7, n_docs=8)]
    shared: dict = {}
    first = _fast(checkpoints[0], shared).loglikelihood(reqs)
    assert len(shared["fast_engine"]) == 1

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tokcache.Encoder, "encode_many", no_tokenizing)
    second = _fast(checkpoints[1], shared).loglikelihood(reqs)
    assert len(second) == len(first) and second != first  # other weights, same requests


def test_tokenizer_hash_is_content_based(checkpoints, tmp_path):
    from transformers import AutoTokenizer

    p0, s0 = checkpoints[0].load_target()
    p1, s1 = checkpoints[1].load_target()
    a = AutoTokenizer.from_pretrained(p0)
    b = AutoTokenizer.from_pretrained(p1)
    assert tokcache.tokenizer_hash(a) == tokcache.tokenizer_hash(b)
    b.add_tokens(["<new-token>"])
    assert tokcache.tokenizer_hash(a) != tokcache.tokenizer_hash(b)


def test_out_of_memory_batches_are_split(checkpoints, monkeypatch):
    ck = checkpoints[0]
    reqs = [_req(*a) for a in random_requests(11, n_docs=10)]
    ref = _fast(ck, row_tokens=32, batch_tokens=4096).loglikelihood(reqs)
    lm = _fast(ck, row_tokens=32, batch_tokens=4096)
    real = FastLM._forward
    calls = []

    def small_memory(self, rows, *a):
        calls.append(len(rows))
        if len(rows) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, rows, *a)

    monkeypatch.setattr(FastLM, "_forward", small_memory)
    _assert_same(lm.loglikelihood(reqs), ref)
    assert max(calls) > 1 and 1 in calls


def test_out_of_memory_generation_is_split(checkpoints, monkeypatch):
    from e2lmc.engine import generate

    ck = checkpoints[1]
    reqs = [_req(f"the planet {w}", {"until": ["."], "max_gen_toks": 6})
            for w in ("orbit", "mass", "energy", "light")]
    ref = _fast(ck, max_length=512).generate_until(reqs)
    real = generate._generate_batch
    calls = []

    def small_memory(lm, encs, *a):
        calls.append(len(encs))
        if len(encs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(lm, encs, *a)

    monkeypatch.setattr(generate, "_generate_batch", small_memory)
    assert _fast(ck, max_length=512).generate_until(reqs) == ref
    assert max(calls) > 1 and 1 in calls


def test_errors_that_are_not_memory_propagate(checkpoints, monkeypatch):
    lm = _fast(checkpoints[0])

    def broken(self, rows, *a):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(FastLM, "_forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        lm.loglikelihood([_req("a b", " c")])


def test_sliding_window_models_are_refused(checkpoints):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pretrained, subfolder = checkpoints[0].load_target()
    model = AutoModelForCausalLM.from_pretrained(pretrained)
    model.config.sliding_window = 32
    with pytest.raises(ValueError, match="sliding-window"):
        FastLM(model, AutoTokenizer.from_pretrained(pretrained), max_length=MAX_LEN)
    model.config.sliding_window = 4096  # wider than the context: nothing to reproduce
    assert FastLM(model, AutoTokenizer.from_pretrained(pretrained), max_length=MAX_LEN)


def test_bos_adding_tokenizer_matches_hflm(checkpoints):
    """A tokenizer that prepends BOS, and contexts that already start with the BOS text."""
    from lm_eval.models.huggingface import HFLM
    from tokenizers import processors
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pretrained, _ = checkpoints[0].load_target()
    tok = AutoTokenizer.from_pretrained(pretrained)
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    assert tok("the atom")["input_ids"][0] == tok.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(pretrained)
    reqs = [_req(*a) for a in random_requests(13, n_docs=10)]
    reqs += [_req(bos + "Q: the atom\nA:", " water"), _req(bos, " red"), _req("", bos + " red")]
    reqs += [_req("  ", " red"), _req("\n", " the atom")]  # whitespace context -> "" + BOS
    hf = HFLM(pretrained=model, tokenizer=tok, device="cpu", max_length=MAX_LEN, batch_size=4)
    ref = hf.loglikelihood(reqs, disable_tqdm=True)
    _assert_same(FastLM(model, tok, max_length=MAX_LEN, row_tokens=24).loglikelihood(reqs), ref)


def _raised(call) -> type | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc)
    return None


LONG = " " + " ".join(["w"] * (MAX_LEN + 10))


@pytest.mark.parametrize("method,args", [
    ("loglikelihood", ("  ", " a")),  # whitespace-only context: no context tokens
    ("loglikelihood", (" ", "a")),
    ("loglikelihood", ("\n", " the atom")),
    ("loglikelihood", ("  ", "")),
    ("loglikelihood", ("", "")),  # empty context and continuation
    ("loglikelihood", ("the atom", "")),  # empty continuation
    ("loglikelihood", ("the", LONG)),  # continuation longer than the model
    ("generate_until", ("the atom", "until newline")),  # settings not a dict
    ("generate_until", ("the atom", {"until": ["\n"], "max_gen_toks": MAX_LEN})),
])
def test_refuses_what_hflm_refuses(checkpoints, method, args):
    """Same exception type as HFLM, and before any forward pass of a valid request."""
    ck = checkpoints[0]
    hf_error = _raised(lambda: getattr(_hflm(ck), method)([_req(*args)], disable_tqdm=True))
    assert hf_error is not None
    lm = _fast(ck)
    valid = ("the", " atom") if method == "loglikelihood" else ("the", {"until": ["\n"]})
    assert _raised(lambda: getattr(lm, method)([_req(*valid), _req(*args)])) is hf_error
    assert lm.counters["tokens_forwarded"] == 0


def test_whitespace_context_is_refused_alone_not_its_neighbours(checkpoints):
    """Trailing whitespace of a real context still moves to the continuation."""
    ck = checkpoints[0]
    reqs = [_req("the atom ", "is"), _req("the atom\n\n", " water"), _req("", " ")]
    _assert_same(_fast(ck).loglikelihood(reqs), _hflm(ck).loglikelihood(reqs, disable_tqdm=True))
