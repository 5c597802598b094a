"""Hub datasets fetched by the trusted runner, read offline by the task process.

The trusted side talks to a loopback stand-in hub (tests/hubstub.py); the task process
keeps HF_HUB_OFFLINE=1 and has no network. Stand-in datasets follow the real repos'
layouts and columns (tests/hubdata.py).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc.ingestion import prefetch
from e2lmc.ingestion.patch import task_files
from e2lmc.ingestion.prefetch import hub_key, hub_needs

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402
import hubdata  # noqa: E402
from hubstub import Repo, StubHub, go_online  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MMLU_VAR_ZIP = REPO / "starting_kit" / "example_submissions" / "mmlu_var.zip"
PARTICIPANT_TOKEN = "hf_ParticipantOwnToken42424242"
ORGANIZER_TOKEN = "hf_OrganizerSecretToken0123456789"
SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "college_physics", "virology")


@pytest.fixture(scope="session")
def hubsrv():
    """The stand-in hub with the datasets the tests read."""
    from e2lmc.baseline import MMLU_SUBJECTS

    hub = StubHub()
    hub.add("dataset", "cais/mmlu", hubdata.mmlu_repo(MMLU_SUBJECTS))
    hub.add("dataset", "org/small_mmlu", hubdata.mmlu_repo(SUBJECTS))
    for name, (repo_id, _) in hubdata.WINNER_DATASETS.items():
        _, _, _, leaves = hubdata.winner_files(name)
        n_test = max(9, -(-110 // len(leaves)))
        hub.add("dataset", repo_id, hubdata.winner_repo(name, leaves, n_test))
    hub.add("dataset", "org/private_set", hubdata.dataset_repo(
        {"default": {"test": build.mc_rows(120, seed=1)}}, token=PARTICIPANT_TOKEN))
    hub.add("dataset", "org/json_set", Repo({  # no card: `datasets` infers splits by name
        "data/test.jsonl": hubdata.jsonl(build.mc_rows(4, seed=2)),
        "data/dev.jsonl": hubdata.jsonl(build.mc_rows(2, seed=3))}))
    hub.add("dataset", "org/scripted", Repo({"scripted.py": b"import os\n",
                                             "data/test.jsonl": b"{}\n"}))
    hub.add("dataset", "org/badcard", Repo({"README.md": b"---\nconfigs: [oops\n---\n",
                                            "data/test.jsonl": b"{}\n"}))
    yield hub
    hub.stop()


@pytest.fixture
def online(hubsrv, monkeypatch):
    """The trusted side (this process) reaches the stand-in hub, and only it; the task
    process still gets HF_HUB_OFFLINE=1 from the runner."""
    monkeypatch.setenv("HF_TOKEN", ORGANIZER_TOKEN)
    return go_online(monkeypatch, hubsrv)


def task_dir(tmp_path: Path, yamls: dict[str, str]) -> Path:
    d = tmp_path / "tasks"
    for rel, text in yamls.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def mmlu_var_files(tmp_path: Path) -> Path:
    text = zipfile.ZipFile(MMLU_VAR_ZIP).read("evaluation.patch").decode()
    d = tmp_path / "mmlu_var"
    for rel, content in task_files(text).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(content)
    return d


# --------------------------------------------------------------------------- reading
def test_task_yamls_are_read_statically(tmp_path):
    """The MMLU-var example and the winners name their hub datasets through `include:`
    templates (files without a .yaml suffix); none of the submission's code is run."""
    needs = hub_needs(mmlu_var_files(tmp_path))
    assert {(n.path, n.revision) for n in needs} == {("cais/mmlu", None)}
    assert len({n.name for n in needs}) == 57
    for name, (repo_id, _) in hubdata.WINNER_DATASETS.items():
        files, _, _, leaves = hubdata.winner_files(name)
        d = task_dir(tmp_path / name, {**files, "e2lmc/x/boom.py": "open('MARK', 'w')\n"})
        needs = hub_needs(d)
        assert {n.path for n in needs} == {repo_id}
        assert sorted(str(n.name) for n in needs) == sorted(str(x) for x in leaves)
    assert not list(tmp_path.rglob("MARK"))


def test_groups_task_lists_and_overrides(tmp_path):
    """lm-eval's other ways to set a task's dataset: `task_list`, a group's inline task
    dicts, and keys of a group that override the tasks it lists."""
    d = task_dir(tmp_path, {
        "a.yaml": "task_list:\n  - task: a1\n    dataset_name: c1\n  - task: a2\n"
                  "dataset_path: org/a\ndataset_kwargs: {revision: v2}\n",
        "g.yaml": "group: g\ntask:\n  - task: inline1\n    dataset_path: org/b\n"
                  "  - plain\n  - group: sub\n    task: [plain]\n    dataset_name: c9\n"
                  "  - group: sub2\n    dataset_name: c7\ndataset_path: org/c\n",
        "s2.yaml": "group: sub2\ntask: [plain]\n",
        "plain.yaml": "task: plain\ndataset_path: json\n",
        "local.yaml": "task: loc\ndataset_path: folder\n", "folder/x.json": "{}",
    })
    got = {(n.path, n.name, n.revision) for n in hub_needs(d)}
    assert got == {("org/a", "c1", "v2"), ("org/a", None, "v2"), ("org/b", None, None),
                   ("org/c", None, None), ("org/c", "c9", None), ("org/c", "c7", None)}


# --------------------------------------------------------------------------- fetching
def test_only_the_configs_used_are_fetched_and_load_offline(online, tmp_path, monkeypatch):
    """... and nothing else: no telemetry (huggingface_hub would ask the endpoint for its
    registry of agent names once per fresh HF_HOME, i.e. from every worker container)."""
    import huggingface_hub.constants
    from huggingface_hub.utils import _headers

    asked: list[str] = []  # each call would fetch the registry where none is cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(_headers, "detect_agent", lambda: asked.append("registry"))
    d = task_dir(tmp_path, {f"t_{s}.yaml": f"task: t_{s}\ndataset_path: org/small_mmlu\n"
                            f"dataset_name: {s}\n" for s in SUBJECTS[:2]})
    got = prefetch.prefetch(d, tmp_path / "hub", None, print)
    entry = got.datasets[hub_key("org/small_mmlu", SUBJECTS[0], None)]
    folder = Path(entry["dir"])
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert fetched == ["README.md"] + sorted(f"{s}/{split}-00000-of-00001.parquet"
                                             for s in SUBJECTS[:2]
                                             for split in ("dev", "test", "validation"))
    assert all("/resolve/" not in h.path or SUBJECTS[2] not in h.path for h in online.hits)
    assert all("org/small_mmlu" in h.path for h in online.hits) and asked == []
    assert got.summary == [{"dataset": "org/small_mmlu", "revision": None, "configs": 2,
                            "bytes": got.summary[0]["bytes"], "status": "ok"}]
    ds = load_offline(folder, SUBJECTS[1])
    assert ds["test"].features["answer"].names == ["A", "B", "C", "D"]
    assert ds["test"][0]["subject"] == SUBJECTS[1] and len(ds["dev"]) == 5


def load_offline(folder: Path, name: str | None, **kw):
    """What the task process does: `datasets` on the local folder, offline."""
    import datasets

    assert datasets.config.HF_HUB_OFFLINE
    return datasets.load_dataset(str(folder), name, cache_dir=str(folder.parent / "cache"),
                                 **kw)


def test_json_dataset_without_a_card_and_data_files(online, tmp_path):
    d = task_dir(tmp_path, {
        "j.yaml": "task: j\ndataset_path: org/json_set\n",
        "k.yaml": "task: k\ndataset_path: org/json_set\ndataset_kwargs:\n  data_files:\n"
                  "    test: data/dev.jsonl\n"})
    got = prefetch.prefetch(d, tmp_path / "hub", None, print)
    folder = Path(got.datasets[hub_key("org/json_set", None, None)]["dir"])
    ds = load_offline(folder, None)
    assert sorted(ds) == ["test", "validation"] and len(ds["test"]) == 4  # dev = validation
    assert len(load_offline(folder, None, data_files={"test": "data/dev.jsonl"})["test"]) == 2


def test_private_dataset_reads_with_the_participants_token_only(online, tmp_path):
    """The participant's token reads their private dataset; the organizers' HF_TOKEN (in
    the runner's environment) is never sent for a participant's dataset."""
    d = task_dir(tmp_path, {"p.yaml": "task: p\ndataset_path: org/private_set\n"})
    key = hub_key("org/private_set", None, None)
    without = prefetch.prefetch(d, tmp_path / "a", None, print).datasets[key]
    assert "not found, or the token given cannot read it" in without["error"]
    assert "hf_token" in without["error"] and "submission p.yaml" in without["error"]
    assert "dir" in prefetch.prefetch(d, tmp_path / "b", PARTICIPANT_TOKEN, print).datasets[key]
    auths = {h.auth for h in online.hits}
    assert f"Bearer {PARTICIPANT_TOKEN}" in auths
    assert not any(ORGANIZER_TOKEN in (a or "") for a in auths)
    for p in (tmp_path / "b").rglob("*"):
        assert not p.is_file() or PARTICIPANT_TOKEN.encode() not in p.read_bytes()


@pytest.mark.parametrize("yaml_text, needle", [
    ("dataset_path: org/small_mmlu\ndataset_name: nope\n", "has no config 'nope'"),
    ("dataset_path: org/small_mmlu\n", "has several configs"),
    ("dataset_path: org/absent\n", "was not found"),
    ("dataset_path: org/..\n", "is not a valid repo id"),
    ("dataset_path: org/badcard\n", "YAML header does not parse"),
    ("dataset_path: org/small_mmlu\ndataset_kwargs: {revision: v9}\ndataset_name: anatomy\n",
     "has no such revision"),
    ("dataset_path: org/scripted\ndataset_kwargs: {trust_remote_code: true}\n",
     "loading script (scripted.py)"),
    ("dataset_path: org/json_set\ndataset_kwargs: {data_files: {test: ../x.jsonl}}\n",
     "inside the dataset repo"),
    ("dataset_path: org/json_set\ndataset_kwargs: {data_files: {test: data/none.*}}\n",
     "no file of the dataset matches 'data/none.*'"),
])
def test_named_errors(online, tmp_path, yaml_text, needle):
    d = task_dir(tmp_path, {"t.yaml": "task: t\n" + yaml_text})
    (entry,) = prefetch.prefetch(d, tmp_path / "hub", None, print).datasets.values()
    assert needle in entry["error"] and "submission t.yaml" in entry["error"]


def test_size_limit_and_unreachable_hub(online, tmp_path, monkeypatch):
    d = task_dir(tmp_path, {"t.yaml": "task: t\ndataset_path: cais/mmlu\ndataset_name: all\n",
                            "u.yaml": "task: u\ndataset_path: org/json_set\n"})
    got = prefetch.prefetch(d, tmp_path / "a", None, print, max_bytes=1000).datasets
    assert "is too large" in got[hub_key("cais/mmlu", "all", None)]["error"]
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    online.reset_hits()
    got = prefetch.prefetch(d, tmp_path / "b", None, print).datasets
    assert all("HF_HUB_OFFLINE=1" in v["error"] for v in got.values()) and not online.hits


def test_a_damaged_download_is_refused(online, tmp_path):
    online.add("dataset", "org/damaged", hubdata.dataset_repo(
        {"default": {"test": build.mc_rows(3, seed=4)}}))
    online.repos[("dataset", "org/damaged")].corrupt.add("data/test-00000-of-00001.parquet")
    d = task_dir(tmp_path, {"t.yaml": "task: t\ndataset_path: org/damaged\n"})
    (entry,) = prefetch.prefetch(d, tmp_path / "hub", None, print).datasets.values()
    assert "does not match the size and hash" in entry["error"]
    assert not list((tmp_path / "hub").rglob("*.parquet"))


def test_the_task_process_is_never_given_a_token(tmp_path):
    """Even where the manifest allows the network (it used to hand the participant's
    token to the task process then)."""
    from e2lmc.ingestion.taskproc import TaskProcess

    for allow in (False, True):
        tp = TaskProcess(tmp_path, "t", tmp_path, allow_network=allow,
                         hf_token=PARTICIPANT_TOKEN)
        env = tp._env(tmp_path / "home")
        assert PARTICIPANT_TOKEN not in " ".join(env.values()) and "HF_TOKEN" not in env
        assert (env.get("HF_HUB_OFFLINE") == "1") is not allow


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def one_ckpt(tiny_grid, tmp_path_factory):
    return build.subset_manifest(tiny_grid, tmp_path_factory.mktemp("one_ckpt"))


@pytest.mark.slow
def test_mmlu_var_example_ingests_with_the_hub_dataset(online, one_ckpt, tmp_path):
    """The starting kit's MMLU-var submission, unchanged, reads cais/mmlu (57 configs)."""
    from e2lmc.ingestion.run import ingest

    doc = ingest(MMLU_VAR_ZIP, one_ckpt, tmp_path / "out", engine="hf")
    assert doc["status"] == "ok", doc["error"]
    assert doc["n_docs"] == 57 * 2 and doc["hub_datasets"][0]["status"] == "ok"
    (row,) = R.read_results(tmp_path / "out")
    assert row.status == "ok" and 0 <= row.value <= 1


@pytest.mark.slow
@pytest.mark.parametrize("winner", sorted(hubdata.WINNER_DATASETS))
def test_upstream_winners_ingest_unchanged(winner, online, one_ckpt, tmp_path):
    """The three winners' tasks as lm-eval 0.4.13 ships them, hub datasets included."""
    from e2lmc.ingestion.run import ingest

    files, task, metric, _ = hubdata.winner_files(winner)
    zpath = build.official_zip(tmp_path / f"{winner}.zip", files, task, metric)
    doc = ingest(zpath, one_ckpt, tmp_path / "out", engine="hf")
    assert doc["status"] == "ok", doc["error"]
    assert doc["task"] == task and 100 <= doc["n_docs"] <= 15000
    (row,) = R.read_results(tmp_path / "out")
    assert row.status == "ok" and row.value is not None


SCAN = r'''
import os

def process_docs(ds):
    """Look for the participant's token everywhere this process can read."""
    token = "NEKOT"[::-1]  # written reversed, so that this file does not hold it
    env = open("/proc/self/environ", "rb").read().decode(errors="replace")
    found = [k for k, v in os.environ.items() if token in v] + (["environ"] if token in env else [])
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the run's work dir
    seen = []
    walks = [os.walk(os.path.join(top, sub)) for sub in ("tasks", "hub", "taskhome")]
    for d, _, names in (step for w in walks for step in w):
        for n in names:
            p = os.path.join(d, n)
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            seen.append(n)
            if token.encode() in data:
                found.append(p)
    # the same note on every run (lm-eval may process the documents more than once)
    note = f"SCAN parquet={sum(n.endswith('.parquet') for n in seen)} found={sorted(found)}"
    return ds.map(lambda d, i: {"question": (note + " " if i == 0 else "") + d["question"]},
                  with_indices=True)
'''.replace("NEKOT", PARTICIPANT_TOKEN[::-1])


@pytest.mark.slow
def test_participant_token_never_reaches_task_code(online, one_ckpt, tmp_path):
    """Task code searches its environment and every file it can read for the token that
    fetched its private dataset, and finds it nowhere."""
    from e2lmc.ingestion.run import ingest

    text = build.TASK_YAML.format(name="priv", output_type="multiple_choice").replace(
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/test.jsonl\n",
        "dataset_path: org/private_set\nprocess_docs: !function scan.process_docs\n")
    sub = build.task_folder(tmp_path / "sub", name="priv", yaml_text=text,
                            files={"scan.py": SCAN}, hf_token=PARTICIPANT_TOKEN)
    doc = ingest(sub, one_ckpt, tmp_path / "out", engine="hf")
    assert doc["status"] == "ok", doc["error"]
    note = R.read_items(tmp_path / "out")[0].prompt
    assert "SCAN" in note and "parquet=1" in note and "found=[]" in note, note
    assert os.environ["HF_TOKEN"] == ORGANIZER_TOKEN  # present on the runner's side only
    for p in (tmp_path / "out").iterdir():
        assert PARTICIPANT_TOKEN.encode() not in p.read_bytes()


@pytest.mark.slow
def test_a_dataset_that_cannot_be_fetched_is_a_named_error(online, one_ckpt, tmp_path):
    from e2lmc.ingestion.run import ingest

    text = build.TASK_YAML.format(name="gone", output_type="multiple_choice").replace(
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/test.jsonl\n",
        "dataset_path: org/small_mmlu\ndataset_name: chemistry\n")
    doc = ingest(build.task_folder(tmp_path / "sub", name="gone", yaml_text=text), one_ckpt,
                 tmp_path / "out", engine="hf")
    assert doc["status"] == "failed" and doc["error_kind"] == "hub_dataset"
    assert "submission gone.yaml: dataset org/small_mmlu (config chemistry): the dataset " \
           "has no config 'chemistry'" in doc["error"]
    assert json.loads((tmp_path / "out" / R.INGESTION_JSON).read_text())["hub_datasets"]
