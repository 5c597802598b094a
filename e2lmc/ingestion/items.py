"""Rendering a task's documents as items (prompt without few-shot, choices, gold answer).

One definition for the ingestion's items.jsonl (run in the task process) and for the
starting kit's preview of what the judge and the leakage check will read.
"""

from __future__ import annotations

from typing import Any


def task_items(tasks: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """Items of every leaf task (lm-eval `Task` objects), `limit` documents per task."""
    items = []
    for name, task in tasks.items():
        for doc_id, doc in enumerate(task.eval_docs):
            if limit is not None and doc_id >= limit:
                break
            prompt = task.doc_to_text(doc)
            choices = None
            gold_index = None
            target = task.doc_to_target(doc)
            if task.OUTPUT_TYPE == "multiple_choice":
                choices = [str(c) for c in task.doc_to_choice(doc)]
                if isinstance(target, int) and 0 <= target < len(choices):
                    gold_index = target
                elif isinstance(target, str) and target in choices:
                    gold_index = choices.index(target)
                if isinstance(prompt, int) and 0 <= prompt < len(choices):
                    prompt = choices[prompt]  # partial-evaluation tasks (winogrande style)
            gold = choices[gold_index] if gold_index is not None else target
            if isinstance(gold, list):
                gold = gold[0] if gold else ""
            items.append({"task": name, "doc_id": doc_id, "prompt": str(prompt),
                          "gold": str(gold), "choices": choices, "gold_index": gold_index})
    return items
