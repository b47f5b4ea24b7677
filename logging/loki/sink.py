"""The Loki sink: a batch of log lines becomes pushes (`encoding`), what Loki would refuse is counted, not sent
(admission), each push is posted (`client`) and its answer acted on; the checkpoint moves once Loki had it all."""

from __future__ import annotations

import contextlib
import gzip
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import msgspec
import orjson
import structlog

from querylog.logging.codec import encode
from querylog.logging.events import AnyEvent
from querylog.logging.loki.client import LokiClient, LokiOptions
from querylog.logging.loki.encoding import LABEL_VALUE_RE, Entries, LineError, Push, encode_lines, plan_pushes
from querylog.logging.loki.rejections import read_push_error
from querylog.logging.projection import Batch, CheckpointFile, Prepared, Sink, SinkSendError, locked
from querylog.logging.segments import Checkpoint

__all__ = ["DEAD_LETTER_LOCK", "LokiSink"]

_log = structlog.get_logger("querylog.loki")
_EVENT_LABEL: Final = re.compile(r'event="([^"]*)"')


#: Pushes are gzipped on the writing thread, just before each post, when the process hands the GIL over at least this
#: often (`querylog project` sets 0.2 ms): zlib lets go of the GIL, so the next batch is prepared meanwhile. At the
#: default 5 ms the writer would wait for the GIL after each one: the read-ahead compresses (docs/benchmarks.md).
COMPRESS_ON_WRITE_MAX_SWITCH_S: Final = 0.001

#: In the dead-letter folder: held while a letter is appended or an erasure rewrites a file (`querylog.erase`).
DEAD_LETTER_LOCK: Final = ".lock"

#: A batch as `LokiSink.prepare` leaves it: its entries, cut into pushes, and their bodies if compressed ahead.
_Planned = tuple[Entries, list[Push], list[bytes] | None]


class LokiSink(Sink):
    """Ships log lines to Loki. Labels: ``app``, ``env``, ``event``; ids as structured metadata; the line is the
    event's UTF-8 JSON (docs/loki.md).

    Delivery: a batch is cut into pushes of at most ``max_push_bytes`` (gzip JSON), sent in time order. A
    push that fails in a way worth retrying (timeout, connection, 408, 429, 5xx) fails the write with
    `SinkSendError`; the projector offers the batch again after its backoff, and what Loki stored meanwhile
    is not sent again. A 400 is never re-sent (Loki stored its valid part): refused entries are counted as
    dropped by reason, and a 400 that cannot be explained is written to the dead-letter folder.
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
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        for label, value in (("app", app), ("env", env)):
            if not LABEL_VALUE_RE.match(value):
                raise ValueError(f"Loki label {label}={value!r} must be 1-63 letters, digits, '_', '.' or '-'")
        self.app, self.env = app, env
        self.options = options or LokiOptions()
        self.client = LokiClient(url, self.options, transport=transport, client=client)
        self.dead_letter_dir = dead_letter_dir
        self._checkpoint_file = CheckpointFile(checkpoint_path) if checkpoint_path is not None else None
        self._clock = clock
        self._position: Checkpoint = {}
        # Event ids settled (stored by Loki, or dropped and counted) by a write that then failed: when the batch
        # is offered again, these are neither re-sent nor counted twice. Cleared once the checkpoint moves.
        self._settled: set[str] = set()
        self._delivered: list[tuple[Entries, Sequence[int]]] = []
        # Newest timestamp pushed per stream: lines further behind would be refused (too_far_behind).
        self._newest: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _resume(self) -> None:  # at open, and on taking the lead: from the checkpoint the last leader left
        self._position = self._checkpoint_file.load() if self._checkpoint_file is not None else {}

    _open = _resume

    def _close(self) -> None:
        self.client.close()

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)

    # -- writing -----------------------------------------------------------------------------------------
    def prepare(self, lines: Sequence[bytes]) -> Prepared | None:
        """The batch's pushes, planned (and compressed, see `COMPRESS_ON_WRITE_MAX_SWITCH_S`) on the read-ahead thread.
        None if a line is not an event: the projector then decodes line by line and counts the corrupt ones. Pure:
        Loki's answers are judged at write."""
        try:
            entries = encode_lines(lines, app=self.app, env=self.env, max_line_bytes=self.options.max_line_bytes)
        except LineError:
            return None
        planned = self._plan(entries, compress=sys.getswitchinterval() > COMPRESS_ON_WRITE_MAX_SWITCH_S)
        last = datetime.fromtimestamp(entries.times[-1] / 1e9, UTC) if entries.times else None
        return Prepared(rows=planned, count=len(entries.values), last_ts=last)

    def _plan(self, entries: Entries, keep: Sequence[int] | None = None, *, compress: bool = False) -> _Planned:
        o, trail = self.options, self._may_trail(entries)
        pushes = plan_pushes(
            entries, app=self.app, env=self.env, max_bytes=o.max_push_bytes, keep=keep, by_stream=trail
        )
        return entries, pushes, [self._body(p) for p in pushes] if compress else None

    def _body(self, push: Push) -> bytes:
        """What is posted for `push`: its JSON, compressed as the options say."""
        o = self.options
        return gzip.compress(push.body, compresslevel=o.gzip_level) if o.compression == "gzip" else push.body

    def _write(self, batch: Batch) -> None:
        planned: _Planned = batch.prepared.rows if batch.prepared else self._plan(self._encode(batch.events))  # type: ignore[assignment]
        keep = self._admit(planned)
        entries, pushes, bodies = planned if keep is None else self._plan(planned[0], keep)
        try:
            for i, push in enumerate(pushes):
                self._deliver(entries, push, bodies[i] if bodies is not None else self._body(push))
            if self._checkpoint_file is not None:
                self._checkpoint_file.save(batch.checkpoint)
        except Exception:  # a push or the checkpoint (a full disk) failed: what Loki has is not sent or counted again
            for done, positions in self._delivered:
                self._settled.update(done.event_ids[i] for i in positions)
            raise
        finally:
            self._delivered.clear()
        self._position = dict(batch.checkpoint)
        self._settled.clear()

    def _encode(self, events: Sequence[AnyEvent]) -> Entries:
        """Events (decoded by the projector, or replayed from the lake) as log lines, then entries, as every line."""
        lines: list[bytes] = []
        for event in events:
            try:
                lines.append(encode(event))
            except (UnicodeEncodeError, msgspec.EncodeError):  # the log refuses such an event too
                self.telemetry.dropped("unencodable")
        return encode_lines(lines, app=self.app, env=self.env, max_line_bytes=self.options.max_line_bytes)

    # -- admission: what Loki would refuse is counted here, not sent ----------------------------------------
    def _window(self) -> tuple[int, int, int]:
        """The oldest and newest timestamps Loki accepts now (Unix ns), and how far a line may trail its stream."""
        o, now_ns = self.options, int(self._clock() * 1e9)
        oldest = now_ns - int((o.max_age_s - o.clock_margin_s) * 1e9)
        return oldest, now_ns + int(o.max_future_s * 1e9), int(o.out_of_order_window_s * 1e9)

    def _may_trail(self, entries: Entries) -> bool:
        """Whether a line may be too far behind its stream in Loki for all this process knows (another writer, an
        earlier run): only one older than the window reaches back from the latest time Loki accepts."""
        o = self.options
        safe_from = self._clock() + o.max_future_s + o.clock_margin_s - o.out_of_order_window_s
        return bool(entries.times) and min(entries.times) < int(safe_from * 1e9)

    def _refusal(self, ts: int, stream: str, window: tuple[int, int, int]) -> str | None:
        oldest, newest, behind = window
        if ts < oldest:
            return "too_old"
        if ts > newest:
            return "too_new"
        if ts < self._newest.get(stream, ts) - behind:
            return "too_far_behind"
        return None

    def _admit(self, planned: _Planned) -> list[int] | None:
        """None if every entry is new and inside Loki's windows (judged from each push's stream spans alone: the
        common case); else the positions of those that are, the others counted by reason and logged by id, once."""
        (entries, pushes, _), window, settled = planned, self._window(), self._settled
        spans = (span for push in pushes for span in push.spans)
        if not settled and not any(self._refusal(lo, s, window) or self._refusal(hi, s, window) for s, lo, hi in spans):
            return None
        keep: list[int] = []
        refused: dict[str, list[str]] = {}
        for i, (event_id, ts, stream) in enumerate(zip(entries.event_ids, entries.times, entries.streams, strict=True)):
            if event_id in settled:
                continue
            reason = self._refusal(ts, stream, window)
            if reason is None:
                keep.append(i)
            else:
                settled.add(event_id)
                self.telemetry.dropped(reason)
                refused.setdefault(reason, []).append(event_id)
        for reason, ids in refused.items():
            _log.warning("loki_entries_not_sent", reason=reason, events=len(ids), event_ids=ids[:20])
        return keep

    # -- delivery ------------------------------------------------------------------------------------------
    def _deliver(self, entries: Entries, push: Push, body: bytes) -> None:
        """Post one push (`body`: as `_body` makes it), act on Loki's answer; `SinkSendError` if worth retrying."""
        status, text = self.client.push(body)
        if status < 300:
            self._accepted(entries, push, len(body))
        elif status == 413 and len(push.positions) > 1:
            # Too large for a proxy in front of Loki: nothing was stored, so halves are safe to send.
            self.telemetry.error("http_413")
            mid = len(push.positions) // 2
            for half in (push.positions[:mid], push.positions[mid:]):
                for part in self._plan(entries, half)[1]:
                    self._deliver(entries, part, self._body(part))
        elif status == 400:
            self._rejected(entries, push, text, len(body))
        else:
            self.telemetry.error(f"http_{status}")
            self._dead_letter(entries, push, status, text, "unprocessable" if status == 422 else "too_large")

    def _accepted(self, entries: Entries, push: Push, nbytes: int, refused: int = 0) -> None:
        self._delivered.append((entries, push.positions))
        for _ in range(push.cut):  # counted once Loki has the lines, so a batch offered again does not count twice
            self.telemetry.error("truncate")
        for stream, _, high in push.spans:
            self._newest[stream] = max(self._newest.get(stream, 0), high)
        self.telemetry.sent(len(push.positions) - refused, nbytes=nbytes)

    def _rejected(self, entries: Entries, push: Push, text: str, nbytes: int) -> None:
        """A 400. Loki stored every entry it did not name; re-sending would not fix the named ones."""
        verdict = read_push_error(text)
        if any(r.reason == "metadata_disallowed" for r in verdict.rejections):  # every entry has ids: none stored
            why = "Loki refuses structured metadata (the ids): set limits_config.allow_structured_metadata: true"
            raise SinkSendError(
                f"{why} (Loki 3's default; docs/loki.md). The events wait in the log.", stage="loki_config"
            )
        self.telemetry.error("http_400")
        if not verdict.partial:
            self._dead_letter(entries, push, 400, text, "rejected")
            return
        refused = min(sum(r.count for r in verdict.rejections), len(push.positions))
        for r in verdict.rejections:
            self.telemetry.dropped(r.reason, r.count)
            # A stream another writer (or an earlier run) moved further ahead than we knew: remember it, so the
            # next lines that far behind are counted here instead of being refused there.
            label = _EVENT_LABEL.search(r.stream or "")
            if r.reason == "too_far_behind" and r.cutoff and label is not None:
                with contextlib.suppress(ValueError):
                    seconds = datetime.fromisoformat(r.cutoff).timestamp() + self.options.out_of_order_window_s
                    self._newest[label.group(1)] = max(self._newest.get(label.group(1), 0), int(seconds * 1e9))
        self._accepted(entries, push, nbytes, refused=refused)
        reasons = sorted({r.reason for r in verdict.rejections})
        _log.warning("loki_push_partly_refused", refused=refused, stored=len(push.positions) - refused, reasons=reasons)

    def _dead_letter(self, entries: Entries, push: Push, status: int, text: str, reason: str) -> None:
        """Keep a push Loki refused for an unknown reason as one JSON line holding the exact push body, to post
        again once the cause is fixed (docs/loki.md shows how). The events are counted as dropped."""
        n = len(push.positions)
        self._delivered.append((entries, push.positions))
        self.telemetry.dropped(reason, n)
        _log.error("loki_push_dead_lettered", status=status, reason=reason, entries=n, loki_message=text.strip()[:500])
        if self.dead_letter_dir is None:
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        head = {"at": now.isoformat(), "status": status, "reason": reason, "loki_message": text.strip()[:4096]}
        head |= {"entries": n, "stored_part_unknown": status == 400}
        record = orjson.dumps(head)[:-1] + b',"push":' + push.body + b"}\n"
        path = self.dead_letter_dir / f"{now:%Y-%m-%d}.jsonl"
        try:
            with locked(path.parent / DEAD_LETTER_LOCK), path.open("ab") as fh:  # an erasure may be rewriting it
                fh.write(record)
        except OSError as exc:
            # The events are still in the log; losing the dead-letter copy must not stop the projection.
            self.telemetry.error("dead_letter")
            _log.error("loki_dead_letter_failed", path=str(path), error=str(exc))
