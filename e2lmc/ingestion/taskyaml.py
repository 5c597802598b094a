"""The submission's YAML read as data, and what its task YAML would make lm-eval open.

lm-eval 0.4.13 (lm_eval/tasks/_yaml_loader.py) imports `!function a.b.fn` from `a/b.py`
next to the YAML, where the value is turned into a path (a leading '.' or '/' makes it
absolute; older versions joined it as a relative path, so `../../x.fn` climbed), and reads
`include:` files (one or a list) relative to the YAML or from an absolute path. The task
process does both, so we refuse beforehand, without executing anything, every reference
that could open a file outside the task folder: a task must be self-contained.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2lmc.errors import UserError

YAML_SUFFIXES = (".yaml", ".yml")
STOCK_PACKAGE = "lm_eval"  # `!function lm_eval.tasks.x.utils.f`: stock helpers by name


@dataclass(frozen=True)
class FunctionRef:
    """A `!function` tag as written (a dotted name, unless malformed) and its line."""

    value: Any
    line: int


def _function(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    return FunctionRef(value, node.start_mark.line + 1)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """lm-eval's parser, constructing data only: `!function` is recorded, other tags dropped."""


_Loader.add_constructor("!function", _function)
_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def check_yaml(path: Path, shown: str) -> Any:
    """The document in `path`, or one UserError naming `shown` and what to fix."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except UnicodeDecodeError:
        raise UserError(f"{shown}: not UTF-8 text; save it as UTF-8") from None
    except RecursionError:
        raise UserError(f"{shown}: nested too deeply; flatten the YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{shown}: not valid YAML{at} ({problem}); fix the syntax") from None


def _leaves(doc: Any) -> Iterator[Any]:
    """Every scalar of a document, keys included; shared (aliased) parts visited once."""
    stack, seen = [doc], set()
    while stack:
        node = stack.pop()
        if not isinstance(node, (dict, list)):
            yield node
        elif id(node) not in seen:
            seen.add(id(node))
            stack.extend([*node.keys(), *node.values()] if isinstance(node, dict) else node)


def _quote(value: Any) -> str:
    """A participant's value fit for a one-line message."""
    text = str(value)
    return text if text.isprintable() and len(text) <= 200 else repr(text[:200])


def _real(path: Path) -> Path | None:
    """`path` with links and '..' resolved; None where no file can have that name."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a loop of links
        return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to exist
        return False


def _inside(root: Path, real: Path | None) -> bool:
    return real is not None and (real == root or root in real.parents)


def _check_function(root: Path, yaml_path: Path, shown: str, ref: FunctionRef) -> None:
    parts = ref.value.split(".") if isinstance(ref.value, str) else []
    where = f"{shown}: line {ref.line}: `!function {_quote(ref.value)}`"
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise UserError(f"{where} is not a `module.function` name; put the helper in a .py "
                        "file of the task folder and name it, e.g. `!function utils.process_docs`")
    module = yaml_path.parent.joinpath(*parts[:-1]).with_suffix(".py")
    if _is_file(module):
        if not _inside(root, _real(module)):
            raise UserError(f"{where} resolves outside the task folder; keep helpers in it")
    elif parts[0] != STOCK_PACKAGE:
        raise UserError(f"{where} names no module of the task folder (expected "
                        f"{'/'.join(parts[:-1])}.py next to the YAML); add that file")


def _includes(root: Path, yaml_path: Path, shown: str, doc: Any) -> list[Path]:
    """The files `include:` names (those that exist), all inside the task folder."""
    if not isinstance(doc, dict) or "include" not in doc:
        return []
    value = doc["include"]
    out = []
    for inc in value if isinstance(value, list) else [value]:
        if not isinstance(inc, str) or not inc.strip():
            raise UserError(f"{shown}: `include` must name a YAML file of the task folder (or "
                            "a list of them)")
        real = _real(yaml_path.parent / inc)
        if Path(inc).is_absolute() or not _inside(root, real):
            raise UserError(f"{shown}: `include: {_quote(inc)}` points outside the task folder; "
                            "include a file of the submission by its path relative to the YAML")
        if _is_file(real):
            out.append(real)
    return out


def check_task_paths(tasks_dir: Path) -> None:
    """Refuse any `!function` or `include:` of the task YAML that leaves `tasks_dir`.

    Walks every YAML file and every file they include; reads, never imports or runs.
    """
    root = tasks_dir.resolve()
    todo = sorted((Path(d) / f for d, _, names in os.walk(root) for f in names
                   if f.endswith(YAML_SUFFIXES)), reverse=True)
    done: set[Path | None] = set()
    while todo:
        path = todo.pop()
        if (real := _real(path)) in done:
            continue
        done.add(real)
        shown = f"submission {path.relative_to(root).as_posix()}"
        doc = check_yaml(path, shown)
        for leaf in _leaves(doc):
            if isinstance(leaf, FunctionRef):
                _check_function(root, path, shown, leaf)
        todo.extend(_includes(root, path, shown, doc))
