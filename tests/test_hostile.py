"""Hostile submissions: each ends in a named error or a contained failure.

Every case also checks that no secret reaches any output or log, and that nothing is
written outside the output folder (the run's temp dir is redirected and must be empty).
The `run` fixture ingests under the test's platform profile: `root` (in this process) by
default; `@pytest.mark.profiles("root", "user", "worker")` runs a test under each
(tests/profiles.py).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from e2lmc import results as R
from e2lmc.errors import UserError
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
# Cases whose outcome depends on the platform run under each profile; Docker's only where
# the container changes what the sandbox can do (every act of hostile code).
EVERY_PROFILE = pytest.mark.profiles("root", "user", "worker")
NO_DOCKER = pytest.mark.profiles("root", "user")


def mc_yaml(old: str = "", new: str = "") -> str:
    """The example multiple-choice task YAML, with `old` (which must be in it) made `new`."""
    text = build.TASK_YAML.format(name="mini_mc", output_type="multiple_choice")
    assert old in text, f"{old!r} is not in the task YAML"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def one_ckpt(tiny_grid, tmp_path_factory):
    return build.subset_manifest(tiny_grid, tmp_path_factory.mktemp("one_ckpt"))


@pytest.fixture
def run(one_ckpt, tmp_path, capfd, ingest_runner):
    """ingest() under the test's profile, with the secrets in the runner's environment and
    its temp dir redirected; returns (doc, output dir, all text seen)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def go(submission: Path, limits: Limits = LIMITS,
           input_data: Path | None = None) -> tuple[dict, Path, str]:
        out = tmp_path / "out"
        doc, printed = ingest_runner(submission, input_data or one_ckpt, out, limits,
                                     {**SECRETS, "TMPDIR": str(scratch)})
        cap = capfd.readouterr()
        seen = printed + cap.out + cap.err
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


@pytest.mark.slow
@pytest.mark.profiles("root", "user", "worker")
def test_honest_task_under_every_profile(run, tmp_path, profile):
    """The harness: an honest task scores under each profile, whose isolation report
    (what each confinement layer achieved there) is printed for the record."""
    doc, out, _ = run(build.task_folder(tmp_path / "sub"))
    assert doc["status"] == "ok", doc["error"]
    (row,) = R.read_results(out)
    assert row.status == "ok" and row.value is not None
    print(f"\n{profile}: isolation {json.dumps(doc['isolation'])}")
    # the user layer names the real cause wherever the task process stays root
    assert doc["isolation"]["user"] in {
        "root": ("nobody", "root (the runner's files are not readable by nobody)"),
        "worker": ("root (no CAP_CHOWN/CAP_SETUID/CAP_SETGID here)",),
        "user": ("unprivileged (not root)",)}[profile], doc["isolation"]["user"]


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


@NO_DOCKER
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
@NO_DOCKER
def test_yaml_that_fails_to_parse(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub", yaml_text="task: t\ndoc_to_text: [unclosed\n")
    doc, _, _ = run(folder)
    failed(doc, "mini_mc.yaml", "not valid YAML", "line")


@NO_DOCKER
def test_metadata_without_metric(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub")
    (folder / "metadata.yaml").write_text("task_name: mini_mc\n")
    doc, _, _ = run(folder)
    failed(doc, "task_metric")


@NO_DOCKER
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
@NO_DOCKER
@pytest.mark.slow
@pytest.mark.parametrize("n_docs", [99, 15_001])
def test_document_count_bounds(run, tmp_path, n_docs):
    yaml_text = build.TASK_YAML.format(name="mini_mc", output_type="loglikelihood").replace(
        'doc_to_target: "{{answer}}"', 'doc_to_target: " {{choices[answer]}}"').replace(
        "doc_to_choice: \"{{choices}}\"\n", "")
    folder = build.task_folder(tmp_path / "sub", n_docs=n_docs, yaml_text=yaml_text)
    doc, _, _ = run(folder)
    failed(doc, f"{n_docs} documents", "100 to 15,000")


@NO_DOCKER
@pytest.mark.slow
def test_missing_metric_key(run, tmp_path):
    doc, _, _ = run(build.task_folder(tmp_path / "sub", metric="f1,none"))
    failed(doc, "'f1,none'", "acc,none")


@NO_DOCKER
@pytest.mark.slow
def test_unknown_metric_is_not_downloaded(run, tmp_path):
    text = mc_yaml(
        "metric: acc", "metric: bleurt_from_the_hub")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "bleurt_from_the_hub", "built-in")


@NO_DOCKER
@pytest.mark.slow
def test_hub_dataset_needs_bundled_data(run, tmp_path):
    text = mc_yaml(
        "dataset_path: json", "dataset_path: someone/private_set")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text,
                                      hf_token=PARTICIPANT_TOKEN))
    failed(doc, "bundle your data")


@NO_DOCKER
@pytest.mark.slow
def test_remote_data_files_need_bundled_data(run, tmp_path):
    text = mc_yaml(
        "test: data/test.jsonl", "test: https://example.org/test.jsonl")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "remote", "bundle your data")


@NO_DOCKER
@pytest.mark.slow
def test_data_files_outside_the_submission(run, tmp_path):
    text = mc_yaml(
        "test: data/test.jsonl", "test: ../../../../../../etc/hostname")
    doc, _, _ = run(build.task_folder(tmp_path / "sub", yaml_text=text))
    failed(doc, "outside the submission")


@NO_DOCKER
@pytest.mark.slow
def test_task_name_not_defined(run, tmp_path):
    doc, _, _ = run(build.task_folder(tmp_path / "sub", task_name="no_such_task"))
    failed(doc, "no_such_task", "mini_mc")


@NO_DOCKER
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


@EVERY_PROFILE
@pytest.mark.slow
def test_infinite_loop_is_stopped(run, tmp_path):
    folder = with_helper(tmp_path, "def process_docs(ds):\n    while True:\n        pass\n")
    doc, _, _ = run(folder, Limits(prepare_timeout=6, score_timeout=6))
    failed(doc, "longer than 6 s")
    assert doc["error_kind"] == "timeout"


@EVERY_PROFILE
@pytest.mark.slow
def test_memory_hog_is_contained(run, tmp_path):
    folder = with_helper(tmp_path, "def process_docs(ds):\n"
                                   "    hog = bytearray(64 << 30)\n    return ds\n")
    doc, _, _ = run(folder)
    failed(doc, "memory")


@EVERY_PROFILE
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
    assert not target.exists() and not outside.exists()
    assert "unreadable" in prompt and "models" not in prompt
    assert "PRINTED-BY-TASK" not in seen  # the task's prints are captured, not echoed


@NO_DOCKER
@pytest.mark.slow
def test_metric_returning_nan(run, tmp_path):
    helper = "def nan_agg(items):\n    return float('nan')\n"
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.nan_agg\n")
    doc, out, _ = run(with_helper(tmp_path, helper, hook=None, yaml_text=text))
    (row,) = R.read_results(out)
    assert row.value is None and "not a finite number" in row.error
    assert "NaN" not in (out / R.RESULTS_JSONL).read_text()


@NO_DOCKER
@pytest.mark.slow
def test_aggregation_that_raises(run, tmp_path):
    helper = "def bad_agg(items):\n    raise ValueError('broken aggregation')\n"
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.bad_agg\n")
    doc, _, seen = run(with_helper(tmp_path, helper, hook=None, yaml_text=text))
    failed(doc, "the task's code raised an exception")
    assert "broken aggregation" not in seen  # task text is never echoed once checkpoints run


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


@NO_DOCKER
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



# ------------------------------------------------------------------ the sandbox, act by act
PROBE = r'''
import ctypes, glob, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)

def outcome(fn):
    """'ok' when the act succeeded, else the errno name that stopped it."""
    try:
        r = fn()
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    if isinstance(r, int) and r < 0:
        return os.strerror(ctypes.get_errno())
    return "ok"

def write(path):
    with open(path, "w") as fh:
        fh.write("forged")

def connect(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(address)

def secrets_in_proc():
    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            text = open(path, "rb").read().decode(errors="replace")
        except OSError:
            continue
        found += [c for c in CANARIES if c in text]
    return found

def probe():
    acts = {
        "read_manifest": lambda: open(MANIFEST).read(),
        "write_output": lambda: write(OUTPUT + "/results.jsonl"),
        "plant_output": lambda: write(OUTPUT + "/planted.txt"),
        "write_outside": lambda: write(OUTSIDE),
        "tcp_connect": lambda: connect(socket.AF_INET, ("127.0.0.1", TCP_PORT)),
        "unix_connect": lambda: connect(socket.AF_UNIX, UNIX_PATH),
        "unshare_ns": lambda: libc.unshare(0x00020000 | 0x40000000),
        "unshare_user": lambda: libc.unshare(0x10000000),
        "mount_tmpfs": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
        "umount_proc": lambda: libc.umount2(b"/proc", 2),
        "ptrace_parent": lambda: libc.ptrace(16, os.getppid(), None, None),
        "kill_parent": lambda: os.kill(os.getppid(), 0),
    }
    seen = {name: outcome(fn) for name, fn in acts.items()}
    seen["proc_secrets"] = secrets_in_proc()
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", DAEMON],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return seen

def process_docs(ds):
    report = "PROBE" + json.dumps(probe()) + "PROBE"
    return ds.map(lambda d, i: {"question": d["question"] + (report if i == 0 else "")},
                  with_indices=True)
'''

PATH_ACTS = ("read_manifest", "write_output", "plant_output", "write_outside")
SYSCALL_ACTS = ("tcp_connect", "unix_connect", "unshare_ns", "unshare_user", "mount_tmpfs",
                "umount_proc", "ptrace_parent")
REFUSED = {os.strerror(e) for e in (1, 13)}  # EPERM, EACCES: refused, not merely absent


def _daemons(marker: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


@EVERY_PROFILE
@pytest.mark.slow
@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_sandbox_refuses_each_forbidden_act(run, tmp_path, one_ckpt, namespaces):
    """Task code tries, one by one, what the trust boundary forbids: read the manifest,
    write the outputs or beside them, reach a TCP or Unix socket, undo the mounts, trace or
    signal the runner, read other processes' secrets, and leave a daemon behind. Each act
    fails for lack of permission (not for lack of a target), with or without namespaces."""
    import socket
    import uuid

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    unix_path = tmp_path / "s.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    os.chmod(unix_path, 0o777)
    daemon = f"E2LMC-DAEMON-{uuid.uuid4().hex}"
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    header = (f"MANIFEST = {str(one_ckpt / 'manifest.yaml')!r}\nOUTPUT = {str(out)!r}\n"
              f"OUTSIDE = {str(outside)!r}\nTCP_PORT = {tcp.getsockname()[1]}\n"
              f"UNIX_PATH = {str(unix_path)!r}\nDAEMON = {daemon!r}\n"
              f"CANARIES = {sorted(SECRETS.values())!r}\n")
    try:
        doc, out, _ = run(with_helper(tmp_path, header + PROBE),
                          Limits(memory_bytes=4 << 30, namespaces=namespaces))
    finally:
        tcp.close()
        unix.close()
    assert doc["status"] == "ok", doc["error"]
    prompt = R.read_items(out)[0].prompt
    seen = json.loads(prompt.split("PROBE")[1])
    for act in (*PATH_ACTS, *SYSCALL_ACTS):
        assert seen[act] != "ok", f"the task process could {act}"
    for act in SYSCALL_ACTS:
        assert seen[act] in REFUSED, f"{act}: {seen[act]}"
    assert seen["proc_secrets"] == []
    assert not outside.exists() and not (out / "planted.txt").exists()
    assert _daemons(daemon) == [], "a daemon of the task outlived the ingestion"
    iso = doc["isolation"]
    assert iso["landlock"].startswith("ABI") and "no socket()" in iso["seccomp"], iso
    assert iso["no_new_privs"] == "set"
    assert iso["capabilities"].startswith("none"), iso
    if not namespaces:
        assert iso["network"].startswith("no namespace"), iso


# ------------------------------------------------------------------ what the task sends back
GEN_YAML = """task: mini_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/test.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices[answer]}}"
generation_kwargs:
GEN_SETTINGS
metric_list:
  - metric: exact_match
metadata:
  version: 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("settings, needle", [
    ({"custom_generate": "/tmp", "trust_remote_code": True}, "custom_generate"),
    ({"until": ["\n"], "max_length": 100000}, "max_length"),
    ({"until": ["\n"], "min_new_tokens": 100000}, "min_new_tokens"),
    ({"until": ["\n"], "max_gen_toks": 100000}, "max_gen_toks must be a whole number"),
    ({"until": ["\n"], "temperature": 1e9}, "temperature must be a number"),
], ids=["custom_generate", "max_length", "min_new_tokens", "max_gen_toks", "temperature"])
@EVERY_PROFILE
def test_generation_settings_outside_the_whitelist(run, tmp_path, settings, needle):
    """Generation settings choose what `model.generate` runs (a `custom_generate` folder
    with `trust_remote_code` imports participant code into the trusted engine; a huge
    `max_length` hangs it): anything off the whitelist ends before any checkpoint."""
    body = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    folder = build.task_folder(tmp_path / "sub", name="mini_gen", metric="exact_match,none",
                               yaml_text=GEN_YAML.replace("GEN_SETTINGS\n", body))
    doc, out, _ = run(folder)
    failed(doc, needle)
    assert not (out / R.RESULTS_JSONL).exists() or R.read_results(out) == []


FORGE_REPLIES = r'''
import glob, json
import sys
child = sys.modules["__main__"]  # the task process runs e2lmc.ingestion.child

def process_docs(ds):
    token = " ".join(open(p).read() for p in glob.glob("/**/metadata.yaml", recursive=True)
                     if "hf_token" in open(p).read())
    original = child.Session.score
    def score(self, answers):
        out = original(self, answers)
        out["metrics"]["acc,none"] = 0.99
        out["metrics"]["leak " + token + ",none"] = 1.0
        out["metrics"]["acc,none\n[9/9] forged line"] = 1.0
        return out
    child.Session.score = score
    child._fail = lambda exc: {"ok": False, "kind": "LEAKED-KIND\n[1/1] forged",
                               "error": "LEAKED-ERROR"}
    return ds
'''


@EVERY_PROFILE
@pytest.mark.slow
def test_forged_replies_are_data_not_text(run, tmp_path):
    """Task code rewrites the task process's replies: metric keys carrying the token it
    found and a newline that forges a progress line; an invented error kind. The runner
    keeps only declared keys, takes kinds from its closed set, and shows none of it."""
    doc, out, seen = run(with_helper(tmp_path, FORGE_REPLIES, hf_token=PARTICIPANT_TOKEN))
    assert doc["status"] == "ok", doc["error"]
    (row,) = R.read_results(out)
    assert set(row.metrics) <= set(doc["submission"]["metric_keys"]
                                   if "metric_keys" in doc["submission"] else row.metrics)
    assert all("leak" not in k and "\n" not in k for k in row.metrics)
    assert "[9/9] forged" not in seen and "LEAKED" not in seen


FORGE_PER_ITEM = r'''
import sys
child = sys.modules["__main__"]  # the task process runs e2lmc.ingestion.child

def process_docs(ds):
    original = child.Session.score
    def score(self, answers, bootstrap_iters=None):
        out = original(self, answers, bootstrap_iters)
        (task, values), = out["per_item"].items()
        if len(answers) == 0 or not values:
            return out
        forged = ["1.0", True, None, 1e300, [1], {"v": 1}] + [0.25] * len(values)
        out["per_item"] = {task: forged[:len(values)]}
        return out
    child.Session.score = score
    return ds
'''


@NO_DOCKER
@pytest.mark.slow
def test_per_item_values_are_numbers_or_nothing(run, tmp_path):
    """Task code rewrites its per-document values with strings, booleans, nulls, absurd
    magnitudes and containers: each becomes "no value"; only numbers survive."""
    import numpy as np

    from e2lmc.outcomes import read_outcomes

    doc, out, _ = run(with_helper(tmp_path, FORGE_PER_ITEM))
    assert doc["status"] == "ok", doc["error"]
    oc = read_outcomes(out / "item_outcomes.parquet")
    assert np.isnan(oc.value[:, :6]).all() and (oc.value[:, 6:] == 0.25).all()


FORGE_PER_ITEM_SHAPE = r'''
import sys
child = sys.modules["__main__"]  # the task process runs e2lmc.ingestion.child

def process_docs(ds):
    original = child.Session.score
    def score(self, answers, bootstrap_iters=None):
        out = original(self, answers, bootstrap_iters)
        out["per_item"] = {k: v + [1.0] for k, v in out["per_item"].items()}
        return out
    child.Session.score = score
    return ds
'''


@NO_DOCKER
@pytest.mark.slow
def test_per_item_values_of_the_wrong_shape_are_dropped(run, tmp_path):
    """One value more than the task has documents: the checkpoint keeps its row (from the
    metrics, checked as ever) and no per-item values, so nothing built on them (intervals,
    analysis) can be steered by a reply that does not fit the documents."""
    import numpy as np

    from e2lmc.outcomes import read_outcomes

    doc, out, _ = run(with_helper(tmp_path, FORGE_PER_ITEM_SHAPE))
    assert doc["status"] == "ok", doc["error"]
    (row,) = R.read_results(out)
    assert row.status == "ok" and row.value is not None
    assert np.isnan(read_outcomes(out / "item_outcomes.parquet").value).all()


SLOW_AGGREGATION = r'''
import time
calls = [0]

def slow_mean(items):
    calls[0] += 1  # the dry run before any checkpoint is quick; every checkpoint is not
    if calls[0] > 1:
        time.sleep(120)
    return sum(items) / len(items)
'''


@pytest.mark.profiles("root")
@pytest.mark.slow
def test_metrics_past_the_time_limit_name_the_causes(run, tmp_path):
    """An aggregation that outlasts the metrics time limit: the row's error names the
    limit, the task's own code and the stderr bootstrap (the organizers' setting)."""
    from dataclasses import replace

    text = mc_yaml("  - metric: acc\n",
                   "  - metric: acc\n    aggregation: !function utils.slow_mean\n")
    doc, out, _ = run(with_helper(tmp_path, SLOW_AGGREGATION, hook=None, yaml_text=text),
                      limits=replace(LIMITS, score_timeout=5))
    failed(doc, "took longer than 5 s computing the metrics", "endless loop",
           "bootstrapped with", "bootstrap_iters")


FORGE_KIND = r'''
import sys
child = sys.modules["__main__"]  # the task process runs e2lmc.ingestion.child

def bad_agg(items):
    child._fail = lambda exc: {"ok": False, "kind": "hidden value 0.7731\n[1/1] forged",
                               "error": "hidden value 0.7731"}
    raise ValueError("hidden value 0.7731")
'''


@EVERY_PROFILE
@pytest.mark.slow
def test_error_kind_is_from_a_closed_set(run, tmp_path):
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.bad_agg\n")
    doc, out, seen = run(with_helper(tmp_path, FORGE_KIND, hook=None, yaml_text=text))
    failed(doc, "the task's code raised an exception")
    assert "hidden value" not in seen and "[1/1] forged" not in seen


@EVERY_PROFILE
@pytest.mark.slow
def test_document_count_comes_from_the_requests(run, tmp_path):
    """The task process claims 14,999 documents for 120 real ones, each fake document
    pointing at real requests: the runner counts what the engine will really answer."""
    helper = r'''
import sys
child = sys.modules["__main__"]  # the task process runs e2lmc.ingestion.child
original = child.Session.prepare
def prepare(self):
    out = original(self)
    for task, docs in out["documents"].items():
        docs += [[10_000 + i, docs[i % len(docs)][1]] for i in range(14_999 - len(docs))]
    return out
child.Session.prepare = prepare
def process_docs(ds):
    return ds
'''
    doc, _, seen = run(with_helper(tmp_path, helper, n_docs=120))
    assert doc["status"] == "ok", doc["error"]
    assert doc["n_docs"] == 120 and "14,999" not in seen and "14999" not in seen


@NO_DOCKER
@pytest.mark.slow
def test_task_name_cannot_forge_a_log_line(run, tmp_path):
    folder = build.task_folder(tmp_path / "sub", task_name="mini_mc\n[3/3] forged 0.99")
    doc, _, seen = run(folder)
    failed(doc, "task_name")
    assert "\n[3/3] forged" not in seen


COUNTING_METRIC = r'''
import os
CALLS = [0]

def counting_agg(items):
    """Counts its own calls, in memory and in a file: a curve that rises by itself."""
    CALLS[0] += 1
    path = os.path.join(os.environ["HOME"], "calls.txt")
    try:
        n = int(open(path).read()) + 1
        open(path, "w").write(str(n))
    except OSError:
        n = 0
    try:
        open(path, "w").write(str(n))
    except OSError:
        pass
    return CALLS[0] + n
'''


@EVERY_PROFILE
@pytest.mark.slow
def test_a_metric_that_counts_its_calls_draws_no_curve(run, tiny_grid, tmp_path):
    """Each checkpoint's metrics come from a fresh fork that may not write: a metric that
    counts its calls gives every checkpoint the same value, so its SQ is 0."""
    import numpy as np

    from e2lmc.scoring.sq import sq_curve

    three = build.subset_manifest(tiny_grid, tmp_path / "three", checkpoints=3)
    text = mc_yaml(
        "  - metric: acc\n", "  - metric: acc\n    aggregation: !function utils.counting_agg\n")
    doc, out, _ = run(with_helper(tmp_path, COUNTING_METRIC, hook=None, yaml_text=text),
                      input_data=three)
    assert doc["status"] == "ok", doc["error"]
    rows = sorted(R.read_results(out), key=lambda r: r.tokens_b)
    values = [r.value for r in rows]
    assert len(values) == 3 and len(set(values)) == 1, values
    assert sq_curve(np.array(values))["sq"] == 0.0


@EVERY_PROFILE
@pytest.mark.slow
def test_garbage_on_the_reply_pipe_is_a_named_error(run, tmp_path):
    """Task code writes its own frames on the reply pipe: a header announcing more bytes
    than follow, then bytes that are not JSON. The runner names a protocol error."""
    helper = ("import os, struct, sys\n"
              "def process_docs(ds):\n"
              "    fd = int(sys.argv[2])\n"
              "    os.write(fd, struct.pack('>Q', 12) + b'\\xff\\xfe{not json}')\n"
              "    os._exit(0)\n")
    doc, _, _ = run(with_helper(tmp_path, helper))
    failed(doc, "malformed data")
    assert doc["error_kind"] == "protocol"


def test_log_tail_reads_only_the_end(tmp_path):
    """A task that printed 500 MiB: its tail is read from the end, bounded, cleaned."""
    import tracemalloc

    from e2lmc.ingestion.taskproc import TaskProcess

    tp = TaskProcess(tmp_path, "t", tmp_path)
    with open(tp.log_path, "wb") as fh:
        fh.truncate(500 << 20)  # sparse: costs no disk
        fh.seek(0, os.SEEK_END)
        fh.write(b"Traceback\n\x1b[31mValueError: bad row\n[3/3] forged 0.99\n")
    tracemalloc.start()
    tail = tp.log_tail()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, f"reading the tail took {peak} bytes"
    assert "ValueError: bad row" in tail and "\x1b" not in tail
    assert all(line.startswith("| ") for line in tail.splitlines())
