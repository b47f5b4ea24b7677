"""Packaging: `querylog.logging` never shadows the standard library's `logging`; the wheel installs and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def test_the_repository_root_has_no_importable_logging_package() -> None:
    assert not (ROOT / "logging" / "__init__.py").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "import logging, querylog.logging.events as e; print(logging.__file__); print(e.__name__)"],
        ["-m", "querylog", "--version"],
    ],
)
def test_stdlib_logging_wins_with_the_root_on_sys_path(args: list[str]) -> None:
    """`python -c` and `python -m` from the root put the root first on sys.path: the trap DESIGN.md names."""
    done = _run([sys.executable, *args], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    if "-c" in args:
        std_file, name = done.stdout.split()
        assert Path(std_file).parent.name == "logging" and ROOT not in Path(std_file).parents
        assert name == "querylog.logging.events"


def test_pythonpath_set_to_the_root_does_not_shadow_logging() -> None:
    done = _run(
        [sys.executable, "-c", "import logging; logging.getLogger('x').warning('ok')"], cwd=ROOT, PYTHONPATH=str(ROOT)
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    # Built from a copy: setuptools leaves a build/ folder beside the sources, which would both write into the
    # checkout and carry files a later build no longer has into its wheel.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".querylog", ".*cache", ".hypothesis", "__pycache__"
        ),
    )
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("querylog-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.endswith("testing/_loki.py") for n in names)  # the push-side double ships
    assert not [n for n in names if "logql" in n.lower()]  # the LogQL interpreter stays with the tests
    assert "querylog/analytics/aliases_starter.csv" in names  # search's bundled alias file (QUERYLOG_ALIASES=starter)
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    py = target / "bin" / "python"
    installed = _run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    helped = _run([str(target / "bin" / "querylog"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "sql" in helped.stdout
    imported = _run(
        [
            str(py),
            "-c",
            "import querylog.logging.events, querylog.service.app, querylog.analytics.catalog; "
            "import logging; print(logging.__file__)",
        ],
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert str(target) not in imported.stdout  # the stdlib's logging, not ours
