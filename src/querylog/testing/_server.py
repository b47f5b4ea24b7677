"""Run the real API (`querylog serve`) in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port", "running_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_server(
    home: Path, env: Mapping[str, str] | None = None, *, port: int | None = None, timeout_s: float = 60
) -> Iterator[ServerProcess]:
    """A live API on 127.0.0.1 with its data in `home`; SIGTERMed afterwards (it drains its projections)."""
    port = port or free_port()
    full_env = {**os.environ, "QUERYLOG_HOME": str(home), "QUERYLOG_STDOUT_EVENTS": "0", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "querylog", "serve", "--port", str(port)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"querylog serve exited during start: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("querylog serve did not answer /healthz in time")
            time.sleep(0.05)  # readiness poll, bounded by the deadline
        yield ServerProcess(url=url, process=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
