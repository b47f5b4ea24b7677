"""Shared fixtures: the shell's querylog, Loki and Langfuse settings set aside (the live tiers get Loki's back),
a fresh data directory per test, and structlog reset after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from querylog.config import Settings

#: Where a live Loki is and how to reach it. Set aside like the rest, and given back only to the live tiers
#: (`live_loki_environment`): with ``LOKI_URL=… make test`` every other test's server would ship to that Loki.
LIVE_LOKI_VARIABLES = (
    "LOKI_URL",
    "QUERYLOG_LOKI_URL",
    "QUERYLOG_LOKI_TENANT",
    "QUERYLOG_LOKI_USERNAME",
    "QUERYLOG_LOKI_PASSWORD",
    "QUERYLOG_LOKI_TOKEN",
    "QUERYLOG_LOKI_CA_FILE",
    "QUERYLOG_LOKI_INSECURE_SKIP_VERIFY",
)
#: Settings of querylog and of the tracing it talks to: a developer's shell may hold any of them.
_SET_ASIDE_PREFIXES = ("QUERYLOG_", "LANGFUSE_")
#: The test suite's own knobs, kept.
_KEPT = frozenset({"QUERYLOG_SCREENSHOTS"})
_live_loki: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="session")
def _hermetic_environment() -> Iterator[None]:
    """Tests build their own settings: a ``QUERYLOG_HOME``, ``QUERYLOG_INGEST_TOKEN``, ``LOKI_URL`` or
    ``LANGFUSE_HOST`` left in the shell must not reach the servers and commands they start."""
    _live_loki.update({name: os.environ[name] for name in LIVE_LOKI_VARIABLES if name in os.environ})
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name in _live_loki or (name.startswith(_SET_ASIDE_PREFIXES) and name not in _KEPT):
                mp.delenv(name)
        yield


@pytest.fixture(scope="module")
def live_loki_environment() -> Iterator[dict[str, str]]:
    """The shell's Loki settings (`LIVE_LOKI_VARIABLES`), back in the environment for one module of the live
    tier; empty, and nothing set, when the shell had none."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _live_loki.items():
            mp.setenv(name, value)
        yield dict(_live_loki)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    import querylog.logging.structured as structured

    structured._configured = False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a throwaway home; fast projections in the test's own process (the default runs them in a
    child, which tests/test_projector_process.py and the `querylog serve` tests cover); no stdout echo."""
    return Settings(
        home=tmp_path / "home", env="test", stdout_events=False, parquet_interval_s=0.05, projections="thread"
    )


def _checkout_changes(root: Path) -> set[str] | None:
    """Paths `git status` reports as changed or new (ignored files aside), or None outside a git checkout."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return {line[3:] for line in done.stdout.splitlines() if line}


_REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that hold a slow test (servers, processes, a wheel install) run first. `make test` spreads whole
    files over the workers in this order (``--dist loadfile --no-loadscope-reorder``): a long file started last
    would leave every other worker idle while it finishes."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file keeps its own order


_changes_before: set[str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _changes_before
    _changes_before = _checkout_changes(_REPO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests write only under temporary directories: a run that leaves a new file or a changed one in the
    checkout fails, naming it (a data directory written by a test was once committed by accident)."""
    if _changes_before is None:
        return
    after = _checkout_changes(_REPO)
    if after is None:
        return
    written = sorted(after - _changes_before)
    if written:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test run wrote into the checkout: " + ", ".join(written[:20])
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
