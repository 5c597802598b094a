"""Helpers behind the starting-kit notebooks (`starting_kit/`).

Every notebook starts with one switch, `MODE = detect_mode()`:
- `real`: the competition's checkpoints from the HF hub (`tiiuae/dense-{500m,1b,3b}-arch{1,2}`,
  one `subfolder` per checkpoint), on a GPU in bfloat16, with hub datasets;
- `demo`: the embedded demo suite (tiny models trained on a synthetic science world), on
  CPU, offline. CI runs every notebook this way.

The notebooks explain; the code they run lives here and in the rest of `e2lmc`, so the two
modes differ only in the `Setup` they get from `setup(MODE)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from e2lmc.errors import UserError
from e2lmc.manifest import HF_PREFIX, Checkpoint, Defaults, Manifest, Model, load_manifest

MODES = ("real", "demo")
MODE_ENV = "E2LMC_KIT_MODE"
MICRO_ENV = "E2LMC_KIT_MICRO"
CACHE_ENV = "E2LMC_CACHE"
CURVES_ENV = "E2LMC_PUBLIC_CURVES"

HUB_OWNER = "tiiuae"
SIZES = ("500m", "1b", "3b")
ARCHS = ("arch1", "arch2")  # arch1 = deep, arch2 = wide
MODELS = tuple(f"dense-{s}-{a}" for s in SIZES for a in ARCHS)
PUBLIC_ITERATIONS = tuple(range(2000, 54001, 2000))
REPO_URL = "https://github.com/e2lmc/e2lmc"
INSTALL_COMMAND = f'pip install "e2lmc @ git+{REPO_URL}"'
# The organizers' published curves, as the official scoring notebook reads them.
CURVES_URL = ("https://raw.githubusercontent.com/e2lmc/e2lmc.github.io/main/"
              "assets/data/plot-data-combined-all.json")
MIN_ITEMS, MAX_ITEMS = 100, 15_000  # competition limits on a benchmark's size


# --------------------------------------------------------------------------- the switch


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def detect_mode() -> str:
    """`E2LMC_KIT_MODE` when set, else `real` with a GPU and `demo` without one."""
    env = os.environ.get(MODE_ENV, "").strip().lower()
    if env:
        if env not in MODES:
            raise UserError(f"{MODE_ENV}={env!r}; use one of {', '.join(MODES)}")
        return env
    return "real" if gpu_available() else "demo"


def micro() -> bool:
    """The micro demo suite (CI) instead of the full one."""
    return os.environ.get(MICRO_ENV, "").strip() in ("1", "true", "yes")


def cache_dir() -> Path:
    """Where the demo suite and downloads are cached (`E2LMC_CACHE`, else ~/.cache/e2lmc)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "e2lmc"


def workdir(name: str) -> Path:
    """A notebook's output folder, under `e2lmc_kit/` in the current directory."""
    path = Path("e2lmc_kit") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- checkpoints


def hub_repo(model: str) -> str:
    return f"{HUB_OWNER}/{model}"


def subfolder(iteration: int) -> str:
    """`iter_0004000`: the checkpoint's folder inside the model's hub repo."""
    return f"iter_{int(iteration):07d}"


def tokens_b(iteration: int) -> float:
    """Billions of tokens seen at `iteration` (the organizers' batch-size ramp)."""
    from e2lmc.bundle.competition_manifest import tokens_b_at_iteration

    return round(tokens_b_at_iteration(iteration), 6)


def real_manifest(models: tuple[str, ...] | list[str] = MODELS,
                  iterations: tuple[int, ...] | list[int] = PUBLIC_ITERATIONS) -> Manifest:
    """The public checkpoints on the hub (what participants can evaluate themselves)."""
    out = []
    for name in models:
        size, arch = name.split("-")[1], name.split("-")[2]
        ckpts = tuple(Checkpoint(model=name, name=subfolder(it),
                                 source=HF_PREFIX + hub_repo(name), subfolder=subfolder(it),
                                 tokens_b=tokens_b(it), stage="public", iteration=it)
                      for it in iterations)
        out.append(Model(name=name, size=size, arch=arch, data="science", params=None,
                         checkpoints=ckpts))
    return Manifest(path=None, models=out,
                    defaults=Defaults(dtype="bfloat16", device="cuda", download=True))


def demo_manifest() -> Manifest:
    """The demo suite's manifest, built on first use and cached under E2LMC_CACHE (the
    micro suite with E2LMC_KIT_MICRO=1)."""
    from e2lmc.suite.build import build_suite

    return load_manifest(build_suite(micro=micro(), progress=False))


@dataclass
class Setup:
    """What a notebook needs from the mode: checkpoints, and where and how to run them."""

    mode: str
    manifest: Manifest
    device: str
    dtype: str
    batch_size: int | str

    @property
    def models(self) -> list[str]:
        return [m.name for m in self.manifest.models]

    def model_names(self, arch: str | None = None, data: str | None = "science") -> list[str]:
        """Models with these attributes, in manifest order (smallest first)."""
        return [m.name for m in self.manifest.models
                if (arch is None or m.arch == arch) and (data is None or m.data == data)]

    @property
    def default_model(self) -> str:
        """The smallest deep (arch1) science model: the cheapest one to try things on."""
        return (self.model_names(arch="arch1") or self.models)[0]

    def public(self, model: str | None = None) -> list[Checkpoint]:
        """Public checkpoints of `model` (default: the first model), in training order."""
        m = self.manifest.model(model or self.default_model)
        return [c for c in m.checkpoints if c.stage == "public"]

    def checkpoint(self, model: str | None = None, index: int = -1) -> Checkpoint:
        return self.public(model)[index]

    def spread(self, model: str | None = None, n: int = 4) -> list[Checkpoint]:
        """`n` public checkpoints spread evenly over training, first and last included."""
        return list(subset(self.manifest, [model or self.default_model], n).models[0]
                    .checkpoints)


def setup(mode: str) -> Setup:
    if mode not in MODES:
        raise UserError(f"mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "real":
        return Setup(mode, real_manifest(), device="cuda", dtype="bfloat16", batch_size="auto")
    return Setup(mode, demo_manifest(), device="cpu", dtype="float32", batch_size=128)


def fmt_tokens(tokens_b: float) -> str:
    """Tokens seen, readable at both scales: `197.6B` (real) or `20.5K` (demo)."""
    n = tokens_b * 1e9
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def describe(s: Setup) -> str:
    """A few lines saying what this notebook will run on."""
    lines = [f"mode {s.mode}: device {s.device}, dtype {s.dtype}"]
    for m in s.manifest.models:
        pub = [c for c in m.checkpoints if c.stage == "public"]
        src = m.checkpoints[0].source
        where = src if src.startswith(HF_PREFIX) else "local"
        lines.append(f"  {m.name:<22} {m.arch:<6} {m.data:<8} {len(pub):>3} public / "
                     f"{len(m.checkpoints) - len(pub):>3} hidden checkpoints  ({where})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def load_kwargs(ckpt: Checkpoint) -> tuple[str, dict[str, Any]]:
    """(`pretrained`, extra kwargs) for `from_pretrained`: hub repo + subfolder, or a path."""
    pretrained, sub = ckpt.load_target()
    return pretrained, ({"subfolder": sub} if sub else {})


def load_model(ckpt: Checkpoint, device: str, dtype: str):
    """Tokenizer and model of one checkpoint, ready for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pretrained, kw = load_kwargs(ckpt)
    tok = AutoTokenizer.from_pretrained(pretrained, **kw)
    model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=getattr(torch, dtype), **kw)
    return tok, model.to(device).eval()


def model_args(ckpt: Checkpoint, dtype: str) -> str:
    """lm-eval's `--model_args` for one checkpoint."""
    pretrained, kw = load_kwargs(ckpt)
    parts = [f"pretrained={pretrained}"] + [f"{k}={v}" for k, v in kw.items()]
    return ",".join(parts + [f"dtype={dtype}"])


def lm_eval_command(ckpt: Checkpoint, tasks: str | list[str], *, device: str, dtype: str,
                    batch_size: int | str = "auto", include_path: str | Path | None = None,
                    num_fewshot: int | None = None, limit: int | None = None,
                    output_path: str | Path | None = None) -> list[str]:
    """The `lm_eval` command line that evaluates one checkpoint (what `evaluate` runs)."""
    tasks = tasks if isinstance(tasks, str) else ",".join(tasks)
    cmd = ["lm_eval", "--model", "hf", "--model_args", model_args(ckpt, dtype),
           "--tasks", tasks, "--device", device, "--batch_size", str(batch_size)]
    if include_path:
        cmd += ["--include_path", str(include_path)]
    if num_fewshot is not None:
        cmd += ["--num_fewshot", str(num_fewshot)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if output_path:
        cmd += ["--output_path", str(output_path)]
    return cmd


def task_manager(include_path: str | Path | None):
    """lm-eval's task index: only your folder when you give one (indexing lm-eval's own
    thousands of task files takes a minute on a small CPU), else lm-eval's tasks."""
    from lm_eval.tasks import TaskManager

    if include_path is None:
        return TaskManager()
    return TaskManager(include_path=str(Path(include_path).resolve()), include_defaults=False)


@contextlib.contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    """Task folders name local data files relative to themselves; lm-eval resolves them
    against the working directory."""
    old = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def evaluate(ckpt: Checkpoint, tasks: str | list[str], *, device: str, dtype: str,
             batch_size: int | str = "auto", include_path: str | Path | None = None,
             num_fewshot: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """Run lm-eval on one checkpoint, in this process; returns lm-eval's results dict."""
    import lm_eval

    include = Path(include_path).resolve() if include_path else None
    tm = task_manager(include)
    with _cwd(include):
        return lm_eval.simple_evaluate(
            model="hf", model_args=model_args(ckpt, dtype),
            tasks=[tasks] if isinstance(tasks, str) else list(tasks), task_manager=tm,
            device=device, batch_size=batch_size, num_fewshot=num_fewshot, limit=limit,
            log_samples=False, verbosity="ERROR")


def metric(results: dict[str, Any], task: str, key: str = "acc,none") -> float:
    """One number from lm-eval's results (a task's or a group's)."""
    try:
        return float(results["results"][task][key])
    except KeyError:
        have = {t: sorted(v) for t, v in results.get("results", {}).items()}
        raise UserError(f"no {key!r} for task {task!r} in the results; found {have}") from None


# --------------------------------------------------------------------------- tasks


def _leaf_tasks(task_dir: Path, task_name: str) -> dict[str, Any]:
    """lm-eval's tasks behind a task or group name, loaded from `task_dir`."""
    return task_manager(task_dir).load([task_name])["tasks"]


def count_docs(task_dir: str | Path, task_name: str) -> dict[str, int]:
    """Evaluated documents per task (a group counts each of its tasks)."""
    task_dir = Path(task_dir).resolve()
    with _cwd(task_dir):
        return {name: len(t.eval_docs) for name, t in _leaf_tasks(task_dir, task_name).items()}


def check_size(counts: dict[str, int]) -> str:
    """The competition's size rule (100 to 15,000 items), as a one-line verdict."""
    total = sum(counts.values())
    if total < MIN_ITEMS:
        return f"{total} items: too few, the competition needs at least {MIN_ITEMS}"
    if total > MAX_ITEMS:
        return f"{total} items: too many, the competition allows at most {MAX_ITEMS}"
    return f"{total} items: within the limits ({MIN_ITEMS} to {MAX_ITEMS})"


def render_items(task_dir: str | Path, task_name: str, limit: int | None = None) -> list:
    """The items as the judge sees them (prompt without shots, choices, gold answer), as
    the ingestion writes them to items.jsonl."""
    from e2lmc.ingestion.items import task_items
    from e2lmc.results import Item

    task_dir = Path(task_dir).resolve()
    with _cwd(task_dir):
        return [Item(**d) for d in task_items(_leaf_tasks(task_dir, task_name), limit)]


# --------------------------------------------------------------------------- your task

MY_TASK = "my_science_cloze"
MY_TASK_YAML = """\
# A benchmark in lm-eval's task format: cloze-style multiple choice over local JSONL data.
task: my_science_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/test.jsonl          # relative to this folder
test_split: test
output_type: multiple_choice
process_docs: !function utils.process_docs
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
MY_TASK_UTILS = '''\
"""Turns raw rows {question, answer, distractors} into lm-eval documents."""

import hashlib


def _order(question, options):
    # A fixed, content-based order, so the gold answer is not always in the same place.
    return sorted(options, key=lambda o: hashlib.sha256((question + o).encode()).hexdigest())


def process_docs(dataset):
    def to_doc(row):
        choices = _order(row["question"], [row["answer"], *row["distractors"]])
        return {"question": row["question"], "choices": choices,
                "label": choices.index(row["answer"])}

    return dataset.map(to_doc, remove_columns=dataset.column_names)
'''

# (atomic number, symbol, name): facts that real models pick up early in training.
ELEMENTS = (
    (1, "H", "hydrogen"), (2, "He", "helium"), (3, "Li", "lithium"), (4, "Be", "beryllium"),
    (5, "B", "boron"), (6, "C", "carbon"), (7, "N", "nitrogen"), (8, "O", "oxygen"),
    (9, "F", "fluorine"), (10, "Ne", "neon"), (11, "Na", "sodium"), (12, "Mg", "magnesium"),
    (13, "Al", "aluminium"), (14, "Si", "silicon"), (15, "P", "phosphorus"),
    (16, "S", "sulfur"), (17, "Cl", "chlorine"), (18, "Ar", "argon"), (19, "K", "potassium"),
    (20, "Ca", "calcium"), (21, "Sc", "scandium"), (22, "Ti", "titanium"),
    (23, "V", "vanadium"), (24, "Cr", "chromium"), (25, "Mn", "manganese"), (26, "Fe", "iron"),
    (27, "Co", "cobalt"), (28, "Ni", "nickel"), (29, "Cu", "copper"), (30, "Zn", "zinc"),
    (31, "Ga", "gallium"), (32, "Ge", "germanium"), (33, "As", "arsenic"),
    (34, "Se", "selenium"), (35, "Br", "bromine"), (36, "Kr", "krypton"),
    (37, "Rb", "rubidium"), (38, "Sr", "strontium"), (39, "Y", "yttrium"),
    (40, "Zr", "zirconium"), (41, "Nb", "niobium"), (42, "Mo", "molybdenum"),
    (43, "Tc", "technetium"), (44, "Ru", "ruthenium"), (45, "Rh", "rhodium"),
    (46, "Pd", "palladium"), (47, "Ag", "silver"), (48, "Cd", "cadmium"), (49, "In", "indium"),
    (50, "Sn", "tin"), (51, "Sb", "antimony"), (52, "Te", "tellurium"), (53, "I", "iodine"),
    (54, "Xe", "xenon"), (55, "Cs", "caesium"), (56, "Ba", "barium"), (57, "La", "lanthanum"),
    (74, "W", "tungsten"), (78, "Pt", "platinum"), (79, "Au", "gold"), (80, "Hg", "mercury"),
    (82, "Pb", "lead"), (86, "Rn", "radon"), (88, "Ra", "radium"), (92, "U", "uranium"),
)


def element_rows(seed: int = 0) -> list[dict[str, Any]]:
    """Three questions per element: its symbol, the element of a symbol, its number."""
    import random

    rng = random.Random(seed)
    symbols = [e[1] for e in ELEMENTS]
    names = [e[2] for e in ELEMENTS]
    rows = []
    for number, symbol, name in ELEMENTS:
        near = sorted({max(1, number + d) for d in (-3, -2, -1, 1, 2, 3)} - {number})
        rows += [
            {"question": f"What is the chemical symbol of {name}?", "answer": symbol,
             "distractors": rng.sample([s for s in symbols if s != symbol], 3)},
            {"question": f"Which element has the chemical symbol {symbol}?", "answer": name,
             "distractors": rng.sample([n for n in names if n != name], 3)},
            {"question": f"What is the atomic number of {name}?", "answer": str(number),
             "distractors": [str(n) for n in rng.sample(near, 3)]},
        ]
    return rows


def demo_rows(n: int = 120) -> list[dict[str, Any]]:
    """Questions about the demo suite's science world, in the same raw format."""
    from e2lmc.suite.examples import example_dir

    rows = []
    for line in (example_dir("science_cloze") / "test.jsonl").read_text().splitlines()[:n]:
        d = json.loads(line)
        gold = d["choices"][d["label"]]
        rows.append({"question": d["question"], "answer": gold,
                     "distractors": [c for c in d["choices"] if c != gold]})
    return rows


def write_my_task(out_dir: str | Path, mode: str) -> Path:
    """The example task folder: YAML + utils.py + data (element facts in real mode, the
    demo world's facts in demo mode)."""
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows = element_rows() if mode == "real" else demo_rows()
    (out / f"{MY_TASK}.yaml").write_text(MY_TASK_YAML)
    (out / "utils.py").write_text(MY_TASK_UTILS)
    (out / "data" / "test.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return out


# --------------------------------------------------------------------------- submissions


EXAMPLES = {"mmlu_var.zip": "the MMLU-var baseline, official format (patch + hub dataset)",
            f"{MY_TASK}.zip": "a task folder with local data (notebook 4's task, real mode)"}


def write_example_submissions(out_dir: str | Path) -> list[Path]:
    """The starting kit's example submissions (starting_kit/example_submissions/)."""
    import tempfile

    from e2lmc import baseline
    from e2lmc.ingestion.submission import make_submission, official_submission

    out = Path(out_dir)
    paths = [official_submission(baseline.task_files(), baseline.TASK, baseline.METRIC,
                                 out / "mmlu_var.zip")]
    with tempfile.TemporaryDirectory(prefix="e2lmc-example-") as tmp:
        task = write_my_task(Path(tmp) / MY_TASK, "real")
        paths.append(make_submission(task, MY_TASK, "acc,none", out / f"{MY_TASK}.zip"))
    return paths


def show_zip(path: str | Path) -> str:
    """The zip's files with sizes, and its metadata.yaml without any token value."""
    lines = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            lines.append(f"{info.file_size:>9}  {info.filename}")
        names = zf.namelist()
        meta_name = next((n for n in names if n.rsplit("/", 1)[-1] == "metadata.yaml"), None)
        if meta_name:
            meta = yaml.safe_load(zf.read(meta_name)) or {}
            if meta.get("hf_token"):
                meta["hf_token"] = "***"
            lines.append(f"{meta_name}: {json.dumps(meta)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- curves


def shared_curves() -> Path | None:
    """The published curves beside the project (`../shared/data/`), or E2LMC_PUBLIC_CURVES."""
    env = os.environ.get(CURVES_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
        "e2lm_public_curves.json"
    return path if path.is_file() else None


def download_curves(url: str = CURVES_URL) -> Path:
    """The organizers' curves file, downloaded once into the cache."""
    path = cache_dir() / "e2lm_public_curves.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
        json.loads(data)  # refuse to cache an error page
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def curves_from_results(res_dir: str | Path, benchmark: str, out: str | Path,
                        stage: str | None = "public") -> Path:
    """An ingestion output's curves in the published format (one benchmark), so that the
    same tools read the organizers' curves and yours."""
    from e2lmc.results import read_results

    data: dict[str, dict[str, list]] = {}
    for row in read_results(res_dir):
        if stage and row.stage != stage:
            continue
        d = data.setdefault(row.model, {"iteration": [], "gtokens": [], benchmark: []})
        d["iteration"].append(row.iteration if row.iteration is not None
                              else len(d["iteration"]))
        d["gtokens"].append(row.tokens_b)
        d[benchmark].append(row.value)
    for d in data.values():
        order = sorted(range(len(d["gtokens"])), key=d["gtokens"].__getitem__)
        for k in d:
            d[k] = [d[k][i] for i in order]
    out = Path(out)
    out.write_text(json.dumps({"metadata": {"source": str(res_dir)}, "data": data}, indent=1))
    return out


def load_curves_json(path: str | Path) -> dict[str, dict[str, list]]:
    return json.loads(Path(path).read_text())["data"]


# --------------------------------------------------------------------------- local score


# The official SQ selection: iterations that are multiples of 4000, at most 206B tokens.
REAL_SCORING = {"sq": {"models": {"arch": "arch1", "data": "science"},
                       "checkpoints": {"stage": "public", "iteration_step": 4000,
                                       "max_tokens_b": 206}}}


def local_scoring_config(out_dir: str | Path, manifest: Manifest) -> Path:
    """A scoring.yaml for a local run: the demo suite's own (it sits beside its manifest)
    or the competition's SQ selection, with the judge off (notebook 7 runs it) and the
    leakage check reported rather than gated."""
    beside = manifest.path.parent / "scoring.yaml" if manifest.path else None
    if beside is not None and beside.is_file():
        doc = yaml.safe_load(beside.read_text()) or {}
    else:
        doc = json.loads(json.dumps(REAL_SCORING))
    doc["judge"] = {**(doc.get("judge") or {}), "mode": "off"}
    doc["leakage"] = {**(doc.get("leakage") or {}), "mode": "report"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def manifest_dir(manifest: Manifest, out_dir: str | Path) -> Path:
    """A folder holding `manifest.yaml`, as `e2lmc ingest --input-data` takes it."""
    if manifest.path is not None and manifest.path.is_file():
        return manifest.path.parent
    out = Path(out_dir)
    manifest.write(out / "manifest.yaml")
    return out


def subset(manifest: Manifest, models: list[str], n: int) -> Manifest:
    """`n` public checkpoints of each of `models`, spread over training: a quick dry run."""
    out = []
    for name in models:
        m = manifest.model(name)
        pub = [c for c in m.checkpoints if c.stage == "public"]
        idx = sorted({round(i * (len(pub) - 1) / max(n - 1, 1)) for i in range(min(n, len(pub)))})
        out.append(Model(m.name, m.size, m.arch, m.data, m.params, tuple(pub[i] for i in idx)))
    return Manifest(path=None, models=out, defaults=manifest.defaults)


def format_scores(scores: dict[str, float]) -> str:
    return "\n".join(f"  {k:<24}{v:>8.4f}" for k, v in scores.items())


# --------------------------------------------------------------------------- offline judge

STAND_IN_WORDS = ("atom", "element", "chemical", "compound", "planet", "star", "orbit",
                  "organism", "cell", "energy", "molecule", "symbol", "legs", "moons",
                  "climate", "temperature", "gas", "liquid", "solid", "colour", "color",
                  "group")


class StandInJudge:
    """A loopback, OpenAI-compatible chat endpoint for offline runs of the judge.

    NOT a language model: it accepts an item when the text names a science word from
    STAND_IN_WORDS and rejects it otherwise, so that the judge's plumbing (sampling,
    requests, verdict parsing, the alignment fraction) runs without a key or network.
    Bound to 127.0.0.1 only; it stops when its `with` block ends, or after `lifetime_s`.
    """

    def __init__(self, lifetime_s: float = 300.0):
        self.lifetime_s = lifetime_s
        self.requests = 0
        self._server = None
        self._timer = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @staticmethod
    def verdict(text: str) -> str:
        low = text.lower()
        return "Accept" if any(w in low for w in STAND_IN_WORDS) else "Reject"

    def __enter__(self) -> "StandInJudge":
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    user = " ".join(str(m.get("content", "")) for m in body.get("messages", [])
                                    if m.get("role") == "user")
                except (json.JSONDecodeError, AttributeError):
                    self.send_error(400)
                    return
                judge.requests += 1
                content = json.dumps({"verdict": judge.verdict(user)})
                reply = json.dumps({
                    "id": f"standin-{judge.requests}", "object": "chat.completion",
                    "created": 0, "model": body.get("model", "stand-in"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self._server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
