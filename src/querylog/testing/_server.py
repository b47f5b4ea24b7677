"""Run the real API (`querylog serve`) in a subprocess on a free loopback port, for end-to-end tests; and a handler
of `http.server` in a thread (`serving`), for the doubles of the servers querylog talks to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port", "running_server", "serving"]


def free_port() -> int:
    """A loopback port nothing listens on now. Another process may take it before the caller binds it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], *, name: str = "test-http") -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 (a free port) from a thread until the block ends; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # daemon threads, address reuse
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_server(
    home: Path, env: Mapping[str, str] | None = None, *, port: int | None = None, timeout_s: float = 60
) -> Iterator[ServerProcess]:
    """A live API on 127.0.0.1 with its data in `home`; SIGTERMed afterwards (it drains its projections).

    Without `port`, a free one is picked; if another process takes it before the server binds it (tests running
    in parallel), the server exits 3 and another port is tried."""
    full_env = {**os.environ, "QUERYLOG_HOME": str(home), "QUERYLOG_STDOUT_EVENTS": "0", **(env or {})}
    for attempt in range(1, PORT_ATTEMPTS + 1):
        chosen = port or free_port()
        url = f"http://127.0.0.1:{chosen}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "querylog", "serve", "--port", str(chosen)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_ready(proc, url, time.monotonic() + timeout_s)
        except _PortTakenError:
            err = _stderr(proc)
            if port is not None or attempt == PORT_ATTEMPTS:
                raise RuntimeError(f"querylog serve exited during start: {err[-2000:]}") from None
            continue
        except BaseException:
            _stop(proc)
            raise
        break
    try:
        yield ServerProcess(url=url, process=proc)
    finally:
        _stop(proc)


#: How many free ports `running_server` tries when another process takes the one it picked first.
PORT_ATTEMPTS = 5
_PORT_TAKEN = 3  # `querylog serve`'s exit code when its port is taken


class _PortTakenError(Exception):
    pass


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    """What an exited `proc` said on stderr (the pipe is closed after)."""
    if proc.stderr is None:
        return ""
    with proc.stderr:
        return proc.stderr.read().decode(errors="replace")


def _wait_ready(proc: subprocess.Popen[bytes], url: str, deadline: float) -> None:
    """Returns once `proc`'s server answers /healthz at `url`; raises if it exits first or does not answer in time."""
    while True:
        # Asked before and after the health check: a server that lost its port exits 3 (tried again); one that is
        # still starting while another process answers on the port is not told apart (rare: see free_port).
        if proc.poll() is not None:
            if proc.returncode == _PORT_TAKEN:
                raise _PortTakenError
            raise RuntimeError(f"querylog serve exited during start: {_stderr(proc)[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200 and proc.poll() is None:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("querylog serve did not answer /healthz in time")
        time.sleep(0.05)  # readiness poll, bounded by the deadline


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
