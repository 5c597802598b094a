"""Hostile submissions: each ends in a named error or a contained failure.

Every case also checks that no secret reaches any output or log, and that nothing is
written outside the output folder (the run's temp dir is redirected and must be empty).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc.errors import UserError
from e2lmc.ingestion.run import ingest
from e2lmc.ingestion.submission import load_submission
from e2lmc.ingestion.taskproc import Limits
from e2lmc.ingestion.unpack import UnpackLimits

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

SECRETS = {
    "HF_TOKEN": "hf_OrganizerSecretToken0123456789",
    "OPENAI_API_KEY": "sk-judge-secret-key-abcdef",
    "E2LMC_JUDGE_API_KEY": "judge-secret-0987654321",
}
PARTICIPANT_TOKEN = "hf_ParticipantOwnToken42424242"
LIMITS = Limits(memory_bytes=4 << 30, prepare_timeout=90, score_timeout=60)


def mc_yaml(old: str = "", new: str = "") -> str:
    """The example multiple-choice task YAML, with `old` (which must be in it) made `new`."""
    text = build.TASK_YAML.format(name="mini_mc", output_type="multiple_choice")
    assert old in text, f"{old!r} is not in the task YAML"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def one_ckpt(tiny_grid, tmp_path_factory):
    return build.subset_manifest(tiny_grid, tmp_path_factory.mktemp("one_ckpt"))


@pytest.fixture
def run(one_ckpt, tmp_path, monkeypatch, capfd):
    """ingest() with secrets in the environment; returns (doc, output dir, all text seen)."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def go(submission: Path, limits: Limits = LIMITS) -> tuple[dict, Path, str]:
        out = tmp_path / "out"
        lines: list[str] = []
        doc = ingest(submission, one_ckpt, out, engine="hf", limits=limits,
                     log=lines.append)
        cap = capfd.readouterr()
        seen = "\n".join(lines) + cap.out + cap.err
        seen += "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
        for secret in [*SECRETS.values(), PARTICIPANT_TOKEN]:
            assert secret not in seen, "a secret leaked into the output or the logs"
        assert "metadata" not in {p.name for p in out.iterdir()}
        assert list(scratch.iterdir()) == [], "the run left files in its temp dir"
        R.write_json(tmp_path / "check.json", doc)  # strict JSON: no NaN anywhere
        return doc, out, seen

    return go


def failed(doc: dict, *needles: str) -> None:
    assert doc["status"] == "failed", doc
    for n in needles:
        assert n in doc["error"], doc["error"]


# ------------------------------------------------------------------ archives (no code runs)
def zip_with(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n")
        for info, data in entries:
            zf.writestr(info, data)
    return path


def special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (mode & 0xFFFF) << 16
    return info


ARCHIVE_CASES = {
    "zip_slip": ([("../evil.py", b"x")], "climbs out"),
    "absolute_path": ([("/tmp/evil.py", b"x")], "absolute path"),
    "symlink": ([(special("link.yaml", stat.S_IFLNK | 0o777), b"/etc/passwd")],
                "symbolic link"),
    "device_file": ([(special("dev", stat.S_IFCHR | 0o666), b"")], "device"),
    "fifo": ([(special("pipe", stat.S_IFIFO | 0o666), b"")], "device, FIFO"),
    "nested_zip_by_name": ([("data/more.zip", b"not really")], "nested archive"),
    "nested_gzip_by_content": ([("data/test.jsonl", b"\x1f\x8b\x08\x00rest")],
                               "nested archive"),
    "zip_bomb_ratio": ([("data/zeros.jsonl", b"\0" * (4 << 20))], "zip bomb"),
    "duplicate_entry": ([("a.yaml", b"task: a"), ("a.yaml", b"task: b")], "appears twice"),
    "control_char_name": ([("bad\x01name.yaml", b"x")], "control characters"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_archive_refusals(case, tmp_path):
    entries, needle = ARCHIVE_CASES[case]
    with pytest.warns(UserWarning) if case == "duplicate_entry" else _nothing():
        z = zip_with(tmp_path / "sub.zip", entries)
    with pytest.raises(UserError, match=needle):
        load_submission(z, tmp_path / "work")
    assert not (tmp_path / "evil.py").exists() and not Path("/tmp/evil.py").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_non_utf8_name(tmp_path):
    z = zip_with(tmp_path / "sub.zip", [])
    raw = z.read_bytes().replace(b"metadata.yaml", b"metad\xe9ta.yaml")  # cp437, no UTF-8 flag
    z.write_bytes(raw)
    with pytest.raises(UserError, match="UTF-8"):
        load_submission(z, tmp_path / "work")


@pytest.mark.parametrize("limits, needle", [
    (UnpackLimits(max_file_bytes=1000), "larger than"),
    (UnpackLimits(max_total_bytes=3000, max_file_bytes=2500), "larger than"),
    (UnpackLimits(max_files=3), "entries"),
])
def test_size_and_count_caps(limits, needle, tmp_path):
    z = zip_with(tmp_path / "sub.zip", [(f"f{i}.txt", b"y" * 2000) for i in range(4)])
    with pytest.raises(UserError, match=needle):
        load_submission(z, tmp_path / "work", limits)


def test_not_a_zip(run, tmp_path):
    bad = tmp_path / "sub.zip"
    bad.write_bytes(b"this is not a zip")
    doc, _, _ = run(bad)
    failed(doc, "not a valid zip")


def test_symlink_in_folder_submission(tmp_path):
    folder = build.task_folder(tmp_path / "sub")
    (folder / "data" / "secret.jsonl").symlink_to("/etc/passwd")
    with pytest.raises(UserError, match="symbolic link"):
        load_submission(folder, tmp_path / "work")


# ------------------------------------------------------------------ metadata, YAML, patch
def test_yaml_that_fails_to_parse(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub", yaml_text="task: t\ndoc_to_text: [unclosed\n")
    doc, _, _ = run(folder)
    failed(doc, "mini_mc.yaml", "not valid YAML", "line")


def test_metadata_without_metric(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub")
    (folder / "metadata.yaml").write_text("task_name: mini_mc\n")
    doc, _, _ = run(folder)
    failed(doc, "task_metric")


def test_patch_touching_lm_eval_core(run, tmp_path):
    files = build.folder_files(build.task_folder(tmp_path / "t"))
    patch = build.new_file_patch(files) + build.new_file_patch(
        {"api/metrics.py": "def evil():\n    pass\n"}, prefix="lm_eval/")
    z = build.official_zip(tmp_path / "sub.zip", files, "mini_mc", "acc,none", patch_text=patch)
    doc, _, _ = run(z)
    failed(doc, "lm_eval/api/metrics.py", "not supported")


def test_patch_climbing_out_of_tasks(tmp_path):
    patch = build.new_file_patch({"../../../evil.py": "x = 1\n"})
    z = build.official_zip(tmp_path / "sub.zip", {}, "t", "acc,none", patch_text=patch)
    with pytest.raises(UserError, match=r"'\.\.'"):
        load_submission(z, tmp_path / "work")


def test_binary_patch(tmp_path):
    patch = ("diff --git a/lm_eval/tasks/x/d.parquet b/lm_eval/tasks/x/d.parquet\n"
             "new file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 3\n"
             "KcmZ?wKm-5)00030\n\n")
    z = build.official_zip(tmp_path / "sub.zip", {}, "t", "acc,none", patch_text=patch)
    with pytest.raises(UserError, match="binary"):
        load_submission(z, tmp_path / "work")


# ------------------------------------------------------------------ task process: validation
@pytest.mark.slow
@pytest.mark.parametrize("n_docs", [99, 15_001])
def test_document_count_bounds(run, tmp_path, n_docs):
    yaml_text = build.TASK_YAML.format(name="mini_mc", output_type="loglikelihood").replace(
        'doc_to_target: "{{answer}}"', 'doc_to_target: " {{choices[answer]}}"').replace(
        "doc_to_choice: \"{{choices}}\"\n", "")
    folder = build.task_folder(tmp_path / "sub", n_docs=n_docs, yaml_text=yaml_text)
    doc, _, _ = run(folder)
    failed(doc, f"{n_docs} documents", "100 to 15,000")


@pytest.mark.slow
def test_missing_metric_key(run, tmp_path):
    doc, _, _ = run(build.task_folder(tmp_path / "sub", metric="f1,none"))
    failed(doc, "'f1,none'", "acc,none")


@pytest.mark.slow
def test_unknown_metric_is_not_downloaded(run, tmp_path):
    text = mc_yaml(
        "metric: acc", "metric: bleurt_from_the_hub")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "bleurt_from_the_hub", "built-in")


@pytest.mark.slow
def test_hub_dataset_needs_bundled_data(run, tmp_path):
    text = mc_yaml(
        "dataset_path: json", "dataset_path: someone/private_set")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text,
                                      hf_token=PARTICIPANT_TOKEN))
    failed(doc, "bundle your data")


@pytest.mark.slow
def test_remote_data_files_need_bundled_data(run, tmp_path):
    text = mc_yaml(
        "test: data/test.jsonl", "test: https://example.org/test.jsonl")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "remote", "bundle your data")


@pytest.mark.slow
def test_data_files_outside_the_submission(run, tmp_path):
    text = mc_yaml(
        "test: data/test.jsonl", "test: ../../../../../../etc/hostname")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "outside the submission")


@pytest.mark.slow
def test_task_name_not_defined(run, tmp_path):
    doc, _, _ = run(build.task_folder(tmp_path / "sub", task_name="no_such_task"))
    failed(doc, "no_such_task", "mini_mc")


@pytest.mark.slow
def test_huge_prompt(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub")
    rows = build.mc_rows(120, seed=1)
    rows[5]["question"] = "why " * 60_000
    build.write_jsonl(folder / "data" / "test.jsonl", rows)
    doc, _, _ = run(folder)
    failed(doc, "request", "characters long")


# ------------------------------------------------------------------ task process: hostile code
def with_helper(tmp_path: Path, helper: str, hook: str = "process_docs",
                yaml_text: str | None = None, **kw) -> Path:
    text = yaml_text or mc_yaml()
    text += f"{hook}: !function utils.{hook}\n" if hook else ""
    return build.task_folder(tmp_path / "sub", yaml_text=text, files={"utils.py": helper}, **kw)


@pytest.mark.slow
def test_infinite_loop_is_stopped(run, tmp_path):
    folder = with_helper(tmp_path, "def process_docs(ds):\n    while True:\n        pass\n")
    doc, _, _ = run(folder, Limits(prepare_timeout=6, score_timeout=6))
    failed(doc, "longer than 6 s")
    assert doc["error_kind"] == "timeout"


@pytest.mark.slow
def test_memory_hog_is_contained(run, tmp_path):
    folder = with_helper(tmp_path, "def process_docs(ds):\n"
                                   "    hog = bytearray(64 << 30)\n    return ds\n")
    doc, _, _ = run(folder)
    failed(doc, "memory")


@pytest.mark.slow
def test_exit_in_task_code(run, tmp_path):
    folder = with_helper(tmp_path, "import os\ndef process_docs(ds):\n    os._exit(3)\n")
    doc, _, _ = run(folder)
    failed(doc, "exited")


@pytest.mark.slow
def test_code_reading_secrets_and_writing_outside(tmp_path, one_ckpt):
    """Helpers dump the environment (their own and every process's they can read) and the
    manifest into the prompts, and try to write next to the outputs: the dumps hold no
    secret, the writes do not land. The runner is a CLI process started with the secrets
    in its environment, as on the platform."""
    target = tmp_path / "out" / "planted.txt"
    outside = tmp_path / "planted_outside.txt"
    helper = f"""
import os, json, glob
def process_docs(ds):
    env = json.dumps(dict(os.environ))
    for path in glob.glob('/proc/[0-9]*/environ'):  # other processes' environments
        try:
            env += open(path, 'rb').read().decode(errors='replace')
        except OSError:
            pass
    try:
        manifest = open({str(one_ckpt / 'manifest.yaml')!r}).read()
    except OSError as exc:
        manifest = 'unreadable: ' + type(exc).__name__
    for path in ({str(target)!r}, {str(outside)!r}):
        try:
            with open(path, 'w') as fh:
                fh.write('x')
        except OSError:
            pass
    print('PRINTED-BY-TASK', env)
    return ds.map(lambda d, i: {{"question": d["question"] + (env + manifest if i == 0 else "")}},
                  with_indices=True)
"""
    text = mc_yaml(
        'doc_to_text: "Question: {{question}}', "doc_to_text: \"{% if '(0)' in question %}"
        "{{cycler.__init__.__globals__.os.environ}}{% endif %} Question: {{question}}")
    folder = with_helper(tmp_path, helper, yaml_text=text, hf_token=PARTICIPANT_TOKEN)
    out = tmp_path / "out"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, **SECRETS, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "e2lmc", "ingest", "--submission",
                           str(folder), "--input-data", str(one_ckpt), "--output", str(out),
                           "--engine", "hf"], env=env, capture_output=True, text=True,
                          timeout=600)
    seen = proc.stdout + proc.stderr + "".join(
        p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    for secret in [*SECRETS.values(), PARTICIPANT_TOKEN]:
        assert secret not in seen, "a secret leaked into the output or the logs"
    assert list(scratch.iterdir()) == []
    doc = json.loads((out / R.INGESTION_JSON).read_text())
    assert proc.returncode == 0 and doc["status"] == "ok", doc["error"]
    prompt = R.read_items(out)[0].prompt
    assert "PYTHONPATH" in prompt  # the dump happened (via the helper and via Jinja)
    assert "HF_TOKEN" not in prompt and "OPENAI" not in prompt and "JUDGE" not in prompt
    assert "tiny-0-arch1" not in prompt and "iter_0001000" not in prompt
    if doc["isolation"]["filesystem"].startswith("read-only"):
        assert not target.exists() and not outside.exists()
        assert "unreadable" in prompt or "models" not in prompt
    assert "PRINTED-BY-TASK" not in seen  # the task's prints are captured, not echoed


@pytest.mark.slow
def test_metric_returning_nan(run, tmp_path):
    helper = "def nan_agg(items):\n    return float('nan')\n"
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.nan_agg\n")
    doc, out, _ = run(with_helper(tmp_path, helper, hook=None, yaml_text=text))
    (row,) = R.read_results(out)
    assert row.value is None and "not a finite number" in row.error
    assert "NaN" not in (out / R.RESULTS_JSONL).read_text()


@pytest.mark.slow
def test_aggregation_that_raises(run, tmp_path):
    helper = "def bad_agg(items):\n    raise ValueError('broken aggregation')\n"
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.bad_agg\n")
    doc, _, _ = run(with_helper(tmp_path, helper, hook=None, yaml_text=text))
    failed(doc, "broken aggregation")


def test_zip_entry_bytes_are_counted_not_trusted(tmp_path):
    """A zip that under-declares an entry's size is still stopped at the real bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.yaml", "task_name: t\ntask_metric: acc,none\n")
        zf.writestr("big.txt", b"z" * 5000)
    raw = bytearray(buf.getvalue())
    # shrink the declared uncompressed size in the central directory (5000 -> 10)
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    (tmp_path / "sub.zip").write_bytes(bytes(raw))
    with pytest.raises((UserError, zipfile.BadZipFile)):
        load_submission(tmp_path / "sub.zip", tmp_path / "work", UnpackLimits(max_file_bytes=2000))


@pytest.mark.slow
def test_without_namespaces_the_task_still_runs_confined(run, tmp_path):
    """The unprivileged fallback (a container without CAP_SYS_ADMIN): no namespaces, but the
    scrubbed environment, limits and captured output still apply."""
    helper = (f"import os\ndef process_docs(ds):\n    leaked = set(os.environ) & {set(SECRETS)!r}"
              "\n    assert not leaked, leaked\n    return ds\n")
    doc, _, _ = run(with_helper(tmp_path, helper),
                    Limits(memory_bytes=4 << 30, namespaces=False))
    assert doc["status"] == "ok", doc["error"]
    assert doc["isolation"]["network"].startswith("not isolated")
    assert doc["isolation"]["filesystem"].startswith("not isolated")


@pytest.mark.slow
def test_aggregation_that_rejects_placeholders_still_runs(run, tmp_path):
    """The metric-key check runs the task's aggregation on placeholder answers; a custom
    aggregation that cannot digest them must not get a valid task refused."""
    helper = ("import numpy as np\n"
              "def diff(items):\n"
              "    lls = [ll for _, row in items for ll in row]\n"
              "    if max(lls) > -1.7:\n"
              "        raise ValueError('placeholder answers')\n"
              "    return float(np.mean([row[g] - np.mean(row) for g, row in items]))\n")
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: likelihood\n    aggregation: !function utils.diff\n")
    doc, out, _ = run(with_helper(tmp_path, helper, hook=None, yaml_text=text,
                                  metric="likelihood,none"))
    assert doc["status"] == "ok", doc["error"]
    (row,) = R.read_results(out)
    assert row.value is not None and row.status == "ok"

