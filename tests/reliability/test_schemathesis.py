"""schemathesis against the API's own OpenAPI document, over HTTP: no input makes it answer 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from querylog.testing import running_server

pytestmark = pytest.mark.slow


#: The coverage phase walks each field's boundary values: for /v1/events, the union of every event type, that is 1,500
#: cases and 90 s of CPU, a tenth of the suite's run on two cores. Its fields' bounds are the event schema's own tests'
#: (tests/service/test_producers.py, tests/logging/test_prechecked.py, generated with hypothesis); here it is fuzzed.
_CONFIG = """
[[operations]]
include-path = "/v1/events"
phases.coverage.enabled = false
"""


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(_CONFIG, encoding="utf-8")
    with running_server(tmp_path / "home", env={"QUERYLOG_ENV": "fuzz"}) as server:
        done = subprocess.run(
            [
                str(cli),
                "--config-file",
                str(config),
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
