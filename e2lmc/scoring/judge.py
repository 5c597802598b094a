"""The alignment judge: an LLM decides whether sampled items need scientific knowledge.

Used by the scoring program (a gate on the leaderboard) and by `e2lmc judge`, which lets
participants check their items with their own key before submitting. Reproducible: the
sample depends only on the configured seed and the submission fingerprint, the request is
deterministic (temperature 0, versioned rubric), and verdicts are cached on disk so that
re-scoring a submission makes no calls. The API key is read here and handed to the client
only: messages built from errors never carry the server's text, which can echo the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from e2lmc.errors import UserError
from e2lmc.results import Item, iter_jsonl, write_json
from e2lmc.scoring.combine import MEASURED, NOT_MEASURED, OFF, GateResult
from e2lmc.scoring.config import JudgeConfig
from e2lmc.scoring.rubric import RESPONSE_SCHEMA, RUBRIC_VERSION, SYSTEM_PROMPT, render_item

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
MAX_EXAMPLES = 5
EXAMPLE_CHARS = 600
CLI_KEY_ENVS = ("E2LMC_JUDGE_API_KEY", "OPENAI_API_KEY")


class JudgeUnavailable(Exception):
    """The judge could not give verdicts; the message is safe to show (no key, no reply)."""


# --------------------------------------------------------------------------- the key


def resolve_api_key(cfg: JudgeConfig, ref_dir: Path | None) -> str | None:
    """The key from the environment variable, else from the key file in the reference data."""
    value = os.environ.get(cfg.api_key_env, "").strip()
    if value:
        return value
    if cfg.api_key_file and ref_dir is not None:  # no reference data: `e2lmc judge`
        path = Path(ref_dir) / cfg.api_key_file
        if not path.is_file():
            raise JudgeUnavailable(f"judge key file {path} not found; put the key there or "
                                   f"set {cfg.api_key_env}")
        value = path.read_text(encoding="utf-8", errors="replace").strip()
        if value:
            return value
        raise JudgeUnavailable(f"judge key file {path} is empty")
    return None


def _public_url(url: str | None) -> str:
    """The endpoint for messages, without any user:password part."""
    if not url:
        return "the default OpenAI endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------- sampling


def sample_items(items: list[Item], n: int, seed: int, fingerprint: str) -> list[Item]:
    """A sample that depends only on (seed, fingerprint, the set of items), not their order."""
    unique: dict[tuple[str, int], Item] = {}
    for it in items:
        unique.setdefault((it.task, it.doc_id), it)
    ordered = [unique[k] for k in sorted(unique)]
    if n <= 0 or n >= len(ordered):
        return ordered
    digest = hashlib.sha256(f"{seed}|{fingerprint}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    picked = sorted(rng.sample(range(len(ordered)), n))
    return [ordered[i] for i in picked]


# --------------------------------------------------------------------------- verdicts


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_OBJECT = re.compile(r"\{.*?\}", re.S)
_WORD = re.compile(r"\b(accept|reject)(?:ed|s)?\b", re.I)


def _verdict_of(value: Any) -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).strip().lower() == "verdict" and isinstance(v, str):
                v = v.strip().lower()
                if v in ("accept", "reject"):
                    return v.capitalize()
    return None


def parse_verdict(content: str | None) -> str | None:
    """Accept/Reject from a reply: strict JSON, JSON in code fences or in prose, or a lone
    word. None when the reply names neither, or both without a JSON verdict."""
    if not content:
        return None
    text = content.strip()
    candidates = [text] + _FENCE.findall(text) + _OBJECT.findall(text)
    for cand in candidates:
        try:
            verdict = _verdict_of(json.loads(cand))
        except (json.JSONDecodeError, TypeError):
            continue
        if verdict:
            return verdict
    words = {m.group(1).lower() for m in _WORD.finditer(text)}
    if len(words) == 1:
        return words.pop().capitalize()
    m = re.search(r"verdict\W{0,5}(accept|reject)", text, re.I)
    return m.group(1).capitalize() if m else None


class VerdictCache:
    """One small JSON file per verdict, written atomically (safe under threads)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.warned = False

    @staticmethod
    def key(model: str, text: str) -> str:
        raw = json.dumps([model, RUBRIC_VERSION, text], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, model: str, text: str) -> str | None:
        path = self._path(self.key(model, text))
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        verdict = doc.get("verdict") if isinstance(doc, dict) else None
        return verdict if verdict in ("Accept", "Reject") else None

    def put(self, model: str, text: str, verdict: str) -> None:
        """Best effort: a read-only or full disk costs future calls, never this run."""
        path = self._path(self.key(model, text))
        doc = {"verdict": verdict, "model": model, "rubric_version": RUBRIC_VERSION}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
        except OSError as exc:
            if not self.warned:
                log.warning("judge verdict cache %s not writable (%s); verdicts are not "
                            "cached", self.root, exc.strerror or type(exc).__name__)
                self.warned = True


# --------------------------------------------------------------------------- requests


class _Fatal(Exception):
    """Retrying cannot help (bad key, unknown model): stop every request."""


class _Caller:
    """Sends one item to the judge with retries; shared by the worker threads."""

    def __init__(self, client: Any, cfg: JudgeConfig):
        self.client = client
        self.cfg = cfg
        self.use_schema = True
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.error: str | None = None

    def fail(self, message: str) -> None:
        """Keep the first failure and stop the other requests: one dead endpoint or bad key
        fails them all, and hammering it would only waste the time budget."""
        with self.lock:
            if self.error is None:
                self.error = message
        self.stop.set()

    def _create(self, text: str, use_schema: bool) -> Any:
        kwargs: dict[str, Any] = {}
        if use_schema:
            kwargs["response_format"] = RESPONSE_SCHEMA
        with self.lock:
            self.requests += 1
        return self.client.chat.completions.create(
            model=self.cfg.model, temperature=0,
            messages=[{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": text}], **kwargs)

    def ask(self, text: str) -> str | None:
        """The verdict, None when the reply is unreadable; raises JudgeUnavailable/_Fatal."""
        import openai

        attempt, last = 0, "no request made"
        while not self.stop.is_set():
            use_schema, wait_hint = self.use_schema, 0.0
            try:
                resp = self._create(text, use_schema)
            except openai.BadRequestError as exc:
                if use_schema and _mentions_response_format(exc):
                    log.info("judge endpoint refuses response_format; using plain replies")
                    self.use_schema = False
                    continue
                raise _Fatal(f"the judge endpoint rejected the request (HTTP {exc.status_code}); "
                             "check judge.model and judge.base_url") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise _Fatal(f"the judge endpoint refused the API key (HTTP {exc.status_code})"
                             ) from None
            except openai.NotFoundError:
                raise _Fatal(f"model {self.cfg.model!r} or the endpoint "
                             f"{_public_url(self.cfg.base_url)} was not found (HTTP 404)") from None
            except openai.APITimeoutError:
                last = f"timed out after {self.cfg.timeout_s:g} s"
            except openai.APIConnectionError:
                last = "connection failed"
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                last = f"HTTP {exc.status_code}"
                wait_hint = _retry_after(exc)
            except openai.APIStatusError as exc:
                raise _Fatal(f"the judge endpoint answered HTTP {exc.status_code}") from None
            else:
                try:
                    return parse_verdict(resp.choices[0].message.content)
                except (AttributeError, IndexError, TypeError):
                    return None
            if attempt >= self.cfg.max_retries:
                break
            delay = min(MAX_BACKOFF_S, max(wait_hint, self.cfg.retry_base_s * 2 ** attempt))
            attempt += 1
            log.info("judge request failed (%s); retry %d/%d in %.2f s", last, attempt,
                     self.cfg.max_retries, delay)
            if self.stop.wait(delay):
                break
        raise JudgeUnavailable(f"the judge at {_public_url(self.cfg.base_url)} is unreachable "
                               f"({last}, {attempt + 1} attempt(s))")


def _retry_after(exc: Exception) -> float:
    """The server's Retry-After (seconds) when it sent one, else 0."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return max(0.0, float(headers.get("retry-after", 0)))
    except (TypeError, ValueError):
        return 0.0  # an HTTP date: fall back to our own backoff


def _mentions_response_format(exc: Exception) -> bool:
    body = getattr(exc, "body", None)
    text = json.dumps(body, default=str) if body is not None else ""
    text += " " + str(getattr(exc, "message", ""))
    return bool(re.search(r"response_format|json_schema|structured", text, re.I))


# --------------------------------------------------------------------------- the run


@dataclass
class JudgeRun:
    """What one judging run saw: the sample, one verdict per sampled item, call counts."""

    sample: list[Item]
    verdicts: list[str | None]
    population: int
    requests: int = 0
    cache_hits: int = 0
    error: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(v == "Accept" for v in self.verdicts)

    @property
    def rejected(self) -> int:
        return sum(v == "Reject" for v in self.verdicts)

    @property
    def unreadable(self) -> int:
        return len(self.verdicts) - self.accepted - self.rejected

    @property
    def fraction(self) -> float | None:
        judged = self.accepted + self.rejected
        return self.accepted / judged if judged and self.error is None else None

    def rejected_examples(self, limit: int = MAX_EXAMPLES) -> list[dict[str, Any]]:
        out = []
        for it, text, v in zip(self.sample, self.texts, self.verdicts):
            if v == "Reject" and len(out) < limit:
                short = text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."
                out.append({"task": it.task, "doc_id": it.doc_id, "text": short})
        return out


def judge_items(items: list[Item], cfg: JudgeConfig, *, fingerprint: str,
                ref_dir: Path | None, cache_dir: Path) -> JudgeRun:
    """Sample, answer from the cache where possible, ask the judge for the rest."""
    sample = sample_items(items, cfg.samples, cfg.seed, fingerprint)
    texts = [render_item(it) for it in sample]
    run = JudgeRun(sample=sample, verdicts=[None] * len(sample), population=len(items),
                   texts=texts)
    cache = VerdictCache(cache_dir)
    todo = []
    for i, text in enumerate(texts):
        cached = cache.get(cfg.model, text)
        if cached:
            run.verdicts[i] = cached
            run.cache_hits += 1
        else:
            todo.append(i)
    if not todo:
        return run
    try:
        key = resolve_api_key(cfg, ref_dir)
    except JudgeUnavailable as exc:
        run.error = str(exc)
        return run
    if key is None and not cfg.base_url:
        run.error = (f"no judge API key: set {cfg.api_key_env} or judge.api_key_file in "
                     "scoring.yaml")
        return run
    import openai

    # Local OpenAI-compatible servers often need no key; the SDK still wants a value.
    client = openai.OpenAI(api_key=key or "EMPTY", base_url=cfg.base_url,
                           timeout=cfg.timeout_s, max_retries=0)
    caller = _Caller(client, cfg)

    def one(i: int) -> None:
        if caller.stop.is_set():
            return
        try:
            verdict = caller.ask(texts[i])
        except (JudgeUnavailable, _Fatal) as exc:
            caller.fail(str(exc))
            return
        run.verdicts[i] = verdict
        if verdict:
            cache.put(cfg.model, texts[i], verdict)

    with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as pool:
        for fut in [pool.submit(one, i) for i in todo]:
            fut.result()
    client.close()
    run.requests = caller.requests
    run.error = caller.error
    return run


def run_judge(items: list[Item], cfg: JudgeConfig, *, fingerprint: str,
              ref_dir: Path | None, cache_dir: Path) -> GateResult:
    """The `alignment` gate: the share of sampled items the judge accepts."""
    gate = GateResult(name="alignment", mode=cfg.mode, threshold=cfg.threshold,
                      higher_is_better=True)
    if cfg.mode == OFF:
        gate.state, gate.reason = OFF, "judge.mode is off"
        return gate
    if not items:
        gate.state, gate.reason = NOT_MEASURED, "the submission rendered no items"
        return gate
    run = judge_items(items, cfg, fingerprint=fingerprint, ref_dir=ref_dir,
                      cache_dir=cache_dir)
    gate.detail = {
        "model": cfg.model, "rubric_version": RUBRIC_VERSION, "seed": cfg.seed,
        "population": run.population, "sample_size": len(run.sample),
        "accepted": run.accepted, "rejected": run.rejected, "unreadable": run.unreadable,
        "requests": run.requests, "cache_hits": run.cache_hits,
        "rejected_examples": run.rejected_examples(),
    }
    if run.error:
        gate.state, gate.reason = NOT_MEASURED, run.error
    elif run.fraction is None:
        gate.state = NOT_MEASURED
        gate.reason = "no reply of the judge could be read as Accept or Reject"
    else:
        gate.state, gate.value = MEASURED, run.fraction
    log.info("alignment: %s (%s)", gate.value, gate.reason or gate.state)
    return gate


# --------------------------------------------------------------------------- CLI


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "e2lmc" / "judge"


def _fingerprint_for(items_path: Path) -> str:
    """The submission fingerprint from the ingestion output beside the items (so the CLI
    samples what the scoring program samples), else a hash of the items file."""
    info = items_path.parent / "ingestion.json"
    try:
        doc = json.loads(info.read_text())
        fp = doc.get("fingerprint") or (doc.get("submission") or {}).get("fingerprint")
        if fp:
            return str(fp)
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    return hashlib.sha256(items_path.read_bytes()).hexdigest()


def cli_judge(args: Any) -> int:
    """`e2lmc judge --items ITEMS.jsonl`: the accepted fraction and the rejected items."""
    path = Path(args.items)
    if path.is_dir():
        path = path / "items.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: items file not found; pass the items.jsonl of an "
                        "ingestion output (or its folder)")
    names = set(Item.__dataclass_fields__)
    try:
        items = [Item(**{k: v for k, v in d.items() if k in names}) for d in iter_jsonl(path)]
    except (TypeError, AttributeError):
        raise UserError(f"{path}: not an items file (each line needs task, doc_id, prompt "
                        "and gold); pass the items.jsonl of an ingestion output") from None
    if not items:
        raise UserError(f"{path}: no items; run the ingestion first")
    env = next((e for e in CLI_KEY_ENVS if os.environ.get(e, "").strip()), CLI_KEY_ENVS[0])
    cfg = JudgeConfig(mode="report", api_key_env=env)
    for name in ("base_url", "model", "samples", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    cache_dir = Path(getattr(args, "cache_dir", None) or default_cache_dir())
    run = judge_items(items, cfg, fingerprint=_fingerprint_for(path), ref_dir=None,
                      cache_dir=cache_dir)
    if run.error:
        if "no judge API key" in run.error:
            raise UserError(f"no judge API key: set one of {', '.join(CLI_KEY_ENVS)}")
        raise UserError(run.error)
    if run.fraction is None:
        raise UserError("no reply of the judge could be read as Accept or Reject")
    print(f"alignment: {run.fraction:.3f} ({run.accepted} accepted, {run.rejected} rejected, "
          f"{run.unreadable} unreadable; {len(run.sample)} of {run.population} items; "
          f"model {cfg.model}, {RUBRIC_VERSION}; {run.requests} requests, "
          f"{run.cache_hits} cached)")
    for ex in run.rejected_examples(limit=len(run.sample)):
        print(f"\nrejected: {ex['task']} #{ex['doc_id']}\n{ex['text']}")
    if getattr(args, "output", None):
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, {
            "alignment": run.fraction, "accepted": run.accepted, "rejected": run.rejected,
            "unreadable": run.unreadable, "config": {k: v for k, v in dataclasses.asdict(cfg)
                                                     .items() if k != "api_key_file"},
            "rubric_version": RUBRIC_VERSION,
            "verdicts": [{"task": it.task, "doc_id": it.doc_id, "verdict": v}
                         for it, v in zip(run.sample, run.verdicts)],
        })
    return 0



def resolve_cache_dir(cfg: JudgeConfig, output_dir: Path) -> Path:
    """judge.cache_dir (relative paths against the output's parent), else a `judge_cache`
    folder beside the output, so that re-scoring into the same place reuses verdicts."""
    if cfg.cache_dir:
        p = Path(cfg.cache_dir).expanduser()
        return p if p.is_absolute() else Path(output_dir).parent / p
    return Path(output_dir).parent / "judge_cache"
