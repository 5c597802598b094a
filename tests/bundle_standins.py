"""Test support for the bundle tests: a complete bundle source folder.

It copies the repository's bundle parts (competition.yaml and everything it names) and
fills what the checkout does not have yet with small stand-in programs that follow the
program contract of DESIGN.md: `python3 ingestion.py` / `python3 score.py`, their own
folder on sys.path, Codabench paths under E2LMC_APP_ROOT (default /app). The stand-ins
record what they saw (argv, environment names, where e2lmc was imported from) in
`probe.json`, so tests can assert the worker's behaviour rather than trust it.
"""

from __future__ import annotations

import shutil
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_QUEUE = "4f0c2a7e-5b1d-4c3e-9a8f-1e2d3c4b5a69"  # stands for an organizer's GPU queue

INGESTION = textwrap.dedent('''\
    """Stand-in ingestion program (test double): lists the manifest's checkpoints."""
    import json, os, sys, time
    from pathlib import Path
    HERE = Path(__file__).resolve().parent
    sys.path.insert(0, str(HERE))
    import yaml
    import e2lmc
    from e2lmc.manifest import load_manifest

    root = Path(os.environ.get("E2LMC_APP_ROOT", "/app"))
    out = root / "output"
    sub = yaml.safe_load((root / "ingested_program" / "metadata.yaml").read_text()) or {}
    mode = sub.get("standin_mode", "ok")
    mounts = {}  # mount point under /app -> ro/rw (empty outside a container)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1].startswith("/app"):
            mounts[fields[1]] = fields[3].split(",")[0]
    (out / "probe.json").write_text(json.dumps({
        "argv": sys.argv, "env": sorted(os.environ), "cwd": os.getcwd(),
        "e2lmc": str(Path(e2lmc.__file__).parent), "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        "proxies": [os.environ.get(k) for k in ("http_proxy", "https_proxy")], "mounts": mounts,
    }))
    if mode == "fail":
        print("stand-in: task failed", file=sys.stderr)
        sys.exit(3)
    if mode == "sleep":
        time.sleep(60)
    if mode == "write_metadata":
        reserved = "meta" + "data"  # hidden from the static check on purpose
        (out / reserved).write_text("reserved")
    manifest = load_manifest(root / "input_data", data_dir=root / "data")
    rows = [{"model": c.model, "checkpoint": c.name, "stage": c.stage,
             "source_exists": os.path.isdir(os.path.join(c.source, c.subfolder or "")),
             "value": 0.25 + 0.01 * i} for i, c in enumerate(manifest.checkpoints)]
    with (out / "results.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\\n")
    (out / "ingestion.json").write_text(json.dumps({"status": "ok", "task": sub.get("task_name")}))
''')

SCORING = textwrap.dedent('''\
    """Stand-in scoring program (test double): refuses a failed ingestion, writes scores."""
    import json, os, sys
    from pathlib import Path
    HERE = Path(__file__).resolve().parent
    sys.path.insert(0, str(HERE))
    import yaml

    KEYS = {keys!r}
    root = Path(os.environ.get("E2LMC_APP_ROOT", "/app"))
    res, ref, out = root / "input" / "res", root / "input" / "ref", root / "output"
    meta = yaml.safe_load((res / "metadata").read_text())
    if meta.get("ingestionExitCode") != 0:
        print(f"ingestion failed (exit code {{meta.get('ingestionExitCode')}}): no scores",
              file=sys.stderr)
        sys.exit(1)
    rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()]
    scores = {{k: round(0.1 * (i + 1), 3) for i, k in enumerate(KEYS)}}
    scores[KEYS[0]] = float(len(rows))
    scores["not_a_column"] = 1.0
    (out / "scores.json").write_text(json.dumps(scores))
    (out / "detailed_results.html").write_text("<html><body>stand-in</body></html>")
    (out / "probe.json").write_text(json.dumps({{
        "env": sorted(os.environ), "ref_files": sorted(p.name for p in ref.iterdir()),
        "res_files": sorted(p.name for p in res.iterdir()),
        "sources_exist": all(r["source_exists"] for r in rows),
    }}))
''')

SCORING_MODULE = textwrap.dedent('''\
    """Stand-in for the scoring module's column keys (until the real one is present)."""
    LEADERBOARD_KEYS = {keys!r}
''')


def column_keys(competition: Path) -> tuple[str, ...]:
    doc = yaml.safe_load(competition.read_text())
    return tuple(c["key"] for c in doc["leaderboards"][0]["columns"] if "computation" not in c)


def write_program(folder: Path, script: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yaml").write_text(f"command: python3 {script}\n")
    (folder / script).write_text(body)


def make_standin_bundle(dest: Path, use_real_programs: bool = False,
                        queue: str | None = TEST_QUEUE) -> Path:
    """A bundle source folder in `dest`: the repo's parts, stand-ins for missing ones.

    With `use_real_programs=False` the programs are always stand-ins (fast, no models).
    `queue` replaces the repo's placeholder queue (None keeps the placeholder).
    """
    from e2lmc.bundle.check import PLACEHOLDER_QUEUE

    dest.mkdir(parents=True, exist_ok=True)
    text = (REPO / "competition.yaml").read_text()
    if queue is not None:
        text = text.replace(f"queue: {PLACEHOLDER_QUEUE}", f"queue: {queue}")
    (dest / "competition.yaml").write_text(text)
    doc = yaml.safe_load((REPO / "competition.yaml").read_text())
    keys = column_keys(REPO / "competition.yaml")
    task = doc["tasks"][0]
    names = [doc["image"], doc["terms"], *(p["file"] for p in doc["pages"]),
             task["input_data"], task["reference_data"], *(s["path"] for s in doc["solutions"])]
    if use_real_programs:
        names += [task["ingestion_program"], task["scoring_program"]]
    for rel in names:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "judge_key*"))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    ref = dest / task["reference_data"]
    ref.mkdir(parents=True, exist_ok=True)
    if not (ref / "scoring.yaml").is_file():
        (ref / "scoring.yaml").write_text("# stand-in: every setting at its default\n{}\n")
    if not (dest / task["ingestion_program"] / "metadata.yaml").is_file():
        write_program(dest / task["ingestion_program"], "ingestion.py", INGESTION)
    if not (dest / task["scoring_program"] / "metadata.yaml").is_file():
        write_program(dest / task["scoring_program"], "score.py", SCORING.format(keys=keys))
    return dest


def package_with_keys(dest: Path) -> Path:
    """A copy of the e2lmc package that is sure to define LEADERBOARD_KEYS."""
    from e2lmc.bundle.layout import package_dir

    pkg = dest / "e2lmc"
    shutil.copytree(package_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    module = pkg / "scoring" / "program.py"
    if not module.is_file():
        module.write_text(SCORING_MODULE.format(keys=column_keys(REPO / "competition.yaml")))
    return pkg


def require_programs() -> None:
    for program in ("ingestion_program", "scoring_program"):
        if not (REPO / program / "metadata.yaml").is_file():
            pytest.skip(f"{program}/ is not in this checkout")


def example_zip(dest: Path, name: str = "science_cloze", max_docs: int | None = 120) -> Path:
    """An example submission of the demo suite, zipped as a participant would; its test
    split cut to `max_docs` documents (still within the 100-document minimum) so that a
    run over the whole micro grid fits a unit-test budget."""
    from e2lmc.suite.examples import example_dir

    folder = dest / name
    shutil.copytree(example_dir(name), folder, ignore=shutil.ignore_patterns("__pycache__"))
    test = folder / "test.jsonl"
    if max_docs is not None and test.is_file():
        lines = test.read_text().splitlines(keepends=True)
        test.write_text("".join(lines[:max_docs]))
    path = dest / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return path
