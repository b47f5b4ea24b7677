"""A genuinely full disk under the log (a tiny tmpfs): the API keeps answering, losses are counted and
logged, and writing resumes when space returns."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.service.app import create_app


@pytest.fixture
def full_log_disk(tmp_path: Path) -> Iterator[Path]:
    log_dir = tmp_path / "home" / "log"
    log_dir.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(log_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield log_dir
    finally:
        subprocess.run(["umount", "-l", str(log_dir)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as info:  # noqa: PT012 - writing until the disk refuses
            while True:
                os.write(fd, b"\0" * 512)
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_disk_full_keeps_the_api_answering_and_recovers(
    full_log_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path / "home", env="test", stdout_events=False, parquet_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        filler = _fill(full_log_disk)
        lost = [client.post("/v1/chat", json={"query": f"삼성전자 {i}"}) for i in range(5)]
        assert [r.status_code for r in lost] == [200] * 5  # answered although nothing could be written
        health = client.get("/healthz").json()
        assert health["log"]["events_dropped"] == 25  # 5 queries x 5 events, each counted
        assert health["status"] == "degraded"  # a probe sees it, still with 200: the API answers
        assert health["reasons"] == ["the log cannot write (No space left on device): events are being dropped"]
        assert health["log"]["degraded"] and health["log"]["write_error"] == "No space left on device"
        out = capsys.readouterr().out
        assert out.count('"log_write_failed"') == 1  # one clear structured line says why, not one per request
        assert '"events_dropped":5' in out  # the first query's five events; the others wait for the next line

        filler.unlink()  # space returns
        kept = [client.post("/v1/chat", json={"query": f"네이버 {i}"}).json()["query_id"] for i in range(3)]
        health = client.get("/healthz").json()
        assert health["log"]["events_written"] == 15
        assert health["status"] == "ok" and "reasons" not in health  # writing again: healthy again
        assert not health["log"]["degraded"] and "write_error" not in health["log"]
        assert '"log_write_recovered"' in capsys.readouterr().out  # and one says it is over, with what it cost
    with Catalog(settings.lake_dir) as catalog:
        _, rows = catalog.query("select query_id from queries order by started_at")
    assert [r[0] for r in rows] == kept
