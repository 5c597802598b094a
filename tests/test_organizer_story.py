"""The organizer's story end to end, as docs/organizers.md tells it: stage the checkpoint
grid from the hub onto the worker's data disk, build the bundle, then run submissions the
way the compute worker does, in containers, and get their leaderboard rows.

The hub is the stand-in (tests/hubstub.py) serving the micro demo suite: one model repo
per model with its public checkpoints as subfolders, the hidden checkpoints of every
model in one private repo that only the organizer's token reads, and `cais/mmlu` as a
dataset (tests/hubdata.py). The bundle's manifest names only `hf://` sources with
`download: false`, so the runs must load every checkpoint from the staged copies.

Network: the stand-in hub listens on the Docker bridge's gateway address (172.17.0.1 on a
default engine), not on loopback. The host reaches that address as one of its own (the
staging), and a container on the default bridge network, the worker's own setting
(network on, no extra hosts or network mode), reaches it as its default gateway (the
runner's pre-fetch of hub datasets). The containers get nothing from the host's
environment but HF_ENDPOINT and a thread count: no token, no offline switch, so what the
ingestion may fetch is what it asks for itself.

Needs a Docker engine and the worker image (session fixture `worker_image`); the durations
of its steps go to stderr. Measured on the 2-core development machine (the second figure
with other jobs on the cores): staging 21-24 s, the bundle 1 s, the demo example 30 s-2 min
and MMLU-var 3-8 min over the 56 checkpoints; 6 minutes in all, with the session's micro
suite build. MMLU-var costs four to six times as much because each of its 57 subjects has
its own 5-shot block, so the engine shares little of the prompts between documents; its
114 documents (two per subject) are near the 100-document minimum, and the grid is the
bundle's own.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from bundle_standins import TEST_QUEUE, example_zip, make_standin_bundle, require_programs
from profiles import cannot_run, docker_client
from e2lmc.bundle.worker import RunResult, run_local
from e2lmc.cli import main
from e2lmc.manifest import load_manifest
from e2lmc.stage import use_staged

import hubdata
from hubstub import StubHub, go_online

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MMLU_VAR_ZIP = REPO / "starting_kit" / "example_submissions" / "mmlu_var.zip"
ORGANIZER_TOKEN = "hf_OrganizerSecretToken0123456789"
OWNER = "e2lm-demo"
HIDDEN_REPO = f"{OWNER}/hidden-checkpoints"
RUN_TIMEOUT = 1800  # seconds per step; the bundle's own limit is the phases' 12 hours


def bridge_gateway() -> str:
    """The address of the host on Docker's default bridge network."""
    client, reason = docker_client()
    if client is None:
        cannot_run("worker", reason)
    return client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]


def serve_suite(suite_manifest: Path, hub: StubHub) -> dict:
    """Put the suite's checkpoints on the hub; returns its manifest with `hf://` sources:
    public checkpoints from one repo per model, hidden ones from the private repo (as
    `MODEL/ITERATION` subfolders)."""
    doc = yaml.safe_load(suite_manifest.read_text())
    hidden: dict[str, Path] = {}
    for model in doc["models"]:
        public: dict[str, Path] = {}
        for ck in model["checkpoints"]:
            folder = suite_manifest.parent / ck.get("source", model["source"]) / ck["subfolder"]
            if ck["stage"] == "public":
                public[ck["subfolder"]] = folder
            else:
                sub = f"{model['name']}/{ck['subfolder']}"
                hidden[sub] = folder
                ck.update(source=f"hf://{HIDDEN_REPO}", subfolder=sub)
        model["source"] = f"hf://{OWNER}/{model['name']}"
        hub.add("model", f"{OWNER}/{model['name']}", hubdata.model_repo(public))
    hub.add("model", HIDDEN_REPO, hubdata.model_repo(hidden, token=ORGANIZER_TOKEN))
    doc["defaults"]["download"] = False
    return doc


@pytest.fixture
def story_hub(micro_suite, worker_image):
    """The stand-in hub on the bridge gateway, serving the micro suite and cais/mmlu."""
    from e2lmc.baseline import MMLU_SUBJECTS

    hub = StubHub(host=bridge_gateway(), lifetime=2 * 3600)
    hub.add("dataset", "cais/mmlu", hubdata.mmlu_repo(MMLU_SUBJECTS))
    yield hub
    hub.stop()


def _timed(label: str, timings: dict[str, float], fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    timings[label] = round(time.monotonic() - start, 1)
    print(f"\norganizer story: {label} in {timings[label]} s", file=sys.stderr)
    return out


def _check_scored(result: RunResult, n_checkpoints: int) -> dict:
    """Both steps succeeded, the row has every column, every checkpoint was evaluated and
    the task process had no network; returns ingestion.json."""
    from e2lmc.scoring.program import LEADERBOARD_KEYS

    assert result.prediction.exit_code == 0, result.prediction.stderr.read_text()[-3000:]
    assert set(result.leaderboard) == set(LEADERBOARD_KEYS)
    assert 0.0 <= result.leaderboard["score"] <= 1.0
    doc = json.loads((result.workdir / "app" / "input" / "res" / "ingestion.json").read_text())
    assert doc["status"] == "ok", doc["error"]
    assert doc["checkpoints"]["ok"] == doc["checkpoints"]["total"] == n_checkpoints
    isolation = doc["isolation"]
    assert isolation["network"] != "allowed by the manifest"
    assert isolation["seccomp"].endswith("no socket()"), isolation
    abi = re.match(r"ABI (\d+):", isolation["landlock"])
    if abi and int(abi.group(1)) >= 4:  # Landlock's network rules
        assert "no TCP bind/connect" in isolation["landlock"], isolation
    return doc


def test_stage_build_and_run_in_docker(story_hub, micro_suite, worker_image, tmp_path,
                                       monkeypatch):
    require_programs()
    hub = story_hub
    timings: dict[str, float] = {}

    # The bundle source: the repository's parts, the grid on the hub, the suite's scoring.
    src = make_standin_bundle(tmp_path / "src", use_real_programs=True)
    manifest = src / "input_data" / "e2lm" / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(serve_suite(micro_suite, hub), sort_keys=False))
    (src / "reference_data" / "e2lm" / "scoring.yaml").write_text(
        (micro_suite.parent / "scoring.yaml").read_text())
    n_checkpoints = len(load_manifest(manifest).checkpoints)

    # Worker setup: staged once, with the organizer's token for the private repo.
    monkeypatch.setenv("HF_TOKEN", ORGANIZER_TOKEN)
    go_online(monkeypatch, hub)
    data = tmp_path / "data"
    assert _timed("stage", timings, main, ["stage", str(manifest), "--data", str(data)]) == 0
    staged = use_staged(load_manifest(manifest), data)
    assert all(Path(ck.source).is_relative_to(data) for ck in staged.checkpoints)
    hidden_hits = [h for h in hub.hits if HIDDEN_REPO in h.path]
    assert hidden_hits and all(h.auth == f"Bearer {ORGANIZER_TOKEN}" for h in hidden_hits)
    for p in data.rglob("*"):
        assert not p.is_file() or ORGANIZER_TOKEN.encode() not in p.read_bytes(), p

    bundle = tmp_path / "e2lmc_bundle.zip"
    assert _timed("bundle build", timings, main, [
        "bundle", "build", "--root", str(src), "--queue", TEST_QUEUE,
        "--output", str(bundle)]) == 0
    bundled = yaml.safe_load(zipfile.ZipFile(bundle).read("input_data/e2lm/manifest.yaml"))
    assert bundled["defaults"]["download"] is False
    assert {m["source"] for m in bundled["models"]} == {
        f"hf://{OWNER}/{m.name}" for m in staged.models}

    # Submissions, as the worker runs them: nothing from this process's environment but
    # where the hub is (no token, no offline switch).
    hub.reset_hits()
    env = {"HF_ENDPOINT": hub.url, "OMP_NUM_THREADS": "2"}
    example = _timed("run-local --docker, demo example", timings, run_local,
                     example_zip(tmp_path), "e2lm", bundle=bundle, docker_image=worker_image,
                     workdir=tmp_path / "example", data=data, network=True, env=env,
                     timeout=RUN_TIMEOUT)
    doc = _check_scored(example, n_checkpoints)
    assert "hub_datasets" not in doc and hub.hits == []  # bundled data, staged weights

    mmlu = _timed("run-local --docker, MMLU-var", timings, run_local, MMLU_VAR_ZIP, "e2lm",
                  bundle=bundle, docker_image=worker_image, workdir=tmp_path / "mmlu",
                  data=data, network=True, env=env, timeout=RUN_TIMEOUT)
    doc = _check_scored(mmlu, n_checkpoints)
    assert doc["n_docs"] == 57 * 2
    (fetched,) = doc["hub_datasets"]
    assert fetched["dataset"] == "cais/mmlu" and fetched["status"] == "ok"
    assert fetched["configs"] == 57 and fetched["bytes"] > 0
    # The runner fetched the dataset's files and no weight, with no token, and nothing else
    # (huggingface_hub's telemetry, which would ask for its registry of agent names from
    # every fresh container, is off).
    assert hub.downloads() and all(p.startswith("/datasets/cais/mmlu/resolve/")
                                   for p in hub.downloads())
    others = {h.path for h in hub.hits
              if not h.path.startswith(("/api/datasets/cais/mmlu", "/datasets/cais/mmlu/"))}
    assert others == set(), others
    assert all(h.auth is None for h in hub.hits)
    print(f"\norganizer story timings (s): {timings}", file=sys.stderr)
