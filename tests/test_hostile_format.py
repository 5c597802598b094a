"""Hostile submission formats: each ends in one UserError naming the file, never a crash.

Archives and patches whose paths cannot be written (a file and a folder of one name, names
too long), malformed patch structure, task YAML whose `!function` or `include:` leaves the
submission, and malformed frames on the wire from the task process. Every refusal comes
before any participant code could run (one test shows that lm-eval itself would run it).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
from pathlib import Path

import pytest
from test_hostile import zip_with

from e2lmc.errors import UserError
from e2lmc.ingestion import patch, wire
from e2lmc.ingestion.submission import load_submission
from e2lmc.ingestion.taskyaml import check_task_paths

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402

T = patch.TASKS_PREFIX


def refused(src: Path, work: Path, *needles: str) -> str:
    """load_submission fails with a one-line UserError holding every needle."""
    with pytest.raises(UserError) as err:
        load_submission(src, work)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ------------------------------------------------------------------ archive layout
@pytest.mark.parametrize("order", ["file_first", "folder_first"])
def test_zip_with_a_file_and_a_folder_of_one_name(tmp_path, order):
    entries = [("a", b"x"), ("a/b.yaml", b"task: t\n")]
    z = zip_with(tmp_path / "sub.zip", entries if order == "file_first" else entries[::-1])
    refused(z, tmp_path / "work", "sub.zip", "'a'", "both a file and a folder")
    assert not (tmp_path / "work").exists(), "nothing is extracted before every check passed"


@pytest.mark.parametrize("name, needle", [
    ("x" * 300 + ".yaml", "longer than 255 bytes"),
    ("/".join(["d" * 200] * 25) + "/t.yaml", "path longer than 1024 bytes"),
])
def test_zip_with_overlong_names(tmp_path, name, needle):
    z = zip_with(tmp_path / "sub.zip", [(name, b"task: t\n")])
    msg = refused(z, tmp_path / "work", "sub.zip", needle)
    assert len(msg) < 400, "the message shortens the name it quotes"
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------ patch structure
def added(path: str, text: str = "task: t\n") -> str:
    """One new file in git's format, at `path` (relative to the lm-eval checkout)."""
    lines = text.splitlines(keepends=True)
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n" + "".join("+" + ln for ln in lines))


def patch_zip(tmp_path: Path, text: str) -> Path:
    return build.official_zip(tmp_path / "sub.zip", {}, "t", "acc,none", patch_text=text)


@pytest.mark.parametrize("order", ["file_first", "folder_first"])
def test_patch_with_a_file_and_a_folder_of_one_name(tmp_path, order):
    parts = [added(T + "m/x", "a\n"), added(T + "m/x/task.yaml")]
    text = "".join(parts if order == "file_first" else parts[::-1])
    refused(patch_zip(tmp_path, text), tmp_path / "work", "evaluation.patch",
            f"'{T}m/x'", "both a file and a folder")
    assert not any((tmp_path / "work" / "tasks").iterdir()), "no task file is written"


def _header(path: str, *lines: str) -> str:
    return f"diff --git a/{path} b/{path}\n" + "".join(ln + "\n" for ln in lines)


MALFORMED_PATCHES = {
    "name_too_long": (added(T + "m/" + "x" * 300 + ".yaml"), "longer than 255 bytes"),
    "nul_in_path": (added(T + "m/t\0.yaml"), "control characters"),
    "the_tasks_folder_itself": (added(T), "names the tasks folder itself"),
    "absurd_hunk_count": (added(T + "m/t.yaml").replace("+1,1 @@", "+1," + "9" * 5000 + " @@"),
                          "malformed hunk header"),
    "hunk_count_past_the_end": (added(T + "m/t.yaml").replace("+1,1 @@", "+1,99999999 @@"),
                                "ends inside a hunk"),
    "symlink": (added(T + "m/t.yaml", "/etc/passwd\n").replace("mode 100644", "mode 120000"),
                "mode 120000"),
    "mode_change_to_symlink": (_header(T + "m/t.yaml", "old mode 100644", "new mode 120000"),
                               "mode 120000"),
    "submodule": (added(T + "m/sub", "Subproject commit 1234\n").replace("100644", "160000"),
                  "mode 160000"),
    "dev_null_both_sides": ("--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+task: t\n",
                            "/dev/null on both sides"),
    "rename_from_core": (_header(T + "m/u.py", "similarity index 100%",
                                 "rename from lm_eval/api/metrics.py", f"rename to {T}m/u.py"),
                         "lm_eval/api/metrics.py"),
    "copy_from_outside": (_header(T + "m/u.yaml", "similarity index 100%",
                                  "copy from /etc/passwd", f"copy to {T}m/u.yaml"),
                          "/etc/passwd"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PATCHES))
def test_malformed_patch_structure(tmp_path, case):
    text, needle = MALFORMED_PATCHES[case]
    refused(patch_zip(tmp_path, text), tmp_path / "work", "evaluation.patch", needle)
    assert not any((tmp_path / "work" / "tasks").iterdir()), "no task file is written"


def test_copy_and_rename_headers_follow_git(tmp_path):
    """`copy from` keeps the source, `rename from` removes it: as `git apply` does."""
    import lm_eval

    stock = (Path(lm_eval.__file__).parent / "tasks/arc/arc_easy.yaml").read_text()
    copy = _header(T + "m/easy.yaml", "similarity index 100%",
                   f"copy from {T}arc/arc_easy.yaml", f"copy to {T}m/easy.yaml")
    assert patch.task_files(copy) == {"m/easy.yaml": stock}
    rename = _header(T + "m/b.yaml", "similarity index 100%", f"rename from {T}m/a.yaml",
                     f"rename to {T}m/b.yaml")
    assert patch.task_files(added(T + "m/a.yaml") + rename) == {"m/b.yaml": "task: t\n"}


# ------------------------------------------------------------------ YAML that leaves the task
MARKER_MODULE = """from pathlib import Path
Path(__file__).with_name("MARKER").write_text("the outside module ran")
def process_docs(ds):
    return ds
"""


@pytest.fixture
def outside(tmp_path) -> Path:
    """A module outside the submission that leaves a MARKER file when imported."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "outside.py").write_text(MARKER_MODULE)
    (folder / "outside.yaml").write_text("process_docs: !function outside.process_docs\n")
    return folder


TASK_YAML = build.TASK_YAML.format(name="mini_mc", output_type="multiple_choice")
LAST_LINE = len(TASK_YAML.splitlines()) + 1


def task_with(tmp_path: Path, line: str, files: dict[str, str] | None = None) -> Path:
    """The example task folder, its YAML given one more top-level line (LAST_LINE)."""
    return build.task_folder(tmp_path / "sub", yaml_text=TASK_YAML + line + "\n", files=files)


FUNCTION_ESCAPES = {
    "absolute": lambda out: f"{out}/outside",  # 0.4.13: the value is a path
    "dotted_absolute": lambda out: str(out / "outside").replace("/", "."),  # '.' -> '/'
    "climbing": lambda out: "../../outside/outside",  # older lm-eval: joined as a path
}


@pytest.mark.parametrize("case", sorted(FUNCTION_ESCAPES))
def test_function_outside_the_submission_never_runs(tmp_path, outside, case):
    value = FUNCTION_ESCAPES[case](outside) + ".process_docs"
    folder = task_with(tmp_path, f"process_docs: !function {value}")
    refused(folder, tmp_path / "work", "mini_mc.yaml", f"line {LAST_LINE}:", value,
            "not a `module.function` name")
    assert not (outside / "MARKER").exists(), "the outside module ran"


def test_lm_eval_would_import_it(tmp_path, outside):
    """The premise: without the check, lm-eval's own loader imports the outside module."""
    from lm_eval.tasks._yaml_loader import load_yaml

    if "." in str(outside):
        pytest.skip("the temp path has a dot, which lm-eval reads as a '/'")
    folder = task_with(tmp_path, f"process_docs: !function {outside}/outside.process_docs")
    load_yaml(folder / "mini_mc.yaml", resolve_func=True)
    assert (outside / "MARKER").exists()


INCLUDE_ESCAPES = {
    "absolute": lambda out: f"include: {out}/outside.yaml",
    "climbing": lambda out: "include: ../outside/outside.yaml",
    "in_a_list": lambda out: "include: [data/ok.yaml, ../outside/outside.yaml]",
}


@pytest.mark.parametrize("case", sorted(INCLUDE_ESCAPES))
def test_include_outside_the_submission_is_refused(tmp_path, outside, case):
    folder = task_with(tmp_path, INCLUDE_ESCAPES[case](outside),
                       files={"data/ok.yaml": "num_fewshot: 0\n"})
    refused(folder, tmp_path / "work", "mini_mc.yaml", "include", "outside the task folder")
    assert not (outside / "MARKER").exists()


def test_included_template_is_checked_too(tmp_path, outside):
    """lm-eval includes files of any name (`_template_yaml`): their tags are checked too."""
    folder = task_with(tmp_path, "include: _template_yaml", files={
        "_template_yaml": f"process_docs: !function {outside}/outside.process_docs\n"})
    refused(folder, tmp_path / "work", "_template_yaml", "!function")


@pytest.mark.parametrize("line, needle", [
    ("process_docs: !function utils", "not a `module.function` name"),
    ('process_docs: !function "utils\\nx.f"', "not a `module.function` name"),
    ("process_docs: !function [utils, f]", "not a `module.function` name"),
    ("process_docs: !function " + "u" * 300 + ".f", "names no module"),
    ("process_docs: !function utlis.process_docs", "expected utlis.py next to the YAML"),
    ("metric_list: [{metric: !function os.system}]", "names no module"),
    ("include: 5", "`include` must name"),
    ('include: "a\\0b.yaml"', "outside the task folder"),
])
def test_malformed_references_are_named(tmp_path, line, needle):
    refused(task_with(tmp_path, line), tmp_path / "work", "mini_mc.yaml", needle)


def test_references_inside_the_task_are_accepted(tmp_path):
    files = {"sub/utils.py": "def process_docs(ds):\n    return ds\n",
             "sub/pkg/helpers.py": "def f(x):\n    return x\n",
             "_default.yaml": "num_fewshot: 0\n",
             "sub/t2.yaml": "include: ../_default.yaml\ntask: t2\n"
                            "process_docs: !function utils.process_docs\n"
                            "process_results: !function pkg.helpers.f\n"}
    folder = task_with(tmp_path, "process_docs: !function "
                       "lm_eval.tasks.noreval.noridiom.utils.filter_dataset_nb", files)
    sub = load_submission(folder, tmp_path / "work")
    assert "sub/t2.yaml" in sub.files


def test_links_out_of_the_task_folder_are_refused(tmp_path, outside):
    """The static check alone (as a second guard could call it): links are resolved."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").symlink_to(outside / "outside.py")
    (tasks / "t.yaml").write_text("process_docs: !function utils.process_docs\n")
    with pytest.raises(UserError, match="t.yaml: line 1: .*resolves outside"):
        check_task_paths(tasks)
    (tasks / "t.yaml").write_text("include: linked/outside.yaml\n")
    (tasks / "utils.py").unlink()
    (tasks / "linked").symlink_to(outside)
    with pytest.raises(UserError, match="t.yaml: `include: linked/outside.yaml` points outside"):
        check_task_paths(tasks)
    assert not (outside / "MARKER").exists()


@pytest.mark.parametrize("where", ["mini_mc.yaml", "metadata.yaml", "metadata"])
def test_deeply_nested_yaml(tmp_path, where):
    folder = build.task_folder(tmp_path / "sub")
    (folder / where).write_text("a: " + "[" * 100_000)
    refused(folder, tmp_path / "work", where, "nest")


@pytest.mark.timeout(60)
def test_alias_bomb_is_walked_once(tmp_path):
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 12)]
    folder = task_with(tmp_path, "\n".join(lines))
    load_submission(folder, tmp_path / "work")  # 10**12 leaves if walked naively


# ------------------------------------------------------------------ wire frames
def pipe_with(data: bytes, close: bool = True) -> int:
    """A pipe's read end holding `data` (under 64 KiB), its write end closed if `close`."""
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r


def frame(payload: bytes, size: int | None = None) -> bytes:
    return struct.pack(">Q", len(payload) if size is None else size) + payload


MALFORMED_FRAMES = {
    "invalid_utf8": b'{"a": "\xff\xfe"}',
    "not_json": b"{'a': 1}",
    "empty": b"",
    "a_list": b"[1, 2]",
    "a_string": b'"ok"',
    "null": b"null",
    "recursion": b"[" * 50_000,
    "deeper_than_the_limit": b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}",
    "nan": b'{"m": NaN}',
    "infinity": b'{"m": Infinity}',
    "minus_infinity": b'{"m": [-Infinity]}',
    "overflowing_float": b'{"m": 1e999}',
    "huge_integer": b'{"m": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FRAMES))
def test_malformed_frames_raise_one_exception_type(case):
    fd = pipe_with(frame(MALFORMED_FRAMES[case]))
    try:
        with pytest.raises(wire.WireMalformed) as err:
            wire.recv(fd, timeout=5)
    finally:
        os.close(fd)
    assert isinstance(err.value, wire.WireError) and isinstance(err.value, ValueError)
    assert "\xff" not in str(err.value) and "9999" not in str(err.value), "no content echoed"


def test_truncated_frames():
    """More bytes announced than arrive: closed (the child died) or a timeout (it hangs)."""
    fd = pipe_with(frame(b'{"a": 1}', size=100))
    with pytest.raises(wire.WireClosed):
        wire.recv(fd, timeout=5)
    os.close(fd)
    fd = pipe_with(frame(b'{"a": 1}', size=100), close=False)
    with pytest.raises(wire.WireTimeout):
        wire.recv(fd, timeout=0.2)
    os.close(fd)
    fd = pipe_with(frame(b"x" * 10, size=1 << 40))
    with pytest.raises(wire.WireTooLarge):
        wire.recv(fd, timeout=5)
    os.close(fd)


def test_well_formed_frames_and_the_trusted_direction():
    doc = {"ok": True, "requests": [["loglikelihood", ["a", " b"]]], "x": 1.5, "n": None}
    r, w = os.pipe()
    wire.send(w, doc)
    wire.send(w, {"answers": [[float("-inf"), False]]})
    os.close(w)
    assert wire.recv(r, timeout=5) == doc
    assert wire.recv(r, timeout=5, allow_nonfinite=True) == {"answers": [[float("-inf"), False]]}
    os.close(r)
    deep = {"a": json.loads("[" * (wire.MAX_DEPTH - 1) + "]" * (wire.MAX_DEPTH - 1))}
    fd = pipe_with(frame(json.dumps(deep).encode()))
    assert wire.recv(fd, timeout=5) == deep
    os.close(fd)


def test_descriptors_above_1023():
    """The runner may hold many files: waiting must not depend on select()'s fd limit."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1600:
        pytest.skip("the open-file limit is too low")
    fd = pipe_with(frame(b'{"a": 1}'))
    high = os.dup2(fd, 1500)
    os.close(fd)
    try:
        assert wire.recv(high, timeout=5) == {"a": 1}
    finally:
        os.close(high)
