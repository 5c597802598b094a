"""`e2lmc bundle check`: the built bundle passes; each broken variant fails with its line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bundle_standins import make_standin_bundle
from e2lmc.bundle import layout, timing
from e2lmc.bundle.build import stage_bundle
from e2lmc.bundle.check import (PLACEHOLDER_QUEUE, check_bundle, check_bundle_dir,
                                metadata_writes)
from e2lmc.cli import main


pytestmark = pytest.mark.usefixtures("bundle_package")


@pytest.fixture(scope="session")
def staged_template(tmp_path_factory, keyed_package) -> Path:
    src = make_standin_bundle(tmp_path_factory.mktemp("src"))
    staged = tmp_path_factory.mktemp("staged")
    mp = pytest.MonkeyPatch()
    mp.setattr(layout, "package_dir", lambda: keyed_package)
    try:
        stage_bundle(src, staged)
    finally:
        mp.undo()
    return staged


@pytest.fixture
def staged(tmp_path, staged_template) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(staged_template, dest)
    return dest


def edit_yaml(root: Path, change) -> None:
    path = root / "competition.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_staged_bundle_passes(staged):
    assert check_bundle_dir(staged) == []


def test_repo_competition_yaml_is_valid_yaml_v2():
    doc = yaml.safe_load((layout.default_root() / "competition.yaml").read_text())
    assert doc["version"] == 2 and "leaderboards" in doc


def _drop_version(d):
    del d["version"]


def _singular_leaderboard(d):
    d["leaderboard"] = d.pop("leaderboards")


def _long_key(d):
    d["leaderboards"][0]["columns"][1]["key"] = "k" * 37


def _phases_out_of_order(d):
    d["phases"][1]["start"] = "2027-01-20 00:00:00"  # before warm-up ends


def _missing_end(d):
    del d["phases"][0]["end"]


def _add_rule(d):
    d["leaderboards"][0]["submission_rule"] = "Add"


def _drop_score_column(d):
    d["leaderboards"][0]["columns"] = [c for c in d["leaderboards"][0]["columns"]
                                       if c["key"] != "leakage"]


def _long_column_title(d):
    d["leaderboards"][0]["columns"][0]["title"] = "T" * 37


def _bad_date(d):
    d["phases"][2]["start"] = "31/05/2027"


def _same_zip_name(d):
    d["tasks"][0]["input_data"] = "input_data/e2lm"
    d["tasks"][0]["reference_data"] = "reference_data/e2lm"


def _missing_page(d):
    d["pages"].append({"title": "FAQ", "file": "pages/faq.md"})


def _unknown_task(d):
    d["phases"][0]["tasks"] = [7]


def _queue_name(d):
    d["queue"] = "my-gpu-queue"


def _placeholder_queue(d):
    d["queue"] = PLACEHOLDER_QUEUE


def _no_queue(d):
    del d["queue"]


def _hidden_logs(d):
    d["phases"][1]["hide_output"] = True


def _shown_predictions(d):
    del d["phases"][0]["hide_prediction_output"]  # the platform's default: shown


def _shown_score_output(d):
    d["phases"][2]["hide_score_output"] = False


@pytest.mark.parametrize("change,expected", [
    (_drop_version, "`version: 2` is required"),
    (_singular_leaderboard, "uses `leaderboard:`"),
    (_long_key, "has 37 characters; the limit is 36"),
    (_phases_out_of_order, "not after the end of phase Warm-up"),
    (_missing_end, "needs an `end`"),
    (_add_rule, "`submission_rule` is 'Add'"),
    (_drop_score_column, "the scoring program writes ['leakage'], which no column shows"),
    (_long_column_title, "title 'TTTT"),
    (_bad_date, "is not a date"),
    (_same_zip_name, "are both zipped by Codabench to e2lm.zip"),
    (_missing_page, "'pages/faq.md' does not exist"),
    (_unknown_task, "refers to task index 7"),
    (_queue_name, "is not a queue vhost"),
    (_placeholder_queue, "still the placeholder"),
    (_no_queue, "kills every step after 600 s"),
    (_hidden_logs, "phases[1] (Development): `hide_output: true` hides the logs too"),
    (_shown_predictions, "`hide_prediction_output` must be true"),
    (_shown_score_output, "`hide_score_output` must be true: otherwise participants can "
                          "download the scoring output (scores_details.json"),
])
def test_broken_yaml_variants(staged, change, expected):
    edit_yaml(staged, change)
    errors = check_bundle_dir(staged)
    assert any(expected in e for e in errors), errors


def test_program_without_command(staged):
    (staged / "scoring_program" / "metadata.yaml").write_text("description: no command\n")
    errors = check_bundle_dir(staged)
    assert any(e.startswith("scoring_program/metadata.yaml: has no `command:`") for e in errors)


@pytest.mark.parametrize("command", ["python3 score.py | tee log", "cd x && python3 score.py",
                                     "python3 score.py $output", "python3 score.py > out.txt"])
def test_command_with_shell_syntax(staged, command):
    (staged / "scoring_program" / "metadata.yaml").write_text(f"command: {command!r}\n")
    errors = check_bundle_dir(staged)
    assert any("uses shell syntax" in e for e in errors), errors


def test_command_naming_a_missing_script(staged):
    (staged / "ingestion_program" / "metadata.yaml").write_text("command: python3 nope.py\n")
    assert any("runs 'nope.py', which is not in the program folder" in e
               for e in check_bundle_dir(staged))


def test_program_writing_metadata_is_flagged(staged):
    (staged / "scoring_program" / "extra.py").write_text(
        "from pathlib import Path\nimport os\nout = Path('/app/output')\n"
        "(out / 'metadata').write_text('x')\n"
        "open(os.path.join('/app/output', 'metadata'), 'w').close()\n"
        "text = open('/app/input/res/metadata').read()\n")
    errors = [e for e in check_bundle_dir(staged) if "writes a file named `metadata`" in e]
    assert [e.split(":")[1] for e in errors] == ["4", "5"]


def test_metadata_write_detection_ignores_reads_and_dict_keys(tmp_path):
    py = tmp_path / "ok.py"
    py.write_text("import json\nfrom pathlib import Path\n"
                  "meta = (Path('res') / 'metadata').read_text()\n"
                  "json.dump({'metadata': 1}, open('out/scores.json', 'w'))\n"
                  "with open('res/metadata') as f: f.read()\n")
    assert metadata_writes(py) == []


def test_cli_check_lists_every_violation_and_exits_2(staged, capsys):
    edit_yaml(staged, lambda d: (_drop_version(d), _long_key(d)))
    assert main(["bundle", "check", str(staged)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any("`version: 2` is required" in line for line in err)
    assert any("limit is 36" in line for line in err)
    assert err[-1].startswith("e2lmc bundle: error:")
    assert f"{len(err) - 1} violation(s)" in err[-1]


def test_check_accepts_a_zip(tmp_path, staged):
    archive = shutil.make_archive(str(tmp_path / "b"), "zip", staged)
    assert check_bundle(archive) == []
    assert main(["bundle", "check", archive]) == 0


def test_repo_competition_yaml_names_the_queue_placeholder():
    """The checkout ships the placeholder, which the check refuses until the organizer sets
    the vhost (in the file or with `bundle build --queue`)."""
    doc = yaml.safe_load((layout.default_root() / "competition.yaml").read_text())
    assert doc["queue"] == PLACEHOLDER_QUEUE
    assert all(p["hide_output"] is False and p["hide_prediction_output"] is True
               and p["hide_score_output"] is True for p in doc["phases"])


def test_default_queue_needs_the_flag_and_a_budget_within_600_s(staged):
    edit_yaml(staged, _no_queue)
    errors = check_bundle_dir(staged, allow_default_queue=True)
    assert not [e for e in errors if e.startswith("queue:")]
    # the manifest's budget was made for the GPU queue's 12-hour limit
    assert any("defaults.time_budget_s 39600 s leaves less than 120 s of the 600 s limit"
               in e and "without a `queue` every step is capped at 600 s" in e
               for e in errors), errors
    _set_budget(staged, timing.safe_budget(600))
    assert check_bundle_dir(staged, allow_default_queue=True) == []


def _set_budget(root: Path, budget) -> None:
    path = root / "input_data" / "e2lm" / "manifest.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["defaults"]["time_budget_s"] = budget
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("budget,expected", [
    (None, "no defaults.time_budget_s: at the 43200 s limit the platform kills the ingestion"),
    (43000, "defaults.time_budget_s 43000 s leaves less than 2160 s of the 43200 s limit"),
    ("12h", "not a positive number of seconds"),
])
def test_time_budget_must_end_the_ingestion_inside_the_limit(staged, budget, expected):
    _set_budget(staged, budget)
    [error] = check_bundle_dir(staged)
    assert error.startswith("tasks[0] (E2LM checkpoint grid).input_data: input_data/e2lm/"
                            "manifest.yaml: ")
    assert expected in error and "set defaults.time_budget_s to at most 41040 s" in error


def test_shortest_phase_limit_bounds_the_budget(staged):
    edit_yaml(staged, lambda d: d["phases"][0].update(execution_time_limit=3600))
    assert any("leaves less than 180 s of the 3600 s limit" in e
               for e in check_bundle_dir(staged))
