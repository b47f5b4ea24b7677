"""Shared fixtures: a fresh data directory per test, and structlog reset after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from querylog.config import Settings


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
