"""schemathesis against the API's own OpenAPI document, over HTTP: no input makes it answer 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from querylog.testing import running_server

pytestmark = pytest.mark.slow


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    with running_server(tmp_path / "home", env={"QUERYLOG_ENV": "fuzz"}) as server:
        done = subprocess.run(
            [
                str(cli),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "80",
                "--suppress-health-check",
                "all",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its report folder goes there, not into the checkout
        )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert cases is not None, done.stdout[-2000:]
    assert int(cases.group(1)) == int(cases.group(2)) >= 50  # it really sent requests, and all passed
