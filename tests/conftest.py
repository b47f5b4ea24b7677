"""Shared fixtures: the shell's QUERYLOG_* settings set aside, a fresh data directory per test, and structlog
reset after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from querylog.config import Settings

#: The settings the live tiers read to reach a real Loki, and the test suite's own knobs; every other
#: ``QUERYLOG_*`` variable in the developer's shell is set aside for the run.
_KEPT_FROM_THE_SHELL = frozenset(
    {
        "QUERYLOG_LOKI_URL",
        "QUERYLOG_LOKI_TENANT",
        "QUERYLOG_LOKI_USERNAME",
        "QUERYLOG_LOKI_PASSWORD",
        "QUERYLOG_LOKI_TOKEN",
        "QUERYLOG_LOKI_CA_FILE",
        "QUERYLOG_LOKI_INSECURE_SKIP_VERIFY",
        "QUERYLOG_SCREENSHOTS",
    }
)


@pytest.fixture(autouse=True, scope="session")
def _hermetic_environment() -> Iterator[None]:
    """Tests build their own settings: a ``QUERYLOG_HOME``, ``QUERYLOG_PROJECTIONS=process`` or
    ``QUERYLOG_LLM_BASE_URL`` left in the shell must not reach the servers and commands they start."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("QUERYLOG_") and name not in _KEPT_FROM_THE_SHELL:
                mp.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    import querylog.logging.structured as structured

    structured._configured = False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a throwaway home; fast projections; no stdout echo."""
    return Settings(home=tmp_path / "home", env="test", stdout_events=False, parquet_interval_s=0.05)
