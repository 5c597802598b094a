"""Submission formats without running any task: patch reconstruction, layouts, metadata."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from e2lmc.errors import UserError
from e2lmc.ingestion import patch
from e2lmc.ingestion.submission import load_submission

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "ingest"))
import build  # noqa: E402


def git_diff(tmp_path: Path, before: dict[str, str], after: dict[str, str]) -> str:
    """A real `git diff` between two trees, as participants produce it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    for rel, text in before.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "README").write_text("base\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    for rel in before:
        if rel not in after:
            (repo / rel).unlink()
    for rel, text in after.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    return subprocess.run([*git, "diff", "--cached", "-M"], check=True, capture_output=True,
                          text=True).stdout


def test_new_files_from_git_diff(tmp_path):
    after = {"lm_eval/tasks/mine/t.yaml": "task: t\n", "lm_eval/tasks/mine/utils.py":
             "def f():\n    return 1", "lm_eval/tasks/mine/data/x.jsonl": '{"a": 1}\n'}
    files = patch.task_files(git_diff(tmp_path, {}, after))
    assert files == {k[len("lm_eval/tasks/"):]: v for k, v in after.items()}


def test_changed_upstream_task_file_is_rebuilt(tmp_path):
    """A change to a task file stock lm-eval ships is applied to lm-eval's own copy."""
    import lm_eval

    rel = "lm_eval/tasks/arc/arc_easy.yaml"
    stock = (Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml").read_text()
    changed = (stock + "# tuned\n").replace("task: arc_easy", "task: arc_easy_mine", 1)
    files = patch.task_files(git_diff(tmp_path, {rel: stock}, {rel: changed}))
    assert files == {"arc/arc_easy.yaml": changed}


def test_change_to_unknown_base_is_refused(tmp_path):
    rel = "lm_eval/tasks/mine/t.yaml"
    diff = git_diff(tmp_path, {rel: "task: t\na: 1\n"}, {rel: "task: t\na: 2\n"})
    with pytest.raises(UserError, match="stock lm-eval does not have"):
        patch.task_files(diff)


def test_later_hunk_changes_a_file_added_earlier(tmp_path):
    added = build.new_file_patch({"mine/t.yaml": "task: t\nnum_fewshot: 0\n"})
    change = ("diff --git a/lm_eval/tasks/mine/t.yaml b/lm_eval/tasks/mine/t.yaml\n"
              "--- a/lm_eval/tasks/mine/t.yaml\n+++ b/lm_eval/tasks/mine/t.yaml\n"
              "@@ -1,2 +1,2 @@\n task: t\n-num_fewshot: 0\n+num_fewshot: 5\n")
    assert patch.task_files(added + change) == {"mine/t.yaml": "task: t\nnum_fewshot: 5\n"}


def test_rename_and_delete(tmp_path):
    before = {"lm_eval/tasks/arc/arc_easy.yaml": (Path(__import__("lm_eval").__file__).parent
                                                  / "tasks/arc/arc_easy.yaml").read_text()}
    after = {"lm_eval/tasks/mine/easy.yaml": before["lm_eval/tasks/arc/arc_easy.yaml"]}
    files = patch.task_files(git_diff(tmp_path, before, after))
    assert files == {"mine/easy.yaml": after["lm_eval/tasks/mine/easy.yaml"]}


def test_core_patch_lists_every_outside_path(tmp_path):
    diff = git_diff(tmp_path, {}, {"lm_eval/tasks/m/t.yaml": "task: t\n",
                                   "lm_eval/api/metrics.py": "x = 1\n",
                                   "setup.py": "y = 2\n"})
    with pytest.raises(UserError) as err:
        patch.task_files(diff)
    msg = str(err.value)
    assert "lm_eval/api/metrics.py" in msg and "setup.py" in msg and "core" in msg


def test_truncated_patch(tmp_path):
    text = build.new_file_patch({"m/t.yaml": "a\nb\nc\n"}).replace("+c\n", "")
    text += "diff --git a/x b/x\n"
    with pytest.raises(UserError, match="shorter than its header"):
        patch.task_files(text)


def test_empty_patch():
    with pytest.raises(UserError, match="no file changes"):
        patch.task_files("just some text\n")


@pytest.mark.parametrize("top", [None, "my_submission"])
def test_official_zip_with_or_without_top_folder(tmp_path, top):
    files = build.folder_files(build.SCI_CLOZE)
    z = build.official_zip(tmp_path / "s.zip", files, "sci_cloze", "acc,none", top=top,
                           hf_token="hf_x123456")
    sub = load_submission(z, tmp_path / "w")
    assert sub.format == "official" and sub.task_name == "sci_cloze"
    assert sorted(sub.files) == sorted(files) and sub.hf_token == "hf_x123456"
    assert "hf_x123456" not in repr(sub) and "hf_x123456" not in str(sub.summary())


def test_task_folder_zip_under_one_folder_with_codabench_metadata(tmp_path):
    z = tmp_path / "s.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(build.SCI_CLOZE.rglob("*")):
            if p.is_file():
                zf.write(p, "task/" + p.relative_to(build.SCI_CLOZE).as_posix())
        zf.writestr("metadata", "description: no command here\n")
        zf.writestr("__MACOSX/._junk", "x")
    sub = load_submission(z, tmp_path / "w")
    assert sub.format == "task_folder"
    assert "metadata" not in sub.files and "metadata.yaml" not in sub.files
    assert "sci_cloze.yaml" in sub.files and "data/test.jsonl" in sub.files


@pytest.mark.parametrize("meta, needle", [
    (None, "metadata.yaml not found"),
    ("- a list\n", "mapping"),
    ("task_name: t\n", "task_metric"),
    ("task_name: t\ntask_metric: acc,none\nhf_token: 5\n", "hf_token"),
    ("task_name: [t\n", "not valid YAML"),
])
def test_metadata_errors(tmp_path, meta, needle):
    folder = build.task_folder(tmp_path / "sub")
    if meta is None:
        (folder / "metadata.yaml").unlink()
    else:
        (folder / "metadata.yaml").write_text(meta)
    with pytest.raises(UserError, match=needle):
        load_submission(folder, tmp_path / "w")


def test_no_task_yaml(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "metadata.yaml").write_text("task_name: t\ntask_metric: acc,none\n")
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="no task YAML"):
        load_submission(folder, tmp_path / "w")
