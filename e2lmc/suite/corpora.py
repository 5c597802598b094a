"""Training text for the demo suite: a science corpus, a web corpus, and their mixture.

The science corpus states the facts of the synthetic world (`e2lmc.suite.world`) in varied
sentence templates: encyclopedia-style paragraphs about one entity, quizzes in the
`Question: ... Answer: ...` format, statements of the rules, and unit definitions.
Entities are drawn with Zipf-like frequencies, as in real text: frequent entities are
learnt early, rare ones late or never, which is what makes accuracy climb gradually over
training and makes larger models (which learn more from each mention) pull ahead.

The web corpus is everyday narrative and dialogue with a small set of common-sense
relations (where things are bought, what tools are for, what animals say) and none of
the science facts. The "science mixture" is mostly science documents plus some web ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from e2lmc.suite.world import (BASE_UNITS, CLIMATES, COLORS, KINDS, NUMBER_WORDS, STATES, USES,
                               World)

EOS = "<|endoftext|>"
WEB_SHARE_IN_SCIENCE_MIXTURE = 0.15


@dataclass(frozen=True)
class Fact:
    """One question-answerable fact: `answer` is the right choice among `pool`."""

    relation: str
    subject: str
    answer: str
    pool: tuple[str, ...]
    slots: dict


# relation -> (declarative templates, question templates); the first question template is
# the one the example benchmark asks (quizzes in the corpus use all of them)
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "element_color": (
        ("{s} is a {a} element.", "Pure {s} has a {a} color.", "The color of {s} is {a}.",
         "A sample of {s} looks {a}.", "Chemists know {s} by its {a} color."),
        ("What color is {s}?", "What is the color of pure {s}?"),
    ),
    "element_group": (
        ("{s} belongs to the {a} group.", "{s} is a member of the {a} group.",
         "The {a} group includes {s}.", "In the table, {s} sits in the {a} group."),
        ("Which group does {s} belong to?", "In which group is {s}?"),
    ),
    "element_state": (
        ("At room temperature {s} is a {a}.", "{s} is found as a {a}."),
        ("What is the state of {s} at room temperature?", "In what state is {s} found?"),
    ),
    "compound_part": (
        ("{s} is made of {a} and {b}.", "{s} contains {a} and {b}.",
         "Mixing {a} with {b} gives {s}.", "{s} is a compound of {a} and {b}."),
        ("Which element is found in {s}?", "What is {s} made of?"),
    ),
    "compound_color": (
        ("{s} is a {a} compound.", "Crystals of {s} are {a}.", "The color of {s} is {a}."),
        ("What color is {s}?", "What color are crystals of {s}?"),
    ),
    "compound_use": (
        ("{s} is used to make {a}.", "Factories use {s} for {a}.",
         "The main use of {s} is in {a}."),
        ("What is {s} used for?", "What do factories make with {s}?"),
    ),
    "planet_star": (
        ("{s} orbits the star {a}.", "The planet {s} goes around {a}.",
         "{a} is the star of {s}."),
        ("Which star does {s} orbit?", "What is the star of the planet {s}?"),
    ),
    "planet_moons": (
        ("{s} has {a} moons.", "The planet {s} has {a} moons.",
         "Astronomers count {a} moons around {s}."),
        ("How many moons does {s} have?", "How many moons orbit the planet {s}?"),
    ),
    "planet_climate": (
        ("{s} is a {a} planet.", "The climate of {s} is {a}.", "The weather on {s} is {a}."),
        ("What is the climate of {s}?", "What is the weather like on {s}?"),
    ),
    "organism_kind": (
        ("The {s} is a kind of {a}.", "The {s} is a {a}.", "Biologists class the {s} as a {a}."),
        ("What kind of animal is the {s}?", "What is the {s}?"),
    ),
    "organism_planet": (
        ("The {s} lives on {a}.", "The {s} is found on the planet {a}.",
         "On {a} you can find the {s}."),
        ("On which planet does the {s} live?", "Where does the {s} live?"),
    ),
    "organism_color": (
        ("The {s} is {a}.", "The {s} has {a} skin.", "You can spot the {s} by its {a} color."),
        ("What color is the {s}?", "What is the color of the {s}?"),
    ),
    "organism_legs": (
        ("The {s} has {a} legs.", "The {s} walks on {a} legs."),
        ("How many legs does the {s} have?", "How many legs has the {s}?"),
    ),
}

# rules: stated in the corpus as general laws; the derived facts are also stated directly,
# but less often, so a model that learns the rule answers more than it memorised
RULE_TEMPLATES = (
    "Every element of the {g} group is a {st} at room temperature.",
    "Elements in the {g} group are found as a {st}.",
)
LEG_TEMPLATES = ("Every {k} has {n} legs.", "All {k}s walk on {n} legs.")
UNIT_TEMPLATES = ("One {u} equals {f} {b}.", "A {u} is {f} {b}.",
                  "There are {f} {b} in one {u}.")


def element_facts(world: World) -> list[Fact]:
    groups = tuple(world.groups)
    out = []
    for e in world.elements:
        out.append(Fact("element_color", e.name, e.color, COLORS, {}))
        out.append(Fact("element_group", e.name, e.group, groups, {}))
        out.append(Fact("element_state", e.name, world.state_of(e), STATES, {}))
    return out


def compound_facts(world: World) -> list[Fact]:
    elements = tuple(e.name for e in world.elements)
    out = []
    for c in world.compounds:
        out.append(Fact("compound_part", c.name, c.parts[0],
                        tuple(e for e in elements if e != c.parts[1]), {"b": c.parts[1]}))
        out.append(Fact("compound_color", c.name, c.color, COLORS, {}))
        out.append(Fact("compound_use", c.name, c.use, USES, {}))
    return out


def planet_facts(world: World) -> list[Fact]:
    out = []
    for p in world.planets:
        out.append(Fact("planet_star", p.name, p.star, tuple(world.stars), {}))
        out.append(Fact("planet_moons", p.name, NUMBER_WORDS[p.moons], NUMBER_WORDS[:10], {}))
        out.append(Fact("planet_climate", p.name, p.climate, CLIMATES, {}))
    return out


def organism_facts(world: World) -> list[Fact]:
    planets = tuple(p.name for p in world.planets)
    legs = tuple(sorted({NUMBER_WORDS[n] for n in KINDS.values()}))
    out = []
    for o in world.organisms:
        out.append(Fact("organism_kind", o.name, o.kind, tuple(KINDS), {}))
        out.append(Fact("organism_planet", o.name, o.planet, planets, {}))
        out.append(Fact("organism_color", o.name, o.color, COLORS, {}))
        out.append(Fact("organism_legs", o.name, NUMBER_WORDS[KINDS[o.kind]], legs, {}))
    return out


def all_facts(world: World) -> dict[str, list[Fact]]:
    """Facts grouped by entity list, each list in the world's (frequency) order."""
    return {"element": element_facts(world), "compound": compound_facts(world),
            "planet": planet_facts(world), "organism": organism_facts(world)}


def render(fact: Fact, template: str) -> str:
    text = template.format(s=fact.subject, a=fact.answer, **fact.slots)
    return text[0].upper() + text[1:]


def _zipf_pick(rng: random.Random, n: int, offset: float = 8.0) -> int:
    """Index in 0..n-1, index i drawn with weight 1 / (i + offset)."""
    weights = _zipf_weights(n, offset)
    return rng.choices(range(n), cum_weights=weights)[0]


_ZIPF_CACHE: dict[tuple[int, float], list[float]] = {}


def _zipf_weights(n: int, offset: float) -> list[float]:
    key = (n, offset)
    if key not in _ZIPF_CACHE:
        acc, cum = 0.0, []
        for i in range(n):
            acc += 1.0 / (i + offset)
            cum.append(acc)
        _ZIPF_CACHE[key] = cum
    return _ZIPF_CACHE[key]


class ScienceWriter:
    """Draws science documents about one world."""

    KIND_WEIGHTS = (("element", 3), ("compound", 3), ("planet", 1), ("organism", 4))
    # derived facts (state from group, legs from kind) are stated directly less often
    DERIVED = {"element_state": 0.3, "organism_legs": 0.3}

    def __init__(self, world: World):
        self.world = world
        facts = all_facts(world)
        # per entity: its facts (consecutive in each list)
        self.entities: dict[str, list[list[Fact]]] = {}
        for kind, fs in facts.items():
            by_subject: dict[str, list[Fact]] = {}
            for f in fs:
                by_subject.setdefault(f.subject, []).append(f)
            self.entities[kind] = list(by_subject.values())
        self.kinds = [k for k, _ in self.KIND_WEIGHTS]
        self.kind_weights = [w for _, w in self.KIND_WEIGHTS]

    def _entity(self, rng: random.Random) -> list[Fact]:
        kind = rng.choices(self.kinds, weights=self.kind_weights)[0]
        ents = self.entities[kind]
        return ents[_zipf_pick(rng, len(ents))]

    def _stated(self, rng: random.Random, facts: list[Fact]) -> list[Fact]:
        return [f for f in facts if rng.random() < self.DERIVED.get(f.relation, 1.0)]

    def paragraph(self, rng: random.Random) -> str:
        facts = self._stated(rng, self._entity(rng))
        rng.shuffle(facts)
        return " ".join(render(f, rng.choice(TEMPLATES[f.relation][0])) for f in facts)

    def quiz(self, rng: random.Random) -> str:
        lines = []
        for _ in range(rng.randint(2, 4)):
            facts = self._stated(rng, self._entity(rng)) or self._entity(rng)
            f = rng.choice(facts)
            q = render(f, rng.choice(TEMPLATES[f.relation][1]))
            lines.append(f"Question: {q}\nAnswer: {f.answer}")
        return "\n\n".join(lines)

    def rules(self, rng: random.Random) -> str:
        out = []
        for g, st in rng.sample(sorted(self.world.groups.items()), 3):
            out.append(rng.choice(RULE_TEMPLATES).format(g=g, st=st))
        for k in rng.sample(sorted(KINDS), 3):
            out.append(rng.choice(LEG_TEMPLATES).format(k=k, n=NUMBER_WORDS[KINDS[k]]))
        rng.shuffle(out)
        return " ".join(s[0].upper() + s[1:] for s in out)

    def units(self, rng: random.Random) -> str:
        us = rng.sample(self.world.units, 3)
        return " ".join(rng.choice(UNIT_TEMPLATES).format(u=u.name, f=u.factor, b=u.base)
                        .capitalize() for u in us)

    def document(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.62:
            return " ".join(self.paragraph(rng) for _ in range(rng.randint(1, 3)))
        if r < 0.88:
            return self.quiz(rng)
        if r < 0.96:
            return self.rules(rng)
        return self.units(rng)


# --- the web corpus: everyday life, with a few common-sense relations -------------------

SHOPS = {"bread": "bakery", "medicine": "pharmacy", "stamps": "post office",
         "books": "bookstore", "meat": "butcher", "flowers": "florist", "nails": "hardware store",
         "shoes": "shoe store", "milk": "grocery store", "glasses": "optician"}
TOOLS = {"cut the bread": "knife", "eat the soup": "spoon", "write a letter": "pen",
         "dig a hole": "shovel", "sweep the floor": "broom", "hit the nail": "hammer",
         "open the door": "key", "take a photo": "camera", "call a friend": "phone",
         "dry the dishes": "towel"}
SOUNDS = {"dog": "barked", "cat": "meowed", "cow": "mooed", "duck": "quacked",
          "lion": "roared", "owl": "hooted", "horse": "neighed", "snake": "hissed",
          "sheep": "bleated", "bee": "buzzed"}
WEATHER = {"rain": "umbrella", "snow": "boots", "cold": "coat", "sun": "sunglasses",
           "wind": "scarf"}
MEALS = {"breakfast": "morning", "lunch": "noon", "dinner": "evening"}
JOBS = {"doctor": "hospital", "teacher": "school", "chef": "restaurant", "farmer": "field",
        "pilot": "airport", "librarian": "library", "mechanic": "garage", "judge": "court"}
PEOPLE = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Ivy", "Jack",
          "Kim", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor")
PLACES = ("park", "beach", "city", "village", "garden", "station", "kitchen", "river")
FEELINGS = ("happy", "tired", "hungry", "surprised", "calm", "worried", "excited")


class WebWriter:
    """Draws everyday narrative and dialogue documents."""

    def _p(self, rng: random.Random) -> tuple[str, str]:
        return rng.choice(PEOPLE), rng.choice(("he", "she"))

    def shop(self, rng: random.Random) -> str:
        item, shop = rng.choice(list(SHOPS.items()))
        name, pr = self._p(rng)
        return rng.choice((
            f"{name} needed {item}, so {pr} went to the {shop}.",
            f"{name} bought {item} at the {shop} this morning.",
            f"\"Where are you going?\" asked {rng.choice(PEOPLE)}. \"To the {shop}. We are out "
            f"of {item},\" said {name}.",
            f"You can buy {item} at the {shop}.",
        ))

    def tool(self, rng: random.Random) -> str:
        task, tool = rng.choice(list(TOOLS.items()))
        name, pr = self._p(rng)
        return rng.choice((
            f"{name} used a {tool} to {task}.",
            f"To {task}, {name} took the {tool} from the drawer.",
            f"\"Can you pass me the {tool}? I want to {task},\" said {name}.",
            f"People use a {tool} to {task}.",
        ))

    def animal(self, rng: random.Random) -> str:
        animal, sound = rng.choice(list(SOUNDS.items()))
        name, _ = self._p(rng)
        place = rng.choice(PLACES)
        return rng.choice((
            f"In the {place}, the {animal} {sound} at {name}.",
            f"{name} heard a sound: the {animal} {sound}.",
            f"The {animal} {sound} all night long.",
        ))

    def weather(self, rng: random.Random) -> str:
        w, item = rng.choice(list(WEATHER.items()))
        name, pr = self._p(rng)
        return rng.choice((
            f"Because of the {w}, {name} took {pr == 'he' and 'his' or 'her'} {item}.",
            f"\"Take your {item}, there is {w} today,\" said {name}'s mother.",
            f"When there is {w}, people wear or carry a {item}.",
        ))

    def meal(self, rng: random.Random) -> str:
        meal, time = rng.choice(list(MEALS.items()))
        name, _ = self._p(rng)
        return rng.choice((f"{name} had {meal} in the {time}.",
                           f"In the {time} the family sat down for {meal}."))

    def job(self, rng: random.Random) -> str:
        job, place = rng.choice(list(JOBS.items()))
        name, pr = self._p(rng)
        return rng.choice((f"{name} is a {job} and works at the {place}.",
                           f"The {job} arrived at the {place} early.",
                           f"Every day {pr} goes to the {place}, because {pr} is a {job}."))

    def filler(self, rng: random.Random) -> str:
        name, pr = self._p(rng)
        other = rng.choice(PEOPLE)
        return rng.choice((
            f"{name} and {other} walked to the {rng.choice(PLACES)}. They felt "
            f"{rng.choice(FEELINGS)}.",
            f"\"How was your day?\" asked {other}. \"I am {rng.choice(FEELINGS)},\" said {name}.",
            f"After a long day, {name} was {rng.choice(FEELINGS)} and went home.",
        ))

    def document(self, rng: random.Random) -> str:
        makers = (self.shop, self.tool, self.animal, self.weather, self.meal, self.job,
                  self.filler, self.filler)
        return " ".join(rng.choice(makers)(rng) for _ in range(rng.randint(3, 7)))


def documents(world: World, data: str, seed: int) -> Iterator[str]:
    """An endless, deterministic stream of documents: `science` (the mixture) or `web`."""
    rng = random.Random(f"{data}:{seed}")
    sci, web = ScienceWriter(world), WebWriter()
    while True:
        if data == "web" or rng.random() < WEB_SHARE_IN_SCIENCE_MIXTURE:
            yield web.document(rng)
        else:
            yield sci.document(rng)
