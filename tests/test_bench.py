"""`querylog bench` runs end to end on tiny sizes and reports every figure: a smoke test, no timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from querylog.commands.bench import FIGURES


def _querylog(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("querylog")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "querylog"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUERYLOG_", "LOKI_"))} | (env or {})
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=280, cwd=cwd, env=env)


@pytest.mark.slow
def test_quick_bench_prints_one_json_object_with_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = _querylog(
        "--home", str(tmp_path / "home"),
        "bench", "--quick", "--json", "--scale", "0.05", "--output-dir", str(results),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    for figure in FIGURES:
        assert figure.key in result, figure.key
        value = result[figure.key]
        assert value is None or isinstance(value, int | float), (figure.key, value)
        if value is None:
            assert result["reasons"][figure.key], figure.key  # a null always says why
            # ...and never that its group broke: only what this machine lacks (a Loki, an SDK) leaves one out.
            assert "failed" not in result["reasons"][figure.key], (figure.key, result["reasons"][figure.key])
        else:
            assert result["spread"][figure.key]["n"] >= 5, figure.key
    assert result["quick"] is True
    assert {"machine", "goals", "extra"} <= set(result)
    saved = list(results.glob("*-quick.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text(encoding="utf-8")) == result


def test_an_unknown_group_is_refused_with_the_list_of_groups(tmp_path: Path) -> None:
    done = _querylog("bench", "--only", "emit,nonsense", cwd=tmp_path)
    assert done.returncode == 2
    assert "nonsense" in done.stderr and "lifecycle" in done.stderr


@pytest.mark.slow
def test_the_api_group_measures_the_service_without_shipping_to_the_benchs_loki(tmp_path: Path) -> None:
    # LOKI_URL is the loki group's target. The API's on/off ratio is the service as users get it by default: a
    # Loki ingesting on the same cores during the querylog-on runs would take the CPU the ratio measures.
    done = _querylog(
        "--home", str(tmp_path / "home"),
        "bench", "--quick", "--json", "--only", "api", "--scale", "0.05", "--output-dir", str(tmp_path / "results"),
        cwd=tmp_path, env={"LOKI_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    server = json.loads(done.stdout)["extra"]["api"]["server_at_end"]
    assert "parquet" in server["projections"]
    assert "loki" not in server["projections"]
