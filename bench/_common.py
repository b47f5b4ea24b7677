"""Helpers the benchmark groups share: percentiles, subprocess servers on loopback, RSS, progress."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import httpx

__all__ = [
    "GroupResult",
    "free_port",
    "new_result",
    "percentile",
    "serve_subprocess",
    "status_mib",
    "wait_until_up",
]

BENCH_DIR = Path(__file__).resolve().parent


class GroupResult(TypedDict):
    """What a group hands back: raw repetitions per figure, why a figure is null, and anything else seen."""

    samples: dict[str, list[float]]
    reasons: dict[str, str]
    extra: dict[str, Any]


def new_result() -> GroupResult:
    return {"samples": {}, "reasons": {}, "extra": {}}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 100])."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float = 60.0) -> None:
    """Poll `url` until it answers 2xx; fail early with the process's stderr if it died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited during start (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")
        time.sleep(0.05)  # readiness poll, bounded by the deadline


@contextlib.contextmanager
def serve_subprocess(
    args: Sequence[str], ready_url: str, *, env: dict[str, str] | None = None, cpu: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a bench server script in its own process (its own GIL), pinned to `cpu` if given; stop it after."""
    command = [sys.executable, *args]
    # stderr goes to a file, not a pipe: a server that logs more than a pipe holds would block on it.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=err)
        try:
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(proc.pid, {cpu})
            try:
                wait_until_up(ready_url, proc)
            except RuntimeError as exc:
                err.seek(0)
                raise RuntimeError(f"{exc}; stderr: {err.read().decode(errors='replace')[-2000:]}") from None
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def status_mib(pid: int, field: str) -> float | None:
    """A memory figure from /proc/<pid>/status (VmHWM: peak RSS; VmRSS: now), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
