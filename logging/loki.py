"""The Loki projection: push events to ``/loki/api/v1/push`` in batches, retry what may be retried, never
re-send what Loki stored, and advance the checkpoint only once Loki said yes."""

from __future__ import annotations

import gzip
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import httpx
import orjson
import structlog

from querylog import __version__
from querylog.logging.codec import DecodeError, decode
from querylog.logging.events import AnyEvent
from querylog.logging.loki_entries import (
    LABEL_VALUE_RE,
    MAX_LINE_BYTES,
    LokiEntry,
    Push,
    entry_for,
    event_from_entry,
    plan_pushes,
    stream_selector,
)
from querylog.logging.loki_lines import fast_entries
from querylog.logging.loki_order import TimeOrderedReader
from querylog.logging.loki_rejections import PushVerdict, Rejection, read_push_error
from querylog.logging.projection import Batch, CheckpointFile, Prepared, Projector, Sink, SinkSendError
from querylog.logging.segments import Checkpoint, LogReader

if TYPE_CHECKING:
    from querylog.config import Settings

__all__ = [
    "LokiEntry",
    "LokiOptions",
    "LokiProjector",
    "LokiSink",
    "RetryPolicy",
    "TimeOrderedReader",
    "entry_for",
    "event_from_entry",
    "loki_options",
    "loki_projector",
    "loki_sink",
    "stream_selector",
]

_log = structlog.get_logger("querylog.loki")

PUSH_PATH: Final = "/loki/api/v1/push"
#: Promtail's and Alloy's default batch size.
DEFAULT_MAX_PUSH_BYTES: Final = 1 << 20
DAY_S: Final = 86_400.0
#: Lines prepared between two chances for the writing thread to take the GIL (about 1.5 ms of work), and how
#: long each chance lasts: a real sleep, as ``sleep(0)`` hands the GIL straight back to the thread that dropped it.
_PREPARE_CHUNK: Final = 256
_YIELD_S: Final = 0.0001


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, as Promtail does it (dskit ``backoff``): attempt ``n`` waits a random
    time in ``[min·2ⁿ⁻¹, min·2ⁿ)``, capped at `max_backoff_s`; after `max_retries` the push fails."""

    min_backoff_s: float = 0.5
    max_backoff_s: float = 300.0
    max_retries: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"RetryPolicy needs 0 < min_backoff_s <= max_backoff_s, got {self.min_backoff_s} and "
                f"{self.max_backoff_s}; Promtail uses 0.5 and 300"
            )
        if self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based). A server's Retry-After is honoured up to
        `max_backoff_s`."""
        low = min(self.max_backoff_s, self.min_backoff_s * 2 ** (attempt - 1))
        high = min(self.max_backoff_s, low * 2)
        wait = low if high <= low else rng.uniform(low, high)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_backoff_s))
        return wait


@dataclass(frozen=True, slots=True, kw_only=True)
class LokiOptions:
    """How to reach Loki and which of its limits to respect. Defaults are Loki's and Promtail's own."""

    tenant: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 10.0
    compression: Literal["gzip", "none"] = "gzip"
    gzip_level: int = 1
    max_push_bytes: int = DEFAULT_MAX_PUSH_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    #: Loki's ``reject_old_samples_max_age`` (1 week): older entries are refused, so they are not sent.
    max_age_s: float = 7 * DAY_S
    #: Loki's ``creation_grace_period`` (10 min): entries further in the future are refused.
    max_future_s: float = 600.0
    #: Half of Loki's ``max_chunk_age`` (2 h): a stream refuses lines further behind its newest one.
    out_of_order_window_s: float = 3600.0
    #: Slack against clock skew when judging `max_age_s` ourselves.
    clock_margin_s: float = 60.0

    def __post_init__(self) -> None:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("Loki auth: set a bearer token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("Loki basic auth needs both a username and a password")
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("Loki TLS: a CA file and insecure_skip_verify contradict each other; choose one")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"Loki TLS: CA file {self.ca_file} does not exist")
        if self.timeout_s <= 0:
            raise ValueError(f"Loki timeout_s must be > 0, got {self.timeout_s}")
        if self.compression not in ("gzip", "none"):
            raise ValueError(f"Loki compression must be 'gzip' or 'none', got {self.compression!r}")
        if not 1 <= self.gzip_level <= 9:
            raise ValueError(f"gzip_level must be within 1..9, got {self.gzip_level}")
        if self.max_line_bytes < 1024:
            raise ValueError(f"max_line_bytes must be >= 1024, got {self.max_line_bytes}")
        if self.max_push_bytes < 2 * self.max_line_bytes:
            raise ValueError(
                f"max_push_bytes ({self.max_push_bytes}) must hold at least two of the longest lines "
                f"(2 × max_line_bytes = {2 * self.max_line_bytes}); Promtail's default is 1 MiB"
            )
        for name in ("max_age_s", "max_future_s", "out_of_order_window_s", "clock_margin_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def headers(self) -> dict[str, str]:
        """Headers of every request: who we are, the tenant, a bearer token (basic auth is the client's)."""
        headers = {"User-Agent": f"querylog/{__version__}"}
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def push_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        return headers

    def client(self, base_url: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.insecure_skip_verify:
            verify = False
        elif self.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
        auth = httpx.BasicAuth(self.username, self.password) if self.username and self.password else None
        return httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(self.timeout_s),
            verify=verify,
            auth=auth,
            headers=self.headers(),
            transport=transport,
        )


class LokiSink(Sink):
    """Ships events to Loki. Labels: ``app``, ``env``, ``event``; ids as structured metadata; the line is the
    event's UTF-8 JSON (see `entry_for`).

    Delivery: each batch from the log is cut into pushes of at most ``max_push_bytes`` (gzip JSON). 429,
    5xx, timeouts and connection errors are retried with backoff, then the write fails with
    `SinkSendError` and the projector offers the batch again later; the checkpoint moves only once every
    push of a batch was answered. A 400 is never re-sent (Loki stored its valid part): refused entries are
    counted as dropped by reason, and a 400 that cannot be explained is written to the dead-letter folder.
    """

    name = "loki"

    def __init__(
        self,
        url: str,
        *,
        app: str = "querylog",
        env: str = "dev",
        checkpoint_path: Path | None = None,
        dead_letter_dir: Path | None = None,
        options: LokiOptions | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Loki URL must start with http:// or https://, like http://127.0.0.1:3100; got {url!r}")
        for label, value in (("app", app), ("env", env)):
            if not LABEL_VALUE_RE.match(value):
                raise ValueError(
                    f"Loki label {label}={value!r} must be 1-63 letters, digits, '_', '.' or '-' (it names a stream)"
                )
        if client is not None and transport is not None:
            raise ValueError("pass either an httpx client or a transport, not both")
        self.url = url.rstrip("/")
        self.app = app
        self.env = env
        self.options = options or LokiOptions()
        self.retry = retry or RetryPolicy()
        self.dead_letter_dir = dead_letter_dir
        self._checkpoint_file = CheckpointFile(checkpoint_path) if checkpoint_path is not None else None
        self._client = client if client is not None else self.options.client(self.url, transport)
        # An injected client has its own defaults: give it the identity headers on every push.
        self._headers = {**(self.options.headers() if client is not None else {}), **self.options.push_headers()}
        self._push_url = self.url + PUSH_PATH
        self._clock = clock
        self._rng = rng or random.Random()
        self._interrupted = threading.Event()
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._interrupted.wait
        self._position: Checkpoint = {}
        # Event ids settled (stored by Loki, or dropped and counted) since the checkpoint last moved: when a
        # failed batch is offered again, these are neither re-sent nor counted twice.
        self._settled: set[str] = set()
        # Newest timestamp pushed per stream: lines further behind would be refused (too_far_behind).
        self._newest: dict[tuple[str, str, str], int] = {}
        self.truncated = 0
        self.dead_lettered = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._checkpoint_file is not None:
            self._position = self._checkpoint_file.load()

    def _close(self) -> None:
        self._interrupted.set()
        self._client.close()

    def interrupt(self) -> None:
        """Stop waiting between retries: a push that fails from now on fails at once (used at shutdown)."""
        self._interrupted.set()

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)

    # -- writing -----------------------------------------------------------------------------------------
    def prepare(self, lines: Sequence[bytes]) -> Prepared | None:
        """The batch's pushes, planned and compressed ahead of time (on the projector's read-ahead thread while
        the previous batch is in flight). Each line is decoded and validated as for any projection; entries
        are built by `loki_lines.fast_entries`, or by `entry_for` where a line must be cut or cleaned. Pure:
        what Loki has refused or stored is judged at write time."""
        o = self.options
        app, env, max_line_bytes = self.app, self.env, o.max_line_bytes
        events: list[AnyEvent] = []
        entries: list[LokiEntry] = []
        parts: list[bytes] = []
        for start in range(0, len(lines), _PREPARE_CHUNK):
            chunk: list[AnyEvent] = []
            for line in lines[start : start + _PREPARE_CHUNK]:
                try:
                    chunk.append(decode(line))
                except DecodeError:
                    return None  # the projector decodes line by line, and counts the corrupt one
            found, encoded = fast_entries(chunk, app=app, env=env, max_line_bytes=max_line_bytes)
            for i, entry in enumerate(found):
                if entry is None:
                    entry = entry_for(chunk[i], app=app, env=env, max_line_bytes=max_line_bytes)
                    encoded[i] = entry.encoded()
                entries.append(entry)
            events.extend(chunk)
            parts.extend(encoded)
            # Let the writing thread have the GIL now if it wants it: it is waiting on Loki's answer to send the
            # next push, and Python would otherwise make it wait up to the 5 ms switch interval each time.
            time.sleep(_YIELD_S)
        pushes = plan_pushes(entries, max_bytes=o.max_push_bytes, encoded=parts)
        planned = _Planned(entries=entries, pushes=pushes, bodies=[self._compress(p.body) for p in pushes])
        return Prepared(rows=planned, count=len(entries), last_ts=events[-1].ts if events else None)

    def _write(self, batch: Batch) -> None:
        planned = batch.prepared.rows if batch.prepared is not None else None
        if isinstance(planned, _Planned):
            self._ship_planned(planned)
        elif batch.events:
            self.ship(batch.events)
        if self._checkpoint_file is not None:
            try:
                self._checkpoint_file.save(batch.checkpoint)
            except OSError as exc:
                self.telemetry.error("checkpoint")
                raise SinkSendError(f"Loki checkpoint {self._checkpoint_file.path} not saved: {exc}") from exc
        self._position = dict(batch.checkpoint)
        self._settled.clear()

    def ship(self, events: Sequence[AnyEvent]) -> None:
        """Push `events` (without touching the checkpoint). Raises `SinkSendError` if Loki could not be
        reached or kept refusing; what it had accepted by then is remembered and not sent again."""
        settled, app, env, max_line_bytes = self._settled, self.app, self.env, self.options.max_line_bytes
        entries = [
            entry_for(event, app=app, env=env, max_line_bytes=max_line_bytes)
            for event in events
            if event.event_id not in settled
        ]
        for push in plan_pushes(self._admit(entries), max_bytes=self.options.max_push_bytes):
            self._deliver(push)

    def _ship_planned(self, planned: _Planned) -> None:
        kept = planned.entries if self._admits_all(planned) else self._admit(planned.entries)
        if len(kept) == len(planned.entries):
            for push, body in zip(planned.pushes, planned.bodies, strict=True):
                self._deliver(push, body)
            return
        # Some were stored before (a batch offered again) or would be refused: plan the rest afresh.
        for push in plan_pushes(kept, max_bytes=self.options.max_push_bytes):
            self._deliver(push)

    def _window(self) -> _Window:
        """What Loki accepts now: `LokiOptions`' time limits as absolute bounds, worked out once per batch."""
        o = self.options
        now_ns = int(self._clock() * 1e9)
        return _Window(
            oldest_ns=now_ns - int((o.max_age_s - o.clock_margin_s) * 1e9),
            newest_ns=now_ns + int(o.max_future_s * 1e9),
            behind_ns=int(o.out_of_order_window_s * 1e9),
        )

    def _admits_all(self, planned: _Planned) -> bool:
        """Whether `_admit` would keep every entry, judged from each push's stream spans alone (the common
        case: a new batch, inside Loki's windows), without a look at each entry."""
        if self._settled:
            return False
        window, newest = self._window(), self._newest
        return not any(
            window.refusal(low, newest.get(stream)) or window.refusal(high, newest.get(stream))
            for push in planned.pushes
            for stream, low, high in push.spans
        )

    def _admit(self, entries: list[LokiEntry]) -> list[LokiEntry]:
        """`entries` less those already settled and those Loki would refuse (counted as dropped by reason),
        judged before sending so that a 400 stays rare."""
        window, settled, newest = self._window(), self._settled, self._newest
        kept: list[LokiEntry] = []
        for entry in entries:
            if settled and entry.event_id in settled:
                continue
            reason = window.refusal(entry.ts_ns, newest.get((entry.app, entry.env, entry.event)))
            if reason is not None:
                settled.add(entry.event_id)
                self.telemetry.dropped(reason)
                continue
            kept.append(entry)
        return kept

    def _compress(self, body: bytes) -> bytes:
        return (
            gzip.compress(body, compresslevel=self.options.gzip_level) if self.options.compression == "gzip" else body
        )

    def _accepted(self, push: Push, nbytes: int, refused: int = 0) -> None:
        self._settled.update(push.event_ids)
        if push.truncated:
            # Counted once Loki has the lines, so a batch offered again does not count them twice.
            self.truncated += push.truncated
            for _ in range(push.truncated):
                self.telemetry.error("truncate")
        newest = self._newest
        for stream, _, high in push.spans:
            if high > newest.get(stream, 0):
                newest[stream] = high
        self.telemetry.sent(len(push.entries) - refused, nbytes=nbytes)

    def _deliver(self, push: Push, body: bytes | None = None) -> None:
        """Post `push` (its `body` compressed already, or compressed here) until Loki answers for it."""
        if body is None:
            body = self._compress(push.body)
        attempt = 0
        while True:
            retry_after: float | None = None
            cause: Exception | None
            try:
                response = self._client.post(self._push_url, content=body, headers=self._headers)
            except httpx.TimeoutException as exc:
                stage, failure, cause = "timeout", f"no answer within {self.options.timeout_s:g}s", exc
            except httpx.TransportError as exc:
                stage, failure, cause = "connect", f"{type(exc).__name__}: {exc}", exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._accepted(push, len(body))
                    return
                if status == 400:
                    self._rejected(push, response.text, len(body))
                    return
                if status == 413 and len(push.entries) > 1:
                    # Too large for a proxy in front of Loki: nothing was stored, so halves are safe to send.
                    self.telemetry.error("http_413")
                    for half in push.halves():
                        self._deliver(half)
                    return
                if status in (413, 422):
                    self.telemetry.error(f"http_{status}")
                    self._dead_letter(push, status, response.text, "unprocessable" if status == 422 else "too_large")
                    return
                if status not in (408, 429) and status < 500:
                    # 401, 403, 404, …: a configuration problem. Retrying soon will not help, losing data
                    # would: fail the write, keep the checkpoint, let the projector back off.
                    self.telemetry.error("auth" if status in (401, 403) else "http_4xx")
                    raise SinkSendError(
                        f"Loki at {self.url} answered {status} to a push: {response.text.strip()[:300]!r}; "
                        "check the URL, tenant and credentials (QUERYLOG_LOKI_*)"
                    )
                stage = "http_429" if status == 429 else ("http_408" if status == 408 else "http_5xx")
                failure, cause = f"HTTP {status}: {response.text.strip()[:300]!r}", None
                retry_after = _retry_after(response)
            self.telemetry.error(stage)
            attempt += 1
            if attempt > self.retry.max_retries or self._interrupted.is_set():
                raise SinkSendError(
                    f"Loki push of {len(push.entries)} entries failed after {attempt} attempts ({failure}); "
                    "the batch will be offered again"
                ) from cause
            self.telemetry.retried()
            delay = self.retry.delay(attempt, self._rng, retry_after)
            _log.warning("loki_push_retry", attempt=attempt, stage=stage, error=failure, retry_in_s=round(delay, 2))
            self._sleep(delay)
            if self._interrupted.is_set():
                raise SinkSendError(f"Loki push interrupted while waiting to retry ({failure})") from cause

    def _rejected(self, push: Push, text: str, nbytes: int) -> None:
        """A 400. Loki stored every entry it did not name; re-sending would not fix the named ones."""
        verdict: PushVerdict = read_push_error(text)
        self.telemetry.error("http_400")
        if verdict.partial:
            refused = min(verdict.refused, len(push.entries))
            for rejection in verdict.rejections:
                self.telemetry.dropped(rejection.reason, rejection.count)
                self._learn(rejection)
            self._accepted(push, nbytes, refused=refused)
            _log.warning(
                "loki_push_partly_refused",
                refused=refused,
                stored=len(push.entries) - refused,
                reasons=sorted({r.reason for r in verdict.rejections}),
            )
            return
        self._dead_letter(push, 400, text, "rejected")

    def _learn(self, rejection: Rejection) -> None:
        """A stream Loki says is further ahead than we knew (another writer, an earlier run): remember it, so
        the next lines that far behind are counted here instead of being refused there."""
        if rejection.reason != "too_far_behind" or not rejection.cutoff or not rejection.stream:
            return
        event = re.search(r'event="([^"]*)"', rejection.stream)
        try:
            cutoff = datetime.fromisoformat(rejection.cutoff.replace("Z", "+00:00"))
        except ValueError:
            return
        if event is not None:
            key = (self.app, self.env, event.group(1))
            newest = int((cutoff.timestamp() + self.options.out_of_order_window_s) * 1e9)
            self._newest[key] = max(self._newest.get(key, 0), newest)

    def _dead_letter(self, push: Push, status: int, text: str, reason: str) -> None:
        """Keep a push Loki refused for an unknown reason as one JSON line holding the exact push body, to post
        again once the cause is fixed (docs/loki.md shows how). The events are counted as dropped."""
        n = len(push.entries)
        for entry in push.entries:
            self._settled.add(entry.event_id)
        self.telemetry.dropped(reason, n)
        _log.error("loki_push_dead_lettered", status=status, reason=reason, entries=n, loki_message=text.strip()[:500])
        if self.dead_letter_dir is None:
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        record = (
            orjson.dumps(
                {
                    "at": now.isoformat(),
                    "status": status,
                    "reason": reason,
                    "loki_message": text.strip()[:4096],
                    "entries": n,
                    "stored_part_unknown": status == 400,
                }
            )[:-1]
            + b',"push":'
            + push.body
            + b"}\n"
        )
        path = self.dead_letter_dir / f"{now:%Y-%m-%d}.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as fh:
                fh.write(record)
        except OSError as exc:
            # The events are still in the log; losing the dead-letter copy must not stop the projection.
            self.telemetry.error("dead_letter")
            _log.error("loki_dead_letter_failed", path=str(path), error=str(exc))
            return
        self.dead_lettered += n


@dataclass(frozen=True, slots=True)
class _Window:
    """The timestamps Loki accepts at one moment, in Unix nanoseconds."""

    oldest_ns: int
    newest_ns: int
    #: How far a line may be behind its stream's newest one.
    behind_ns: int

    def refusal(self, ts_ns: int, stream_newest_ns: int | None) -> str | None:
        """The reason Loki would refuse a line at `ts_ns` in a stream whose newest line is at `stream_newest_ns`."""
        if ts_ns < self.oldest_ns:
            return "too_old"
        if ts_ns > self.newest_ns:
            return "too_new"
        if stream_newest_ns is not None and ts_ns < stream_newest_ns - self.behind_ns:
            return "too_far_behind"
        return None


@dataclass(frozen=True, slots=True)
class _Planned:
    """A batch as `LokiSink.prepare` left it: its entries, cut into pushes, each push's body compressed."""

    entries: list[LokiEntry]
    pushes: list[Push]
    bodies: list[bytes]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class LokiProjector(Projector):
    """A projector that, when stopped, first tells its Loki sink to stop waiting between retries: shutdown
    must not sit out a five-minute backoff while Loki is down (the log keeps the events)."""

    def __init__(
        self,
        reader: LogReader,
        sink: LokiSink,
        *,
        lock_path: Path | None = None,
        interval_s: float = 1.0,
        batch_max_events: int = 10_000,
    ) -> None:
        # Batches of about three pushes (a log line is about its Loki entry's size), read ahead while in flight.
        super().__init__(
            reader,
            sink,
            lock_path=lock_path,
            interval_s=interval_s,
            batch_max_events=batch_max_events,
            batch_max_bytes=3 * sink.options.max_push_bytes,
            read_ahead=True,
        )
        self.loki_sink = sink

    def stop(self, *, drain_timeout_s: float | None = 10.0) -> None:
        self.loki_sink.interrupt()
        super().stop(drain_timeout_s=drain_timeout_s)


def loki_options(settings: Settings) -> LokiOptions:
    return LokiOptions(
        tenant=settings.loki_tenant,
        username=settings.loki_username,
        password=settings.loki_password,
        token=settings.loki_token,
        ca_file=settings.loki_ca_file,
        insecure_skip_verify=settings.loki_insecure_skip_verify,
        max_push_bytes=settings.loki_batch_kb * 1024,
    )


def loki_sink(
    settings: Settings,
    *,
    live: bool = True,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.time,
) -> LokiSink:
    """The Loki sink `settings` describe. `live=False` (replay) keeps its checkpoint in memory only."""
    if settings.loki_url is None:
        raise ValueError("no Loki URL: set QUERYLOG_LOKI_URL (or LOKI_URL), e.g. http://127.0.0.1:3100")
    return LokiSink(
        settings.loki_url,
        app=settings.service,
        env=settings.env,
        checkpoint_path=settings.state_dir / "checkpoints" / "loki.json" if live else None,
        dead_letter_dir=settings.state_dir / "loki-dead-letter",
        options=loki_options(settings),
        transport=transport,
        sleep=sleep,
        clock=clock,
    )


def loki_projector(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> LokiProjector:
    """The live Loki projection: elected by file lock like the others, reading the log in event-time order."""
    sink = loki_sink(settings, transport=transport)
    sink.open()
    return LokiProjector(
        TimeOrderedReader(settings.log_dir),
        sink,
        lock_path=settings.state_dir / "locks" / "loki.lock",
        interval_s=settings.loki_batch_wait_s,
    )
