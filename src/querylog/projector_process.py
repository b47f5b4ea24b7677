"""The elected projections (Parquet, Loki, stdout) in a process of their own: `run_projections` is what
``querylog project`` runs; `ProjectorProcess` is how ``querylog serve`` starts and watches one as its child
when ``QUERYLOG_PROJECTIONS=process``, with the metrics fold too (``--metrics``).

The log is the hand-off: the API process appends and flushes, the projector process tails the same files,
each projection still elected by its file lock. Its counters reach the API's ``/metrics`` through small JSON
files under ``state/telemetry/`` (`write_snapshot` / `FileTelemetry`), and the metrics fold through the
Prometheus text it publishes after each batch (``state/metrics-fold.prom``). Started by ``querylog serve``,
the child runs at a lower CPU priority (nice 10): on a spare core it costs the API nothing; where the cores are
all busy, the API keeps the CPU, the projections fall behind and catch up when it is idle — the log holds
everything meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import structlog

from querylog.config import Settings
from querylog.logging.projection import Projector, SinkError
from querylog.logging.telemetry import write_snapshot

__all__ = [
    "CHILD_NICENESS",
    "HEARTBEAT_FD_ENV",
    "HUNG_AFTER_S",
    "PARENT_PID_ENV",
    "START_GRACE_S",
    "STOP_SIGNALS",
    "SWITCH_INTERVAL_S",
    "ProjectorProcess",
    "heartbeat",
    "projection_switch_interval",
    "run_projections",
    "telemetry_path",
    "watch_parent",
]

_log = structlog.get_logger("querylog.projector_process")

#: How much lower the child's CPU priority is than the API's (``nice``: 0 is normal, 19 the lowest).
CHILD_NICENESS: Final = 10
#: How often the projector process publishes its counters for the API's /metrics.
PUBLISH_INTERVAL_S: Final = 1.0
#: How often this process's threads hand the GIL over (Python's default: 5 ms). Its projections are threads that
#: take turns: Loki's read-ahead prepares the next batch while the writing thread compresses a push and waits on
#: Loki's answer, then needs the GIL back to go on. At 5 ms it waits that long each time; at 0.2 ms the Loki
#: catch-up runs about 20% faster (docs/benchmarks.md). `querylog project` sets it for its own process only.
SWITCH_INTERVAL_S: Final = 0.0002
#: Set for a child `querylog serve` starts: the pid it watches (`watch_parent`).
PARENT_PID_ENV: Final = "QUERYLOG_PROJECTOR_PARENT_PID"
#: The signals that ask a projector process to drain and exit.
STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
#: Set for a child `querylog serve` starts: the pipe it writes a byte to every `PUBLISH_INTERVAL_S` (`heartbeat`).
#: `querylog project --once` gives a projection this many failed writes of one batch in a row (about 4 minutes of
#: backoff, as `querylog replay loki`), then exits 1: the log keeps the events for the next run.
ONCE_ATTEMPTS: Final = 12

HEARTBEAT_FD_ENV: Final = "QUERYLOG_PROJECTOR_HEARTBEAT_FD"
#: A child silent this long on its heartbeat pipe is hung (stopped, deadlocked) and is killed and started again.
#: Not its published files: a full disk stops those from a healthy child.
HUNG_AFTER_S: Final = 60.0
#: How long a child may take to beat the first time (its imports; opening the lake, the search index and the
#: metrics snapshot of a long history): a slow start is no hang, and killing it would only start it slowly again.
START_GRACE_S: Final = 600.0


def heartbeat() -> None:
    """One beat to the parent that started this process (`HEARTBEAT_FD_ENV`), if one did; never blocks."""
    fd = os.environ.get(HEARTBEAT_FD_ENV, "")
    if fd.isdigit():
        with contextlib.suppress(OSError):  # the parent gone (EPIPE) or not reading yet (EAGAIN): the next beat
            os.write(int(fd), b".")


@contextlib.contextmanager
def projection_switch_interval() -> Iterator[None]:
    """Run the body with `SWITCH_INTERVAL_S` as this process's switch interval, then restore the one before."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def telemetry_path(settings: Settings, sink: str) -> Path:
    """Where the process running projection `sink` publishes its counters."""
    return settings.state_dir / "telemetry" / f"{sink}.json"


def run_projections(
    projectors: dict[str, Projector],
    settings: Settings,
    *,
    stop: threading.Event,
    once: bool = False,
    drain_timeout_s: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Run `projectors` until `stop` is set (or, with `once`, until each has caught up), publishing their
    counters every second; drain and publish once more at the end. Returns the events each projection sent."""

    failing: set[str] = set()  # said once each until a publication goes through again (a full disk: every second)

    def publish(names: list[str]) -> None:
        heartbeat()  # alive, whatever the disk says
        # Only what this process leads: a projector standing by must not overwrite the leader's counters.
        for name in names:
            try:
                write_snapshot(projectors[name].telemetry, telemetry_path(settings, name))
            except OSError as exc:  # counters are a courtesy: never stop projecting over them
                if name not in failing:
                    failing.add(name)
                    _log.warning("telemetry_publish_failed", projection=name, error=str(exc), until="it works again")
                continue
            if name in failing:
                failing.discard(name)
                _log.info("telemetry_publish_recovered", projection=name)

    def leaders() -> list[str]:
        return [name for name, projector in projectors.items() if projector.has_led]

    gave_up = False
    try:
        if once:
            for name, projector in projectors.items():
                if stop.is_set():
                    break
                if not projector.try_lead():
                    if progress is not None:
                        progress(f"{name}: another process runs it (it holds {projector.lock_path}); skipped")
                    continue
                n, published = 0, time.monotonic()
                while not stop.is_set() and (step := projector.attempt(wait=stop.wait)) != 0:
                    if step is None:  # failed, logged, backed off: offered again, as a running projector would
                        if projector.failures >= ONCE_ATTEMPTS:
                            gave_up = True
                            raise SinkError(
                                f"{name}: {projector.failures} failed writes of one batch in a row (about 4 minutes "
                                "of backoff); the warnings above say why"
                            )
                        continue
                    n += step
                    if time.monotonic() - published >= PUBLISH_INTERVAL_S:  # a long catch-up is seen alive
                        publish([name])
                        published = time.monotonic()
                if progress is not None:
                    progress(f"{name}: {n} log lines projected" + (" (stopped)" if stop.is_set() else ""))
        else:
            for projector in projectors.values():
                projector.start()
            while not stop.wait(PUBLISH_INTERVAL_S):
                publish(leaders())
    finally:
        # A one-off run that was asked to stop stops now; a running one drains what the log holds (bounded).
        drain = None if once and (stop.is_set() or gave_up) else drain_timeout_s
        for projector in projectors.values():
            projector.stop(drain_timeout_s=drain)
            projector.sink.close()
        publish(leaders())
    return {name: p.telemetry.snapshot().sent for name, p in projectors.items()}


def watch_parent(parent_pid: int, stop: threading.Event) -> threading.Thread:
    """Set `stop` once the process that started this one is gone (killed, out of memory): a child left behind
    would keep the projections' locks and the old settings. Checked every second."""

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                # Stop first: the parent's stderr, which this process shares, may have no reader any more, and a
                # warning that cannot be written must not end this thread before it has said stop.
                stop.set()
                with contextlib.suppress(OSError):
                    _log.warning("projector_parent_gone", parent_pid=parent_pid)

    thread = threading.Thread(target=watch, name="querylog-parent-watch", daemon=True)
    thread.start()
    return thread


class ProjectorProcess:
    """A ``querylog project`` child of the API process: started with the API's settings, restarted with backoff
    if it dies, asked to drain and exit (SIGTERM) when the API stops."""

    def __init__(
        self,
        settings: Settings,
        *,
        drain_timeout_s: float = 10.0,
        niceness: int = CHILD_NICENESS,
        command: list[str] | None = None,
        hung_after_s: float = HUNG_AFTER_S,
        start_grace_s: float = START_GRACE_S,
    ):
        """`command` replaces ``querylog project`` (tests); it must unblock SIGTERM/SIGINT itself (see `_spawn`)
        and beat (`heartbeat`), or be taken for hung: silent `start_grace_s` after it starts, or `hung_after_s`
        after a beat."""
        self.settings = settings
        self.drain_timeout_s = drain_timeout_s
        self.hung_after_s = hung_after_s
        self.start_grace_s = max(start_grace_s, hung_after_s)
        self._beats = -1  # the read end of the child's heartbeat pipe
        #: Heartbeats received from the children so far.
        self.beats = 0
        self.command = command or [
            *(sys.executable, "-m", "querylog", "project", "--metrics"),
            *("--nice", str(niceness), "--drain-timeout", str(drain_timeout_s)),
        ]
        self.restarts = 0
        #: Children in a row that exited within a minute of starting, and the last one's exit code: a crash loop
        #: (`/healthz` says so at the second, before the projections' silence would).
        self.quick_exits = 0
        self.last_exit: int | None = None
        self._spawned_at = 0.0  # time.monotonic() when the child now running was started
        #: The child exited 2 (a setting, checkpoint or commit record it cannot use) and is not started again.
        self.refused = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._signalled: int | None = None  # the pid `request_stop` sent SIGTERM to
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def crash_looping(self) -> bool:
        """Two or more children in a row exited within a minute of starting, and none has run a minute since."""
        return self.quick_exits >= 2 and not (self.running and time.monotonic() - self._spawned_at > 60)

    def start(self) -> ProjectorProcess:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="querylog-projector-process", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # a child never waits on its heartbeat
        env = {
            **os.environ,
            **self.settings.to_env(),
            "QUERYLOG_PROJECTIONS": "thread",
            PARENT_PID_ENV: str(os.getpid()),
            HEARTBEAT_FD_ENV: str(write_end),
        }
        with self._lock:
            if self._stopping.is_set():
                os.close(read_end)
                os.close(write_end)
                return
            # The child starts with SIGTERM and SIGINT blocked (a signal mask survives fork and exec) and unblocks
            # them once its handlers are in place: a stop that comes while it is still importing waits for those
            # handlers and drains, instead of killing it before it has projected anything.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                # Its own session: a Ctrl-C in the terminal reaches the API only, which then stops the child
                # after the log's last append, so the child drains everything.
                self._proc = subprocess.Popen(
                    self.command, env=env, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(write_end,)
                )
                self._spawned_at = time.monotonic()
            except BaseException:
                os.close(read_end)
                raise
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                os.close(write_end)  # the child's now: its exit closes the pipe
            if self._beats >= 0:
                os.close(self._beats)
            self._beats = read_end
        _log.info("projector_process_started", pid=self._proc.pid, restarts=self.restarts)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = self._wait_alive(proc)
            if self._stopping.is_set():
                return
            if code == 2:  # a setting it cannot use: starting it again would fail the same way
                _log.error("projector_process_refused_its_settings", pid=proc.pid, code=code)
                self.refused = True
                return
            _log.error("projector_process_exited", pid=proc.pid, code=code, restart_in_s=backoff)
            lived = time.monotonic() - self._spawned_at > 60
            self.quick_exits, self.last_exit = (0 if lived else self.quick_exits + 1), code
            if self._stopping.wait(backoff):
                return
            # A child that lived a while gets a fresh backoff; one that dies at once waits longer each time.
            backoff = 1.0 if lived else min(30.0, backoff * 2)
            self.restarts += 1
            self._spawn()

    def _wait_alive(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for `proc` to exit, reading its heartbeat; kill it once silent `hung_after_s` since a beat, or
        `start_grace_s` since it started (a stopped or deadlocked child would otherwise hold the projections' locks
        for good). Its exit code."""
        last_beat, beaten = time.monotonic(), False
        while proc.poll() is None:
            ready, _, _ = select.select([self._beats], [], [], 1.0)
            if ready:
                try:
                    beats = os.read(self._beats, 4096)
                except OSError:
                    beats = b""
                if beats:
                    self.beats += len(beats)
                    last_beat, beaten = time.monotonic(), True
                    continue
                return proc.wait()  # the pipe closed: the child is exiting
            if self._stopping.is_set():
                return proc.wait()
            if time.monotonic() - last_beat > (self.hung_after_s if beaten else self.start_grace_s):
                _log.error(
                    "projector_process_hung",
                    pid=proc.pid,
                    silent_s=round(time.monotonic() - last_beat),
                    beat_yet=beaten,
                )
                proc.kill()
                return proc.wait()
        return proc.returncode

    def request_stop(self) -> None:
        """Ask the child to drain and exit (SIGTERM), without waiting: `stop` waits."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
            # Once per child: a second SIGTERM that lands while it finalises (when Python has put the default
            # handlers back) would kill it mid-exit, with -15 instead of its drained 0.
            if proc is None or proc.pid == self._signalled:
                return
            self._signalled = proc.pid
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """Ask the child to drain and exit, and wait; kill it if it has not within its drain time for each of
        its projections (plus start-up slack). Returns its exit code."""
        self.request_stop()
        proc = self._proc
        if proc is None:
            return None
        budget = self.drain_timeout_s * 3 + 15  # Parquet, stdout and Loki drain one after another
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            _log.error("projector_process_killed", pid=proc.pid, after_s=budget)
            proc.kill()
            proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._beats >= 0 and (self._watcher is None or not self._watcher.is_alive()):
            os.close(self._beats)
            self._beats = -1
        return proc.returncode
