"""The three example submissions, generated from the suite's world.

- `science_cloze`: questions about the science world's facts. The science models learn
  them over training and the web-only model never sees them: a clear, rising signal that
  separates the two data mixtures.
- `web_commonsense`: everyday common-sense questions whose answers both corpora contain
  (the science mixture carries some web text): the science and web models overlap.
- `noisy_hard`: conversions between invented units, which need a remembered factor and a
  multiplication; models this small stay at chance, so the curves carry no signal.

Each is a task folder that lm-eval loads with `TaskManager(include_path=folder)`: a task
YAML (local `json` dataset, cloze-style multiple choice), `test.jsonl`, and the submission's
`metadata.yaml`. The files are committed; `write_example` regenerates them and a test
checks they match.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from e2lmc.suite.corpora import (JOBS, MEALS, PEOPLE, SHOPS, SOUNDS, TEMPLATES, TOOLS, WEATHER,
                                 Fact, all_facts, render)
from e2lmc.suite.world import BASE_UNITS, World, build_world

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "examples"
EXAMPLES = ("science_cloze", "web_commonsense", "noisy_hard")
N_CHOICES = 4
N_SCIENCE = None
N_HARD = 200

DESCRIPTIONS = {
    "science_cloze": "Facts of the demo suite's science world, asked as cloze questions.",
    "web_commonsense": "Everyday common sense that both the science and web corpora contain.",
    "noisy_hard": "Unit conversions that need arithmetic: too hard for the demo models.",
}


def example_dir(name: str) -> Path:
    """The packaged task folder of example `name` (one of EXAMPLES)."""
    if name not in EXAMPLES:
        from e2lmc.errors import UserError

        raise UserError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    return EXAMPLES_DIR / name


def _mc(rng: random.Random, question: str, answer: str, pool: tuple[str, ...] | list[str],
        **extra) -> dict:
    others = sorted({p for p in pool if p != answer})
    choices = rng.sample(others, min(N_CHOICES - 1, len(others))) + [answer]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "label": choices.index(answer), **extra}


def science_docs(world: World | None = None, n: int | None = N_SCIENCE,
                 seed: int = 0) -> list[dict]:
    """Cloze questions over the world's facts (all of them when `n` is None)."""
    world = world or build_world()
    rng = random.Random(f"science_cloze:{seed}")
    facts: list[Fact] = [f for fs in all_facts(world).values() for f in fs]
    if n is not None and n < len(facts):
        facts = rng.sample(facts, n)
    docs = []
    for f in facts:
        question = render(f, TEMPLATES[f.relation][1][0])
        if f.answer in question:  # e.g. "ten" inside a name: would trip the leakage gate
            continue
        docs.append(_mc(rng, question, f.answer, f.pool, relation=f.relation,
                        subject=f.subject))
    return docs


def web_docs(seed: int = 0, per_key: int = 3) -> list[dict]:
    """Sentence completions on the web corpus's everyday relations (cloze, no question)."""
    rng = random.Random(f"web_commonsense:{seed}")
    tables = (
        (SHOPS, ("{n} needed {k}, so {p} went to the", "{n} bought {k} at the",
                 "You can buy {k} at the")),
        (TOOLS, ("To {k}, {n} took the", "{n} wanted to {k}, so {p} took the")),
        (SOUNDS, ("{n} heard a sound: the {k}", "In the garden, the {k}", "The {k}")),
        (WEATHER, ("Because of the {k}, {n} took {h}", "When there is {k}, people carry a")),
        (MEALS, ("{n} had {k} in the", "The family sat down for {k} in the")),
        (JOBS, ("{n} is a {k} and works at the", "The {k} arrived at the")),
    )
    docs = []
    for table, prompts in tables:
        pool = sorted(set(table.values()))
        for k, v in table.items():
            for i in range(per_key):
                name, pr = rng.choice(PEOPLE), rng.choice(("he", "she"))
                text = prompts[i % len(prompts)].format(n=name, k=k, p=pr,
                                                        h="his" if pr == "he" else "her")
                docs.append(_mc(rng, text, v, pool))
    return docs


def hard_docs(world: World | None = None, n: int = N_HARD, seed: int = 0) -> list[dict]:
    """Unit conversions: recall the unit's factor, then multiply."""
    world = world or build_world()
    rng = random.Random(f"noisy_hard:{seed}")
    docs: list[dict] = []
    while len(docs) < n:
        u = rng.choice(world.units)
        k = rng.randint(11, 49)
        right = k * u.factor
        wrong = {(k + dk) * (u.factor + df) for dk in (-1, 0, 1) for df in (-1, 0, 1)} - {right}
        question = (f"A {u.name} is a unit of {BASE_UNITS[u.base]}. "
                    f"How many {u.base} are in {k} {u.name}?")
        if str(right) in question:
            continue
        docs.append(_mc(rng, question, str(right), sorted(map(str, wrong)), unit=u.name))
    return docs


def generate(name: str) -> list[dict]:
    return {"science_cloze": science_docs, "web_commonsense": web_docs,
            "noisy_hard": hard_docs}[name]()


def task_yaml(name: str) -> dict:
    prompt = "{{question}}" if name == "web_commonsense" else "Question: {{question}}\nAnswer:"
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": "test.jsonl"}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": prompt,
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean",
                         "higher_is_better": True}],
        "metadata": {"version": 1.0, "description": DESCRIPTIONS[name]},
    }


def render_files(name: str) -> dict[str, str]:
    """The example's files (name -> text), exactly as committed."""
    docs = generate(name)
    return {
        f"{name}.yaml": yaml.safe_dump(task_yaml(name), sort_keys=False),
        "test.jsonl": "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs),
        "metadata.yaml": yaml.safe_dump({"task_name": name, "task_metric": "acc,none"},
                                        sort_keys=False),
    }


def write_example(name: str, out_dir: Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else example_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in render_files(name).items():
        (out / fname).write_text(text)
    return out


if __name__ == "__main__":  # regenerate the committed files
    for example in EXAMPLES:
        print(write_example(example))
