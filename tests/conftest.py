"""Shared fixtures. Tests never reach the network: hub access is switched off here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PUBLIC_CURVES = SHARED_DATA / "e2lm_public_curves.json"


def pytest_configure(config):
    # A base temp of this session's own: every pytest session resets the shared
    # /tmp/pytest-of-<user> to 0700, which would cut the `user` profile off its inputs
    # whenever two sessions run at once.
    if config.option.basetemp is None:
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="e2lmc-pytest-")
    config.addinivalue_line(
        "markers", "profiles(*names): run the test under these platform profiles (root, "
        "user, worker; all three when none are named); see tests/profiles.py")


def pytest_generate_tests(metafunc):
    """A test marked `profiles` runs once per named profile (the `profile` fixture)."""
    import profiles

    marker = metafunc.definition.get_closest_marker("profiles")
    if marker is None:
        return
    if "profile" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: a `profiles` test needs "
                                "the `profile` fixture (or one using it, such as `run`)")
    unknown = set(marker.args) - set(profiles.PROFILES)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown profiles {unknown}")
    metafunc.parametrize("profile", [
        pytest.param(name, id=name, marks=[pytest.mark.docker] if name == "worker" else [])
        for name in marker.args or profiles.PROFILES], indirect=True)


@pytest.fixture
def profile(request) -> str:
    """The platform profile the test runs under: `root` unless it is marked `profiles`."""
    import profiles

    name = getattr(request, "param", "root")
    reason = profiles.user_unavailable() if name == "user" else None
    if reason:
        profiles.cannot_run(name, reason)
    return name


@pytest.fixture
def ingest_runner(profile, request, tmp_path, monkeypatch):
    """(submission, input_data, output, limits, env) -> (ingestion doc, printed text), run
    under the test's profile; `env` (secrets, TMPDIR) reaches the runner's environment."""
    import profiles

    if profile == "user":
        return profiles.user_runner(tmp_path)
    if profile == "worker":
        return profiles.worker_runner(tmp_path, request.getfixturevalue("worker_image"))
    return profiles.root_runner(monkeypatch)


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The e2lmc image (tag e2lmc:ci) from a debootstrapped base, built once per session
    for the `worker` profile and tests/test_docker_worker.py; skips with the reason."""
    import profiles

    return profiles.build_image()


@pytest.fixture(scope="session")
def public_curves() -> Path:
    """The organizers' published curves; tests that need them skip when absent."""
    if not PUBLIC_CURVES.is_file():
        pytest.skip(f"{PUBLIC_CURVES} not found (the shared data folder is not beside the repo)")
    return PUBLIC_CURVES


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory):
    """Random tiny Llama checkpoints: 3 models (the last web-only) x 3 checkpoints."""
    from e2lmc.suite.tiny import make_tiny_grid

    return make_tiny_grid(tmp_path_factory.mktemp("tiny_grid"), n_models=3, n_checkpoints=3)


@pytest.fixture(scope="session")
def micro_suite(tmp_path_factory) -> Path:
    """The trained micro demo suite (built once per session); its manifest.yaml path."""
    from e2lmc.suite.build import build_suite

    return build_suite(root=tmp_path_factory.mktemp("suite"), micro=True, progress=False)


@pytest.fixture(scope="session")
def demo_runs(micro_suite, tmp_path_factory) -> dict:
    """`e2lmc demo` of an example on the micro suite (`demo_runs["noisy_hard"]`): run on
    first use, once per session, shared by the demo and analysis tests."""
    from e2lmc.demo import run_demo

    out = tmp_path_factory.mktemp("demo")

    class Runs(dict):
        def __missing__(self, name: str) -> dict:
            self[name] = run_demo(out / name, example=name, micro=True,
                                  suite_root=micro_suite.parent.parent, progress=False)
            return self[name]

    return Runs()


@pytest.fixture(scope="session")
def keyed_package(tmp_path_factory) -> Path:
    """A stand-in e2lmc package that defines LEADERBOARD_KEYS, for the bundle tests."""
    from bundle_standins import package_with_keys

    return package_with_keys(tmp_path_factory.mktemp("pkg"))


@pytest.fixture
def bundle_package(monkeypatch, keyed_package) -> Path:
    """Bundle build and check vendor (and cross-check against) the stand-in package."""
    from e2lmc.bundle import check, layout

    monkeypatch.setattr(layout, "package_dir", lambda: keyed_package)
    monkeypatch.setattr(check, "package_dir", lambda: keyed_package)
    return keyed_package
