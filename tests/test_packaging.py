"""Packaging: `querylog.logging` never shadows the standard library's `logging`; the wheel installs and runs."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
    wheel = _built_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.endswith("testing/_loki.py") for n in names)  # the push-side double ships
    assert not [n for n in names if "logql" in n.lower()]  # the LogQL interpreter stays with the tests
    assert "querylog/analytics/aliases_starter.csv" in names  # search's bundled alias file (QUERYLOG_ALIASES=starter)
    # The venv gets the wheel alone; its dependencies are this environment's, seen through a .pth file (which
    # adds the folder to sys.path without running the editable install's hook there). Resolving and unpacking
    # them again took a minute; that each one is declared is the next test's, that they resolve `make`'s.
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    py = target / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    (Path(site.stdout.strip()) / "querylog_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--quiet", str(wheel)], cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    helped = _run([str(target / "bin" / "querylog"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "sql" in helped.stdout
    imported = _run(
        [
            str(py),
            "-c",
            "import querylog, querylog.logging.events, querylog.service.app, querylog.analytics.catalog; "
            "import logging; print(logging.__file__); print(querylog.__file__)",
        ],
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    std_logging, package = imported.stdout.split()
    assert str(target) not in std_logging  # the stdlib's logging, not ours
    assert Path(package).is_relative_to(target)  # the wheel's querylog, not the checkout's


def test_every_module_imports_only_what_the_package_declares() -> None:
    """A third-party module imported anywhere in the package (lazily too) comes with a declared dependency, directly
    or through one: else `pip install querylog` gives an install that fails where the dev extras hid it."""
    declared = _closure(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])
    owners = importlib.metadata.packages_distributions()
    undeclared: dict[str, set[str]] = {}
    package = ROOT / "src" / "querylog"
    modules = [Path(d, f) for d, _, files in os.walk(package, followlinks=True) for f in files if f.endswith(".py")]
    assert {"logging", "service", "analytics"} <= {p.relative_to(package).parts[0] for p in modules}  # links followed
    for path in sorted(modules):
        for name in _imported_top_levels(path):
            if name in sys.stdlib_module_names or name in ("querylog", "__future__"):
                continue
            dists = {_canonical(d) for d in owners.get(name, [])}
            if not dists & declared:
                undeclared.setdefault(name, set()).add(str(path.relative_to(package)))
    assert not undeclared, undeclared


def _built_wheel(tmp_path: Path) -> Path:
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
    return next(wheels.glob("querylog-*.whl"))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` install: each, with its extras, and what they require in turn."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
            continue
        if name in seen:
            continue
        seen.add(name)
        for extra in ("", *req.extras):
            for sub in importlib.metadata.requires(req.name) or []:
                child = Requirement(sub)
                if child.marker is None or child.marker.evaluate({"extra": extra}):
                    todo.append(child)
    return seen


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names
