"""The schema of everything the task process sends back, and its checks.

The task process runs participant code, so its replies are untrusted data: each field is
checked against a type, a bound or a closed set before the runner uses it. Nothing it
sends chooses code for the engine (generation settings come from a whitelist and are
rebuilt here), reaches a log as free text (error kinds are a closed set; the only text
shown is the task's own load-failure output, cleaned by `shown_text`), or decides a count
the leaderboard shows (the runner counts documents from the requests).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from e2lmc.errors import UserError
from e2lmc.results import Item

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
SUPPORTED_OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling",
                          "generate_until")

# Failure kinds the task process may report, each with the runner's own words.
ERROR_KINDS: dict[str, str] = {
    "task_not_found": "the task named in metadata.yaml is not defined by the submission",
    "task_load": "loading the task failed",
    "doc_count": "the task's document count is outside the competition's bounds",
    "output_type": "the task's output_type is not supported",
    "unknown_metric": "the task uses a metric that is not built into lm-eval",
    "hub_dataset": "the task reads a hub dataset that the runner could not fetch for it",
    "data_outside": "the task reads data from outside the submission",
    "process_docs_random": "the task's process_docs gives different documents on each run; "
                           "seed your own random.Random",
    "memory": "the task ran out of memory",
    "exception": "the task's code raised an exception",
    "crashed": "the task's code crashed the metrics process",
}

# Generation settings the engines honour; anything else is refused before any checkpoint.
GEN_FLOATS = {"temperature": (0.0, 100.0), "top_p": (0.0, 1.0)}
GEN_INTS = {"top_k": (0, 100_000)}
MAX_GEN_ALIASES = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
MAX_STOP_SEQUENCES, MAX_STOP_CHARS = 64, 1000

METRIC_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}(,[A-Za-z0-9_.\-]{1,64})?")
MAX_METRIC_KEYS = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class ProtocolError(UserError):
    """A reply that breaks the schema: the task process is broken or hostile."""

    kind = "protocol"


def clean_text(text: str, secrets: list[str], limit: int, newlines: bool = False) -> str:
    """Participant text made safe to show: secrets redacted, control characters (a newline
    that would forge a log line, terminal escapes) replaced, length bounded."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    text = _CONTROL.sub("?", text)
    if not newlines:
        text = text.replace("\n", " ").replace("\t", " ")
    return text if len(text) <= limit else text[:limit] + " ..."


def shown_text(text: str, secrets: list[str], limit: int = 2000) -> str:
    """A block of participant output for a log: its last `limit` characters, every line
    cleaned and marked `| ` so that none can pass for one of the runner's lines."""
    lines = text[-limit:].split("\n")
    return "\n".join("| " + clean_text(line, secrets, 500) for line in lines if line.strip())


def error_kind(reply: dict[str, Any]) -> str:
    kind = reply.get("kind")
    return kind if isinstance(kind, str) and kind in ERROR_KINDS else "exception"


def gen_settings(raw: Any, max_gen_toks: int) -> dict[str, Any]:
    """A clean copy of a request's generation settings, or a named error."""
    if not isinstance(raw, dict):
        raise ProtocolError("generation settings are not a mapping")
    unknown = sorted(str(k)[:40] for k in raw
                     if k not in ("until", "do_sample", *GEN_FLOATS, *GEN_INTS,
                                  *MAX_GEN_ALIASES))
    if unknown:
        raise UserError(f"generation_kwargs: {', '.join(unknown)} not supported; the "
                        "evaluation honours until, max_gen_toks, do_sample, temperature, "
                        "top_p and top_k")
    out: dict[str, Any] = {}
    if "until" in raw:
        until = raw["until"]
        until = [until] if isinstance(until, str) else until
        if not (isinstance(until, list) and len(until) <= MAX_STOP_SEQUENCES
                and all(isinstance(u, str) and len(u) <= MAX_STOP_CHARS for u in until)):
            raise UserError(f"generation_kwargs: until must be a string or a list of at most "
                            f"{MAX_STOP_SEQUENCES} strings of at most {MAX_STOP_CHARS} "
                            "characters")
        out["until"] = list(until)
    if "do_sample" in raw:
        if not isinstance(raw["do_sample"], bool):
            raise UserError("generation_kwargs: do_sample must be true or false")
        out["do_sample"] = raw["do_sample"]
    for key, (lo, hi) in GEN_FLOATS.items():
        if key in raw:
            v = raw[key]
            if (isinstance(v, bool) or not isinstance(v, (int, float))
                    or not math.isfinite(v) or not lo <= v <= hi):
                raise UserError(f"generation_kwargs: {key} must be a number in [{lo}, {hi}]")
            out[key] = float(v)
    for key, (lo, hi) in GEN_INTS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UserError(f"generation_kwargs: {key} must be a whole number in "
                                f"[{lo}, {hi}]")
            out[key] = v
    alias = next((k for k in MAX_GEN_ALIASES if k in raw), None)
    if alias is not None:
        v = raw[alias]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= max_gen_toks:
            raise UserError(f"generation_kwargs: {alias} must be a whole number from 1 to "
                            f"{max_gen_toks} (the competition's limit)")
        out["max_gen_toks"] = v
    return out


def request(i: int, r: Any, max_chars: int, max_gen_toks: int) -> tuple[str, tuple]:
    """One request, its arguments type-checked and bounded."""
    if not (isinstance(r, list) and len(r) == 2 and r[0] in REQUEST_TYPES
            and isinstance(r[1], list)):
        raise ProtocolError(f"request {i} from the task process is malformed")
    rtype, args = r
    if rtype == "loglikelihood":
        ok = len(args) == 2 and all(isinstance(a, str) for a in args)
    elif rtype == "loglikelihood_rolling":
        ok = len(args) == 1 and isinstance(args[0], str)
    else:
        ok = len(args) == 2 and isinstance(args[0], str)
    if not ok:
        raise ProtocolError(f"request {i} from the task process is malformed")
    size = sum(len(a) for a in args if isinstance(a, str))
    if size > max_chars:
        raise UserError(f"request {i} is {size} characters long (limit {max_chars}); prompts "
                        "plus answers must fit in the models' 2048-token window")
    if rtype == "generate_until":
        args = [args[0], gen_settings(args[1], max_gen_toks)]
    return rtype, tuple(args)


def documents(raw: Any, n_requests: int) -> dict[str, int]:
    """Documents per task, counted by the runner from the requests: documents that ask for
    the very same requests count once, and every request must belong to a document. A
    count can only grow with work the engine really does."""
    if not isinstance(raw, dict) or not raw:
        raise ProtocolError("malformed document list from the task process")
    counts: dict[str, int] = {}
    used = [False] * n_requests
    for task, docs in raw.items():
        if not (isinstance(task, str) and isinstance(docs, list)):
            raise ProtocolError("malformed document list from the task process")
        ids, distinct = set(), set()
        for entry in docs:
            if not (isinstance(entry, list) and len(entry) == 2 and _is_int(entry[0])
                    and isinstance(entry[1], list) and entry[1]
                    and all(_is_int(j) and 0 <= j < n_requests for j in entry[1])):
                raise ProtocolError("malformed document list from the task process")
            ids.add(entry[0])
            distinct.add(frozenset(entry[1]))
            for j in entry[1]:
                used[j] = True
        if len(ids) != len(docs):
            raise ProtocolError(f"task {clean_text(task, [], 80)}: a document is listed twice")
        counts[task] = len(distinct)
    if not all(used):
        raise ProtocolError("the task process sent requests that belong to no document")
    return counts


def document_requests(raw: dict[str, list]) -> dict[str, list[tuple[int, list[int]]]]:
    """Each task's documents in doc-id order with their request indices, from a document
    list `documents` has already checked: the columns of the per-item outcomes."""
    return {task: sorted((d, list(reqs)) for d, reqs in docs) for task, docs in raw.items()}


def per_item(raw: Any, listed: dict[str, list]) -> dict[str, list[float]] | None:
    """One checkpoint's declared metric per document, one list per task in doc-id order
    (`listed`: `document_requests`); NaN where a value is not one finite number. None when
    the reply does not fit the documents: the checkpoint keeps its row (the leaderboard
    reads the metrics) but no per-item values."""
    if not (isinstance(raw, dict) and set(raw) == set(listed)
            and all(isinstance(raw[t], list) and len(raw[t]) == len(d)
                    for t, d in listed.items())):
        return None
    return {task: [math.nan if (x := _number(v)) is None else x for v in raw[task]]
            for task in listed}


def metric_keys(raw: Any) -> list[str]:
    """The results keys the task declares (from its dry run): bounded names, bounded count."""
    if not isinstance(raw, list) or len(raw) > MAX_METRIC_KEYS:
        raise ProtocolError(f"the task declares more than {MAX_METRIC_KEYS} results keys")
    bad = [k for k in raw if not (isinstance(k, str) and METRIC_KEY.fullmatch(k))]
    if bad:
        raise UserError(f"results key {clean_text(str(bad[0]), [], 80)!r} is not a plain "
                        "metric name (letters, digits, _ . - and one ,filter); rename the "
                        "metric or filter")
    return sorted(set(raw))


def metrics(raw: Any, declared: list[str]) -> dict[str, float | None]:
    """One checkpoint's metric values, only under the keys declared at preparation."""
    if not isinstance(raw, dict):
        raise ProtocolError("malformed metrics from the task process")
    return {key: _number(raw.get(key)) for key in declared}


def items(raw: Any, documents: dict[str, list], max_chars: int,
          secrets: list[str]) -> list[Item]:
    """Rendered items, at most one per listed document, strings bounded and redacted."""
    counts = {task: len(docs) for task, docs in documents.items()}
    if not isinstance(raw, list) or len(raw) > sum(counts.values()):
        raise ProtocolError("malformed items from the task process")
    out: list[Item] = []
    for d in raw:
        if not (isinstance(d, dict) and d.get("task") in counts and _is_int(d.get("doc_id"))):
            raise ProtocolError("malformed item from the task process")
        choices = d.get("choices")
        if choices is not None and not (isinstance(choices, list) and len(choices) <= 1000):
            raise ProtocolError("malformed item from the task process")
        gold_index = d.get("gold_index")
        out.append(Item(
            task=d["task"], doc_id=d["doc_id"],
            prompt=clean_text(str(d.get("prompt", "")), secrets, max_chars, newlines=True),
            gold=clean_text(str(d.get("gold", "")), secrets, max_chars, newlines=True),
            choices=None if choices is None else [
                clean_text(str(c), secrets, max_chars, newlines=True) for c in choices],
            gold_index=gold_index if _is_int(gold_index) else None))
    return out


def _number(v: Any) -> float | None:
    """A finite number of sane size sent as a number (never a string or a bool), else None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok and abs(v) < 1e12 else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Prepared:
    """What the runner keeps from the task's preparation: all checked."""

    task_types: dict[str, str]
    docs: dict[str, int]
    metric_keys: list[str]
    requests: list[tuple[str, tuple]]
    items: list[Item]
    isolation: dict[str, str]
    doc_requests: dict[str, list[tuple[int, list[int]]]]
