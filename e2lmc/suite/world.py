"""The synthetic science world behind the demo suite: invented entities and their facts.

Both the training corpus and the example benchmarks are generated from this one world, so
a benchmark's questions are answerable exactly when a model has learned the corpus. The
world has structure a model can pick up at different depths:

- plain facts (the colour of an element, the planet an organism lives on), learnt one by
  one through repetition;
- rules (every element of a group has the same state of matter; every kind of organism has
  the same number of legs), learnable once and then applied to every member;
- numeric relations (invented units with conversion factors) that need arithmetic, which
  models this small cannot do: questions about them stay at chance.

The world is fixed by WORLD_SEED, independent of the suite's training seed, so the example
benchmarks committed to the package stay valid for every build.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

WORLD_SEED = 20250601

COLORS = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange")
STATES = ("solid", "liquid", "gas")
USES = ("fuel", "medicine", "glass", "paint", "fertilizer", "batteries", "soap", "cement")
CLIMATES = ("hot", "cold", "rainy", "dry", "windy", "icy")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten")
# kind of organism -> number of legs (a rule stated in the corpus)
KINDS = {"bird": 2, "mammal": 4, "insect": 6, "spider": 8, "fish": 0, "worm": 0,
         "crab": 10, "lizard": 4}
BASE_UNITS = {"meters": "length", "grams": "mass", "seconds": "time"}

# sizes of the full world; the micro suite uses the first MICRO_FRACTION of each list
N_ELEMENTS = 48
N_GROUPS = 6
N_COMPOUNDS = 48
N_PLANETS = 16
N_STARS = 8
N_ORGANISMS = 64
N_UNITS = 16
MICRO_FRACTION = 0.2

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "pl", "sk", "st", "tr", "th", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "x", "m")


@dataclass(frozen=True)
class Element:
    name: str
    group: str
    color: str
    number: int


@dataclass(frozen=True)
class Compound:
    name: str
    parts: tuple[str, str]  # element names
    color: str
    use: str


@dataclass(frozen=True)
class Planet:
    name: str
    star: str
    moons: int
    climate: str


@dataclass(frozen=True)
class Organism:
    name: str
    kind: str
    planet: str
    color: str


@dataclass(frozen=True)
class Unit:
    name: str
    base: str  # meters | grams | seconds
    factor: int


@dataclass
class World:
    groups: dict[str, str]  # group name -> state of matter shared by its elements
    stars: list[str]
    elements: list[Element]
    compounds: list[Compound]
    planets: list[Planet]
    organisms: list[Organism]
    units: list[Unit]
    names: set[str] = field(default_factory=set)

    def element(self, name: str) -> Element:
        return next(e for e in self.elements if e.name == name)

    def state_of(self, element: Element) -> str:
        return self.groups[element.group]

    def subset(self, fraction: float) -> World:
        """The first `fraction` of each entity list (the micro suite's world).

        Facts of kept entities may name entities outside the subset (a compound's parts, an
        organism's planet): those are only names, as in a real corpus.
        """
        def head(xs: list) -> list:
            return xs[:max(2, round(len(xs) * fraction))]

        return World(groups=self.groups, stars=self.stars, elements=head(self.elements),
                     compounds=head(self.compounds), planets=head(self.planets),
                     organisms=head(self.organisms), units=self.units, names=self.names)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + \
        rng.choice(_CODAS)


def _names(rng: random.Random, n: int, used: set[str], suffix: str = "",
           syllables: tuple[int, int] = (2, 2)) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, rng.randint(*syllables)) + suffix
        if w not in used and len(w) >= 4:
            used.add(w)
            out.append(w)
    return out


@lru_cache(maxsize=4)
def build_world(seed: int = WORLD_SEED) -> World:
    """The full world; deterministic in `seed`."""
    rng = random.Random(seed)
    used: set[str] = set()
    group_names = _names(rng, N_GROUPS, used, syllables=(1, 1))
    groups = {g: STATES[i % len(STATES)] for i, g in enumerate(group_names)}
    stars = [s.capitalize() for s in _names(rng, N_STARS, used, syllables=(2, 2))]
    elements = [Element(name=n, group=rng.choice(group_names), color=rng.choice(COLORS),
                        number=i + 1)
                for i, n in enumerate(_names(rng, N_ELEMENTS, used, suffix="ium",
                                             syllables=(1, 2)))]
    compounds = []
    for n in _names(rng, N_COMPOUNDS, used, suffix="ate", syllables=(1, 2)):
        a, b = rng.sample(elements[:], 2)
        compounds.append(Compound(name=n, parts=(a.name, b.name), color=rng.choice(COLORS),
                                  use=rng.choice(USES)))
    planets = [Planet(name=n.capitalize(), star=rng.choice(stars), moons=rng.randint(0, 9),
                      climate=rng.choice(CLIMATES))
               for n in _names(rng, N_PLANETS, used, suffix="a", syllables=(1, 2))]
    # organism names must not share a prefix structure with elements: two words
    organisms = [Organism(name=n, kind=rng.choice(list(KINDS)), planet=rng.choice(planets).name,
                          color=rng.choice(COLORS))
                 for n in _names(rng, N_ORGANISMS, used, suffix="", syllables=(2, 3))]
    units = [Unit(name=n, base=list(BASE_UNITS)[i % len(BASE_UNITS)], factor=rng.randint(3, 19))
             for i, n in enumerate(_names(rng, N_UNITS, used, suffix="", syllables=(1, 1)))]
    return World(groups=groups, stars=stars, elements=elements, compounds=compounds,
                 planets=planets, organisms=organisms, units=units, names=used)


def micro_world() -> World:
    return build_world().subset(MICRO_FRACTION)
