"""A real Alertmanager runs the project's config: it starts without its secret files and inhibits as documented."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.prometheus

CONFIG = Path(__file__).resolve().parents[2] / "compose" / "alertmanager" / "alertmanager.yml"
DEADLINE_SECONDS = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """The Debian Alertmanager on a free loopback port, clustering off, with temporary storage."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("alertmanager is not installed (Debian: apt-get install prometheus-alertmanager)")
    tmp_path = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={CONFIG}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def request(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            raw = response.read()
            return json.loads(raw) if raw else {}
    except (urllib.error.URLError, ConnectionError):
        return None


def is_ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False  # not listening yet, or 503 while starting


def wait_for(what: str, attempt: Any, process: subprocess.Popen[bytes], log_path: Path) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = attempt()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}; log:\n{log_path.read_text()[-3000:]}")
        try:
            code = process.wait(timeout=0.2)  # the pause between attempts; notices a crash at once
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"alertmanager exited with {code} while waiting for {what}; log:\n{log_path.read_text()[-3000:]}")


def alert(name: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


def test_target_down_mutes_the_other_querylog_alerts(
    alertmanager: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log_path = alertmanager
    wait_for("/-/ready", lambda: is_ready(base), process, log_path)

    # As Prometheus sends them: the recorded series behind HighErrorRatio carry no job label.
    sent = [
        alert("QuerylogTargetDown", severity="critical", job="querylog", instance="api:8000"),
        alert("QuerylogHighErrorRatio", severity="critical"),
        alert("QuerylogSinkLagging", severity="warning", sink="parquet"),
        alert("SomeoneElsesAlert", severity="warning"),
        # The Loki ruler's alerts read Loki, not the scrape: not muted (NoTrafficInLoki was, with the API down).
        alert("QuerylogNoTrafficInLoki", severity="critical", source="loki"),
    ]
    assert request(f"{base}/api/v2/alerts", sent) is not None

    muted = ("QuerylogHighErrorRatio", "QuerylogSinkLagging")

    def settled() -> dict[str, dict[str, Any]] | None:
        """Every alert received and those TargetDown mutes shown muted: Alertmanager's inhibitor takes the
        TargetDown alert in on its own goroutine, so right after the post an alert may still read "active"."""
        alerts = request(f"{base}/api/v2/alerts")
        if not alerts or len(alerts) < len(sent):
            return None
        status = {a["labels"]["alertname"]: a["status"] for a in alerts}
        return status if all(status[name]["state"] == "suppressed" for name in muted) else None

    status = wait_for("the alerts to be received and TargetDown's inhibition applied", settled, process, log_path)
    assert status["QuerylogTargetDown"]["state"] == "active"
    assert status["QuerylogHighErrorRatio"]["state"] == "suppressed"
    assert status["QuerylogHighErrorRatio"]["inhibitedBy"]
    assert status["QuerylogSinkLagging"]["state"] == "suppressed"
    assert status["SomeoneElsesAlert"]["state"] == "active"
    assert status["QuerylogNoTrafficInLoki"]["state"] == "active"


def test_one_notification_per_projection_and_per_reason_each_title_naming_its_own(
    alertmanager: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """Two projections held back went out as one notification, whose title (it names the labels the group shares)
    named neither: every label the title names groups alerts."""
    base, process, log_path = alertmanager
    wait_for("/-/ready", lambda: is_ready(base), process, log_path)
    sent = [
        alert("QuerylogLogHeldBack", severity="warning", projection="loki"),
        alert("QuerylogLogHeldBack", severity="warning", projection="stdout"),
        alert("QuerylogSinkDroppingEvents", severity="warning", sink="loki", reason="too_old"),
        alert("QuerylogSinkDroppingEvents", severity="warning", sink="loki", reason="corrupt_line"),
    ]
    assert request(f"{base}/api/v2/alerts", sent) is not None

    def grouped() -> list[dict[str, str]] | None:
        groups = request(f"{base}/api/v2/alerts/groups") or []
        labels = [g["labels"] for g in groups if g["labels"].get("alertname") in {a["labels"]["alertname"] for a in sent}]
        return labels if len(labels) >= len(sent) else None

    labels = wait_for("the alerts to be grouped", grouped, process, log_path)
    assert sorted((g["alertname"], g.get("projection", ""), g.get("reason", "")) for g in labels) == [
        ("QuerylogLogHeldBack", "loki", ""),
        ("QuerylogLogHeldBack", "stdout", ""),
        ("QuerylogSinkDroppingEvents", "", "corrupt_line"),
        ("QuerylogSinkDroppingEvents", "", "too_old"),
    ]
    config = yaml.safe_load(CONFIG.read_text())
    title = config["receivers"][0]["slack_configs"][0]["title"]
    named = re.search(r"stringSlice ((?:\"\w+\" ?)+)", title)
    assert named is not None and set(re.findall(r"\w+", named.group(1))) <= set(config["route"]["group_by"])
