"""Render lm-eval prompts without recompiling their Jinja templates for every document.

lm-eval 0.4.13 calls `utils.apply_template(template, doc)`, which compiles the template
string anew on every call: for a 5-shot task that is a dozen compilations per document,
most of the time spent building requests. `cached_templates()` compiles each distinct
template once (same Jinja environment, same filters, same output) for as long as the
context is open. Use it around the task process's request building.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def cached_templates() -> Iterator[None]:
    from lm_eval import utils

    original = utils.apply_template
    compiled: dict[str, Any] = {}

    def apply_template(template: str, doc: dict) -> str:
        tpl = compiled.get(template)
        if tpl is None:
            tpl = compiled[template] = utils.env.from_string(template)
        return tpl.render(**doc)

    utils.apply_template = apply_template
    try:
        yield
    finally:
        utils.apply_template = original
