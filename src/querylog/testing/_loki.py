"""`RecordedLoki`: a Loki 3.4.5 double that answers as the real one did in ``shared/loki-recordings``.

Use it as an httpx transport (``httpx.Client(transport=loki.transport())``) or as a real HTTP server on
127.0.0.1 (``with loki.serve() as url: ...``) for code that builds its own client, such as a subprocess.

Push (``POST /loki/api/v1/push``), as Loki validates it (``pkg/loghttp/push``, ``pkg/distributor``,
``pkg/ingester/stream.go`` at v3.4.5): JSON, plain or gzip; 204 on success; 422 for no streams; 400 for a
body that does not parse, a bad label name (nothing stored), and per-entry refusals (too old, too new, line
too long, structured metadata too large, more than an hour behind the stream's newest line) — which store
every other entry of the push, as the recording ``mixed_valid_and_too_old`` showed. Loki's own bookkeeping
is copied too: the ``service_name`` label, a ``detected_level`` for every line, and dropping an entry equal
(time and line) to one the stream holds — counted in `duplicates_ignored` so tests can see re-sends.

Reads: ``/loki/api/v1/labels``, ``/label/<name>/values``, ``/series`` (stream selectors) and ``/ready``, and
`entries`/`lines`/`streams` for tests. LogQL queries (``/query``, ``/query_range``) are answered only with a
`query_engine` (501 otherwise): the double's job is the push side; querylog's own tests bring a LogQL subset
(``tests/support/loki_query.py``, not in the wheel) and check the queries that matter against a live Loki.

Fault injection: `fail_next` queues answers that replace the next requests' (429, 5xx, timeouts, refused
connections, slow answers).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import httpx
import orjson

from querylog.testing._server import serving

__all__ = ["Fault", "RecordedLoki", "StoredEntry"]

DEFAULT_MAX_LINE_BYTES: Final = 262_144
WEEK_S: Final = 7 * 86_400.0
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LOGFMT_RE: Final = re.compile(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
#: Loki's ``discover_service_name`` default: the first of these labels names the service.
_SERVICE_LABELS: Final = (
    "service", "app", "application", "app_name", "name", "app_kubernetes_io_name", "container", "container_name",
    "k8s_container_name", "component", "workload", "job", "k8s_job_name",
)  # fmt: skip
#: Loki's ``log_level_fields`` default.
_LEVEL_FIELDS: Final = ("level", "LEVEL", "Level", "Severity", "severity", "SEVERITY", "lvl", "LVL", "Lvl")
_LEVELS: Final = {
    "trace": "trace", "trc": "trace", "debug": "debug", "dbg": "debug", "info": "info", "inf": "info",
    "warn": "warn", "wrn": "warn", "warning": "warn", "error": "error", "err": "error",
    "critical": "critical", "fatal": "fatal",
}  # fmt: skip
_MAX_METADATA_BYTES: Final = 65_536
_MAX_METADATA_ENTRIES: Final = 128
_MAX_RETURNED_ERRORS: Final = 10  # ingester.max-ignored-stream-errors


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One line Loki holds: its stream labels (with ``service_name``), time, line and structured metadata
    (as pushed, plus the ``detected_level`` Loki adds)."""

    tenant: str
    labels: Mapping[str, str]
    ts_ns: int
    line: str
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Fault:
    """A forced answer for one request. Build with the class methods."""

    kind: Literal["status", "timeout", "connect", "slow", "pass"]
    status: int = 0
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    stored: bool = False
    seconds: float = 0.0

    @classmethod
    def answer(cls, status: int, body: str | None = None, *, retry_after: float | None = None) -> Fault:
        """Answer `status` without storing anything (429 and 5xx bodies default to Loki's wording)."""
        default = {
            429: "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to "
            "ingest '1' lines totaling '100' bytes, reduce log volume or contact your Loki administrator to see if "
            "the limit can be increased\n",
            500: "rpc error: code = Unavailable desc = connection error\n",
            502: "bad gateway\n",
            503: "no healthy ingesters\n",
        }.get(status, "")
        headers = {"Retry-After": _go_float(retry_after)} if retry_after is not None else {}
        return cls("status", status=status, body=default if body is None else body, headers=headers)

    @classmethod
    def timeout(cls, *, stored: bool = False, seconds: float = 30.0) -> Fault:
        """No answer in time. `stored`: Loki stored the push before the answer was lost, so the client's
        re-send reaches Loki a second time. A served double sleeps `seconds` instead of raising."""
        return cls("timeout", stored=stored, seconds=seconds)

    @classmethod
    def connection_refused(cls) -> Fault:
        return cls("connect")

    @classmethod
    def passthrough(cls) -> Fault:
        """Answer normally: queue it before a failure to let that many requests through first."""
        return cls("pass")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally after `seconds` (a served double sleeps; a transport raises a timeout, since a
        test of slowness must not wait)."""
        return cls("slow", seconds=seconds)


class _PushError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Stream:
    tenant: str
    labels: dict[str, str]
    key: str
    entries: list[StoredEntry] = field(default_factory=list)
    seen: set[tuple[int, str]] = field(default_factory=set)
    highest: int | None = None
    last: tuple[int, str] | None = None


def _label_string(labels: Mapping[str, str]) -> str:
    """Prometheus' ``labels.String()``: ``{a="1", b="2"}``, sorted by name."""
    return "{" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items())) + "}"


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_time(ns: int) -> str:
    """Go's ``time.Time.String()`` of a UTC time: ``2026-11-24 01:35:17.636728612 +0000 UTC``."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + " +0000 UTC"


def _jsoniter_error(raw: bytes, head: int, what: str) -> str:
    """json-iterator's error wording: 10 bytes either side of the error, then 50 (``ReportError``)."""
    tail = len(raw)
    peek_start = max(0, head - 10)
    parsing = raw[peek_start : min(head + 10, tail)].decode("utf-8", "replace")
    context = raw[max(0, head - 50) : min(head + 50, tail)].decode("utf-8", "replace")
    return f"{what}, error found in #{head - peek_start} byte of ...|{parsing}|..., bigger context ...|{context}|..."


def _stream_ends(raw: bytes) -> list[int]:
    """Byte offsets just past each element of the top-level ``streams`` array."""
    text = raw.decode("latin-1")  # one char per byte: offsets are byte offsets
    decoder = json.JSONDecoder()
    ends: list[int] = []

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0) + 1
    while i < len(text):
        i = skip(i)
        if text[i] == "}":
            break
        key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = skip(skip(i) + 1)
        if key == "streams" and text[i] == "[":
            i += 1
            while True:
                i = skip(i)
                if text[i] == "]":
                    i += 1
                    break
                _, i = decoder.raw_decode(text, i)
                ends.append(i)
                i = skip(i)
                if text[i] == ",":
                    i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i)
        if i < len(text) and text[i] == ",":
            i += 1
    return ends


def _detect_level(labels: Mapping[str, str], metadata: Mapping[str, str], line: str) -> str:
    """Loki's ``detected_level`` (``pkg/distributor/field_detection.go``)."""
    for source in (labels, metadata):
        for name in _LEVEL_FIELDS:
            if name in source:
                return source[name]
    stripped = line.strip()
    value: str | None = None
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            value = next((str(obj[n]) for n in _LEVEL_FIELDS if n in obj), None)
    elif "=" in line:
        pairs = {k: quoted or bare for k, quoted, bare in _LOGFMT_RE.findall(line)}
        value = next((pairs[n] for n in _LEVEL_FIELDS if n in pairs), None)
    if value is not None and value.lower() in _LEVELS:
        return _LEVELS[value.lower()]
    # No level field: Loki looks for words anywhere in the line.
    if any(w in line for w in ("info:", "INFO:", "info", "INFO")):
        return "info"
    if any(w in line for w in ("err:", "ERR:", "error", "ERROR")):
        return "error"
    if any(w in line for w in ("warn:", "WARN:", "warning", "WARNING")):
        return "warn"
    if any(w in line for w in ("CRITICAL:", "critical:")):
        return "critical"
    if any(w in line for w in ("debug:", "DEBUG:")):
        return "debug"
    return "unknown"


def _parse_time(raw: str | None, default_ns: int) -> int:
    """Loki's ``parseTimestamp``: nanoseconds, seconds (≤ 10 digits or with a fraction) or RFC 3339."""
    if raw is None or raw == "":
        return default_ns
    if "." in raw:
        with contextlib.suppress(ValueError):
            return round(float(raw) * 1000) * 1_000_000
    try:
        number = int(raw)
    except ValueError:
        try:
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            raise LokiRequestError(f"invalid parameter: cannot parse {raw!r} to a valid timestamp") from None
    return number * 1_000_000_000 if len(raw) <= 10 else number


class LokiRequestError(ValueError):
    """A selector or parameter this double cannot read: answered 400, as Loki answers one."""


_MATCHER: Final = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_stream_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A LogQL stream selector, ``{app="querylog", event=~"query_.*"}``, as a test of a stream's labels.

    Only the selector: line filters, parsers and metric queries are a query engine's (`query_engine`)."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise LokiRequestError(f'parse error: a stream selector is {{name="value", …}}; got {text!r}')
    inner, matchers = body[1:-1].strip(), []
    while inner:
        m = _MATCHER.match(inner)
        if m is None:
            raise LokiRequestError(f"parse error: cannot read the matcher at {inner!r} in {text!r}")
        name, op, raw = m.group(1), m.group(2), json.loads(f'"{m.group(3)}"')
        pattern = re.compile(raw) if "~" in op else None
        matchers.append((name, op, raw, pattern))
        inner = inner[m.end() :]
    if not matchers:
        raise LokiRequestError("queries require at least one regexp or equality matcher")

    def selects(labels: Mapping[str, str]) -> bool:
        for name, op, raw, pattern in matchers:
            value = labels.get(name, "")
            hit = pattern.fullmatch(value) is not None if pattern is not None else value == raw
            if hit != (op in ("=", "=~")):
                return False
        return True

    return selects


def _go_float(value: float) -> str:
    """Seconds as Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` writes them (a Retry-After header)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


#: A LogQL query engine: (the double, the path, the query parameters, the tenant) -> the answer's ``data``.
QueryEngine = Callable[["RecordedLoki", str, Mapping[str, str], str], dict[str, Any]]
NO_QUERY_ENGINE: Final = (
    "this RecordedLoki answers pushes, labels and series; a LogQL query (/query, /query_range) needs a live Loki "
    "or a query_engine (querylog's own tests use tests/support/loki_query.py)\n"
)


class RecordedLoki:
    """A Loki double with Loki 3.4.5's answers. Thread-safe.

    `clock` gives Loki's "now" in epoch seconds (tests freeze it). Limits default to Loki's: lines up to
    256 KiB, samples up to a week old, 10 minutes into the future, an hour behind a stream's newest line.
    `auth_enabled` makes ``X-Scope-OrgID`` required (401 ``no org id`` without it) and keeps tenants apart, as
    multi-tenant Loki does; otherwise the header is ignored and everything lands in tenant ``fake``.
    `allow_structured_metadata=False` refuses every entry that carries some (``limits_config``).
    `required_headers` models a gateway in front of Loki (401 unless every header is sent with that value).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_age_s: float = WEEK_S,
        creation_grace_s: float = 600.0,
        out_of_order_window_s: float = 3600.0,
        allow_structured_metadata: bool = True,
        auth_enabled: bool = False,
        required_headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        query_engine: QueryEngine | None = None,
    ) -> None:
        self.clock = clock
        self.query_engine = query_engine
        self.max_line_bytes = max_line_bytes
        self.max_age_s = max_age_s
        self.creation_grace_s = creation_grace_s
        self.out_of_order_window_s = out_of_order_window_s
        self.allow_structured_metadata = allow_structured_metadata
        self.auth_enabled = auth_enabled
        self.required_headers = dict(required_headers or {})
        self._sleep = sleep
        self._lock = threading.RLock()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._faults: list[Fault] = []
        #: Every request received, in order (faulted ones included).
        self.requests: list[httpx.Request] = []
        #: Entries dropped because the stream already held the same time and line (a re-send).
        self.duplicates_ignored = 0

    # -- the seam ------------------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail_next(self, *faults: Fault | int) -> None:
        """Queue forced answers for the next requests: a `Fault`, or a status code (``429``, ``500``, …)."""
        with self._lock:
            self._faults.extend(f if isinstance(f, Fault) else Fault.answer(f) for f in faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (the `httpx.MockTransport` handler)."""
        request.read()
        with self._lock:
            self.requests.append(request)
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None and fault.kind != "pass":
            if fault.kind == "connect":
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            if fault.kind in ("timeout", "slow"):
                if fault.stored:
                    self._route(request)
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(fault.status, text=fault.body, headers=dict(fault.headers))
        return self._route(request)

    # -- what is stored --------------------------------------------------------------------------------------
    def entries(self, selector: str | None = None, *, tenant: str | None = None) -> list[StoredEntry]:
        """Stored entries, oldest first, optionally those of streams matching a LogQL stream `selector`."""
        chosen = parse_stream_selector(selector) if selector else None
        with self._lock:
            found = [
                e
                for s in self._streams.values()
                if (tenant is None or s.tenant == tenant) and (chosen is None or chosen(s.labels))
                for e in s.entries
            ]
        return sorted(found, key=lambda e: e.ts_ns)

    def lines(self, selector: str | None = None) -> list[str]:
        return [e.line for e in self.entries(selector)]

    def label_names(self) -> set[str]:
        """Every stream label name (structured metadata is not a label)."""
        with self._lock:
            return {name for s in self._streams.values() for name in s.labels}

    def streams(self, selector: str | None = None) -> list[dict[str, str]]:
        chosen = parse_stream_selector(selector) if selector else None
        with self._lock:
            return [dict(s.labels) for s in self._streams.values() if chosen is None or chosen(s.labels)]

    # -- routing ---------------------------------------------------------------------------------------------
    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/ready":
            return httpx.Response(200, text="ready\n")
        missing = [k for k, v in self.required_headers.items() if request.headers.get(k) != v]
        if missing:
            return httpx.Response(401, text="unauthorized\n")
        # Single-tenant Loki ignores X-Scope-OrgID: everything lands in tenant "fake".
        tenant = request.headers.get("X-Scope-OrgID", "") if self.auth_enabled else "fake"
        if not tenant:
            return httpx.Response(401, text="no org id\n")
        if path == "/loki/api/v1/push":
            if request.method != "POST":
                return httpx.Response(405, text="")
            return self._push(request, tenant)
        params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            params.update(parse_qsl(request.content.decode(), keep_blank_values=True))
        try:
            if path in ("/loki/api/v1/query_range", "/loki/api/v1/query"):
                if self.query_engine is None:
                    return httpx.Response(501, text=NO_QUERY_ENGINE)
                return self._json(self.query_engine(self, path, params, tenant))
            if path == "/loki/api/v1/labels":
                return self._json(self._labels(params, tenant))
            match = re.fullmatch(r"/loki/api/v1/label/([^/]+)/values", path)
            if match:
                return self._json(self._label_values(match.group(1), params, tenant))
            if path == "/loki/api/v1/series":
                matches = [v for k, v in parse_qsl(request.url.query.decode()) if k == "match[]"]
                return self._json(self._series(matches, params, tenant))
        except ValueError as exc:  # a query the engine, or a selector or time this double, refused
            return httpx.Response(400, text=str(exc))
        return httpx.Response(404, text="404 page not found\n")

    @staticmethod
    def _json(data: Any) -> httpx.Response:
        body = orjson.dumps({"status": "success", "data": data})
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json; charset=UTF-8"})

    # -- push ----------------------------------------------------------------------------------------------
    def _push(self, request: httpx.Request, tenant: str) -> httpx.Response:
        try:
            streams = self._decode_push(request)
            message = self._ingest(streams, tenant)
        except _PushError as exc:
            return httpx.Response(exc.status, text=exc.message + "\n")
        if message is not None:
            return httpx.Response(400, text=message + "\n")
        return httpx.Response(204)

    def _decode_push(
        self, request: httpx.Request
    ) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
        raw = request.content
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise _PushError(400, f"gzip: {exc}") from None
        elif encoding == "deflate":
            try:
                raw = zlib.decompress(raw, -zlib.MAX_WBITS)
            except zlib.error as exc:
                raise _PushError(400, f"flate: {exc}") from None
        elif encoding not in ("", "snappy"):
            raise _PushError(400, f'Content-Encoding "{encoding}" not supported')
        media = request.headers.get("Content-Type", "").split(";")[0].strip()
        if media != "application/json":
            # Loki reads anything else as snappy-compressed protobuf; this double does not speak it.
            raise _PushError(400, "snappy: corrupt input (RecordedLoki accepts only JSON pushes)")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            head = len(raw) if isinstance(exc, UnicodeDecodeError) else len(exc.doc[: exc.pos].encode())
            what = "loghttp.PushRequest.Streams: []loghttp.LogProtoStream: Skip: do not know how to skip"
            if head < len(raw.rstrip()):
                what = f"loghttp.PushRequest: ReadObject: {exc}"
            else:
                what += ": 0"
            raise _PushError(400, _jsoniter_error(raw, head, what)) from None
        if not isinstance(body, dict):
            raise _PushError(400, _jsoniter_error(raw, 1, "loghttp.PushRequest: ReadObjectCB: expect { or n"))
        decoded: list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]] = []
        raw_streams = body.get("streams") or []
        if not isinstance(raw_streams, list):
            raise _PushError(400, _jsoniter_error(raw, 12, "loghttp.PushRequest.Streams: []loghttp.LogProtoStream"))
        for index, stream in enumerate(raw_streams):
            labels = stream.get("stream") if isinstance(stream, dict) else None
            values = stream.get("values", []) if isinstance(stream, dict) else None
            if not isinstance(labels, dict) or not isinstance(values, list):
                raise _PushError(400, self._stream_error(raw, index, "unmarshalerDecoder: Value is not an object"))
            entries: list[tuple[int, str, dict[str, str]]] = []
            for value in values:
                if not isinstance(value, list) or not 2 <= len(value) <= 3:
                    raise _PushError(400, self._stream_error(raw, index, "unmarshalerDecoder: Malformed value"))
                ts, line = value[0], value[1]
                if not isinstance(ts, str):
                    raise _PushError(
                        400,
                        self._stream_error(
                            raw,
                            index,
                            "unmarshalerDecoder: Value looks like Number/Boolean/None, but can't find its end: "
                            "',' or '}' symbol",
                        ),
                    )
                try:
                    ts_ns = int(ts)
                except ValueError:
                    raise _PushError(400, self._stream_error(raw, index, "unmarshalerDecoder: Value is number, "
                                                              "but overflowed while parsing")) from None  # fmt: skip
                if not isinstance(line, str):
                    raise _PushError(400, self._stream_error(raw, index, "unmarshalerDecoder: Value is string, "
                                                              "but can't find closing '\"' symbol"))  # fmt: skip
                metadata = value[2] if len(value) == 3 else {}
                if not isinstance(metadata, dict):
                    raise _PushError(400, self._stream_error(raw, index, "unmarshalerDecoder: Malformed object"))
                entries.append((ts_ns, line, {str(k): str(v) for k, v in metadata.items()}))
            decoded.append(({str(k): str(v) for k, v in labels.items()}, entries))
        return decoded

    @staticmethod
    def _stream_error(raw: bytes, index: int, what: str) -> str:
        ends = _stream_ends(raw)
        head = ends[index] if index < len(ends) else len(raw)
        return _jsoniter_error(raw, head, f"loghttp.PushRequest.Streams: []loghttp.LogProtoStream: {what}")

    def _ingest(
        self, streams: Sequence[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]], tenant: str
    ) -> str | None:
        if not streams:
            raise _PushError(422, "error at least one valid stream is required for ingestion")
        prepared: list[tuple[dict[str, str], str, list[tuple[int, str, dict[str, str]]]]] = []
        for labels, entries in streams:
            # Label parsing happens for the whole request first: one bad name and nothing is stored.
            text = _label_string(labels)
            for name in sorted(labels):
                if not _LABEL_NAME_RE.fullmatch(name):
                    bad = next((c for c in name if not (c.isalnum() or c == "_")), name[:1])
                    col = text.index(name) + 1 + name.index(bad)
                    raise _PushError(
                        400, f"couldn't parse labels: 1:{col}: parse error: unexpected character inside braces: '{bad}'"
                    )
            if "service_name" not in labels:
                service = next((labels[n] for n in _SERVICE_LABELS if labels.get(n)), "unknown_service")
                labels = {**labels, "service_name": service}
            prepared.append((labels, _label_string(labels), entries))

        now_ns = int(self.clock() * 1e9)
        too_old_before = now_ns - int(self.max_age_s * 1e9)
        too_new_after = now_ns + int(self.creation_grace_s * 1e9)
        errors: dict[str, int] = {}
        ingester_error: str | None = None
        with self._lock:
            for labels, key, entries in prepared:
                valid: list[tuple[int, str, dict[str, str]]] = []
                for ts_ns, line, metadata in entries:
                    problem = self._validate(key, ts_ns, line, metadata, too_old_before, too_new_after)
                    if problem is not None:
                        errors[problem] = errors.get(problem, 0) + 1
                        continue
                    valid.append((ts_ns, line, metadata))
                if valid:
                    # The ingester answers with its last stream's outcome: an earlier stream's refusals go unsaid.
                    ingester_error = self._append(tenant, labels, key, valid)
        if ingester_error is not None:
            return ingester_error  # the distributor reports the ingester's error, not the validation errors
        if not errors:
            return None
        unique = len(errors)
        return "; ".join(
            f"{n} errors like: {message}" if unique > 1 or n > 1 else message for message, n in errors.items()
        )

    def _validate(
        self, key: str, ts_ns: int, line: str, metadata: Mapping[str, str], too_old_before: int, too_new_after: int
    ) -> str | None:
        if ts_ns < too_old_before:
            return (
                f"entry for stream '{key}' has timestamp too old: {_rfc3339(ts_ns)}, "
                f"oldest acceptable timestamp is: {_rfc3339(too_old_before)}"
            )
        if ts_ns > too_new_after:
            return f"entry for stream '{key}' has timestamp too new: {_rfc3339(ts_ns)}"
        size = len(line.encode())
        if self.max_line_bytes and size > self.max_line_bytes:
            return (
                f"Max entry size '{self.max_line_bytes}' bytes exceeded for stream '{key}' while adding an entry "
                f"with length '{size}' bytes"
            )
        if metadata and not self.allow_structured_metadata:
            return (
                f"stream '{key}' includes structured metadata, but this feature is disallowed. Please see "
                "`limits_config.allow_structured_metadata` or contact your Loki administrator to enable it."
            )
        metadata_size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        if metadata_size > _MAX_METADATA_BYTES:
            return (
                f"stream '{key}' has structured metadata too large: '{metadata_size}' bytes, limit: "
                f"'{_MAX_METADATA_BYTES}' bytes. Please see `limits_config.max_structured_metadata_size` or contact "
                "your Loki administrator to increase it."
            )
        if len(metadata) > _MAX_METADATA_ENTRIES:
            return (
                f"stream '{key}' has too many structured metadata labels: '{len(metadata)}', limit: "
                f"'{_MAX_METADATA_ENTRIES}'. Please see `limits_config.max_structured_metadata_entries_count` or "
                "contact your Loki administrator to increase it."
            )
        return None

    def _append(
        self, tenant: str, labels: dict[str, str], key: str, entries: Sequence[tuple[int, str, dict[str, str]]]
    ) -> str | None:
        stream = self._streams.get((tenant, key))
        if stream is None:
            stream = self._streams[(tenant, key)] = _Stream(tenant=tenant, labels=labels, key=key)
        failed: list[tuple[int, str]] = []
        window = int(self.out_of_order_window_s * 1e9)
        for ts_ns, line, metadata in entries:
            if stream.last == (ts_ns, line):
                self.duplicates_ignored += 1
                continue
            if stream.highest is not None and ts_ns < stream.highest - window:
                cutoff = stream.highest - window
                failed.append(
                    (
                        ts_ns,
                        f"entry too far behind, entry timestamp is: {_rfc3339(ts_ns)}, "
                        f"oldest acceptable timestamp is: {_rfc3339(cutoff)}",
                    )
                )
                continue
            stream.last = (ts_ns, line)
            stream.highest = ts_ns if stream.highest is None else max(stream.highest, ts_ns)
            if (ts_ns, line) in stream.seen:
                self.duplicates_ignored += 1  # the head block keeps one line per (time, content)
                continue
            stream.seen.add((ts_ns, line))
            level = _detect_level(labels, metadata, line)
            stream.entries.append(StoredEntry(tenant, labels, ts_ns, line, {**metadata, "detected_level": level}))
        if not failed:
            return None
        shown = "".join(
            f"entry with timestamp {_go_time(ts)} ignored, reason: '{reason}',\n"
            for ts, reason in failed[:_MAX_RETURNED_ERRORS]
        )
        return f"{shown}user '{tenant}', total ignored: {len(failed)} out of {len(entries)} for stream: {key}"

    # -- queries ---------------------------------------------------------------------------------------------
    def stored(
        self, tenant: str, selects: Callable[[Mapping[str, str]], bool], start_ns: int, end_ns: int
    ) -> list[tuple[dict[str, str], dict[str, str], int, str]]:
        """(labels, structured metadata, ts in ns, line) of the tenant's entries in [start, end) of the streams
        `selects` accepts, oldest first: what a query engine (`query_engine`) reads."""
        with self._lock:
            chosen = [s for s in self._streams.values() if s.tenant == tenant and selects(s.labels)]
            picked = [(s, e) for s in chosen for e in s.entries if start_ns <= e.ts_ns < end_ns]
        picked.sort(key=lambda se: se[1].ts_ns)
        return [(dict(s.labels), dict(e.metadata), e.ts_ns, e.line) for s, e in picked]

    def _window(self, params: Mapping[str, str]) -> tuple[int, int]:
        now_ns = int(self.clock() * 1e9)
        end = _parse_time(params.get("end"), now_ns)
        return _parse_time(params.get("start"), end - 6 * 3600 * 1_000_000_000), end

    def _active(self, tenant: str, start: int, end: int) -> Iterable[_Stream]:
        with self._lock:
            streams = list(self._streams.values())
        return [s for s in streams if s.tenant == tenant and any(start <= e.ts_ns <= end for e in s.entries)]

    def _labels(self, params: Mapping[str, str], tenant: str) -> list[str]:
        start, end = self._window(params)
        return sorted({name for s in self._active(tenant, start, end) for name in s.labels})

    def _label_values(self, name: str, params: Mapping[str, str], tenant: str) -> list[str]:
        start, end = self._window(params)
        return sorted({s.labels[name] for s in self._active(tenant, start, end) if name in s.labels})

    def _series(self, matches: Sequence[str], params: Mapping[str, str], tenant: str) -> list[dict[str, str]]:
        start, end = self._window(params)
        selectors = [parse_stream_selector(m) for m in matches]
        return [
            dict(s.labels)
            for s in self._active(tenant, start, end)
            if not selectors or any(selects(s.labels) for selects in selectors)
        ]

    # -- a real server -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run the double as an HTTP server on 127.0.0.1 (a free port); yields its base URL."""
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = httpx.Request(
                    self.command,
                    f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}",
                    headers=list(self.headers.items()),
                    content=body,
                )
                with double._lock:
                    fault = double._faults[0] if double._faults else None
                    if fault is not None and fault.kind in ("connect", "timeout", "slow"):
                        double._faults.pop(0)
                        double.requests.append(request)
                if fault is not None and fault.kind == "connect":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault is not None and fault.kind in ("timeout", "slow"):
                    if fault.kind == "timeout" and fault.stored:
                        double._route(request)
                    double._sleep(fault.seconds)
                    response = double._route(request) if fault.kind == "slow" else httpx.Response(504)
                else:
                    try:
                        response = double.handle(request)
                    except httpx.TransportError:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = _handle  # noqa: N815 - the stdlib's naming

        with serving(Handler, name="recorded-loki") as url:
            yield url
