"""Settings from ``QUERYLOG_*`` environment variables, validated at start with messages that say what to do."""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from querylog.logging.pricing import PriceTable
    from querylog.logging.reformulation import Names

__all__ = ["PROJECTION_MODES", "ConfigError", "Settings", "describe_settings", "duration_seconds"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PROM_NS_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Where `querylog serve` runs the projections: in a child process it starts and watches (at a lower CPU
#: priority; the default), as threads of the API process, or not at all (a separate `querylog project` runs them).
PROJECTION_MODES: Final = ("thread", "process", "none")
STDOUT_FORMATS: Final = ("auto", "json", "console")


class ConfigError(ValueError):
    """A setting has a value querylog cannot use. The message names the variable and what it accepts."""


def alias_setting(raw: str) -> str:
    """A QUERYLOG_ALIASES (or ``search --aliases``) value as it is kept: ``off`` and ``starter`` in any case (OFF is
    off, not a file named OFF), anything else a path as given."""
    return raw.lower() if raw.lower() in ("off", "starter") else raw


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off); got {raw!r}")


_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


#: The longest retention a setting takes: a century. Longer is "keep everything", which is what leaving it unset
#: says; dates further back than this run out of calendar in places (year 1).
_CENTURY_S: Final = 100 * 365 * 86_400
#: The longest interval or age a setting takes (a segment's age, a flush or snapshot interval): 30 days.
_MONTH_S: Final = 30 * 86_400


def duration_seconds(name: str, raw: str) -> float:
    """``0s``, ``90m``, ``24h``, ``7d``, ``2w`` (at most a century) in seconds; `ConfigError` naming `name`
    otherwise."""
    match = _DURATION_RE.match(raw)
    if match is None:
        raise ConfigError(f"{name} must be a duration like 90s, 30m, 24h, 7d or 2w; got {raw!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > _CENTURY_S:
        raise ConfigError(f"{name} must be at most 100 years (unset it to keep everything); got {raw!r}")
    return seconds


def _loki_url(raw: str) -> str:
    """LOKI_URL as the sink posts to it (no trailing slash): Loki's base URL, refused with the reason otherwise."""
    from querylog.logging.redaction import shown_url

    name, shown = "LOKI_URL / QUERYLOG_LOKI_URL", shown_url(raw)
    bad = re.search(r"[\x00-\x20\x7f]", raw)
    if bad is not None:
        raise ConfigError(
            f"{name} holds {bad.group()!r} at position {bad.start()} (a .env saved with Windows line ends?); "
            f"got {shown!r}"
        )
    if not re.match(r"^https?://[^/]+", raw):
        raise ConfigError(f"{name} must be an http(s) URL like http://127.0.0.1:3100; got {shown!r}")
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018 - raises on a port that is no number or out of range
    except ValueError as exc:
        why = "its host or port does not parse" if shown != raw else str(exc)  # urllib's words may quote a password
        raise ConfigError(
            f"{name} is not a URL ({why}; a password holding /, ?, # or @ is written percent-encoded); got {shown!r}"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"{name} names no host; got {shown!r}")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ConfigError(f"{name} is Loki's base URL, without a query or fragment; got {shown!r}")
    if parts.path.rstrip("/").endswith("/loki/api/v1/push"):
        raise ConfigError(
            f"{name} is Loki's base URL (like http://127.0.0.1:3100), not its push endpoint: querylog adds "
            f"/loki/api/v1/push; got {shown!r}"
        )
    return raw.rstrip("/")


def _number(name: str, raw: str, *, minimum: float, maximum: float, integer: bool = False) -> float:
    def show(x: float) -> str:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"

    wanted = f"{name} must be {'a whole number' if integer else 'a number'} from {show(minimum)} to {show(maximum)}"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{wanted}; got {raw!r}") from None
    if not minimum <= value <= maximum:  # nan and inf too
        raise ConfigError(f"{wanted}; got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything querylog reads from the environment. `Settings.from_env()` validates it all at once."""

    home: Path = field(
        default=Path(".querylog"), metadata={"env": "QUERYLOG_HOME", "doc": "data directory (log, lake, checkpoints)"}
    )
    env: str = field(default="dev", metadata={"env": "QUERYLOG_ENV", "doc": "deployment name; the Loki `env` label"})
    service: str = field(
        default="querylog", metadata={"env": "QUERYLOG_SERVICE", "doc": "service name; the Loki `app` label"}
    )
    fsync: str = field(
        default="interval",
        metadata={
            "env": "QUERYLOG_FSYNC",
            "doc": "always, interval or never: when the log fsyncs (machine-crash safety)",
        },
    )
    fsync_interval_s: float = field(
        default=1.0, metadata={"env": "QUERYLOG_FSYNC_INTERVAL_S", "doc": "seconds between fsyncs under `interval`"}
    )
    segment_max_mb: int = field(
        default=64, metadata={"env": "QUERYLOG_SEGMENT_MAX_MB", "doc": "a log segment rolls past this size"}
    )
    segment_max_age_s: float = field(
        default=3600.0, metadata={"env": "QUERYLOG_SEGMENT_MAX_AGE_S", "doc": "a log segment rolls past this age"}
    )
    parquet_interval_s: float = field(
        default=1.0,
        metadata={
            "env": "QUERYLOG_PARQUET_INTERVAL_S",
            "doc": "longest wait of the Parquet projection between batches; a new event wakes it sooner",
        },
    )
    parquet_batch_events: int = field(
        default=100_000, metadata={"env": "QUERYLOG_PARQUET_BATCH_EVENTS", "doc": "most events in one Parquet batch"}
    )
    stdout_events: bool = field(
        default=True,
        metadata={"env": "QUERYLOG_STDOUT_EVENTS", "doc": "echo what the log receives on stdout (structlog)"},
    )
    stdout_format: str = field(
        default="auto",
        metadata={
            "env": "QUERYLOG_STDOUT_FORMAT",
            "doc": "auto, json or console: the stdout echo as one JSON line per event (json), or one short line per "
            "query for a person (console); auto picks console on a terminal and json when piped or in a container",
        },
    )
    loki_url: str | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_LOKI_URL",
            "doc": "Loki base URL (http://127.0.0.1:3100, or a gateway's with its path prefix), not the push "
            "endpoint (querylog adds /loki/api/v1/push); no query, whitespace or control character (a .env with "
            "Windows line ends is refused); also read from LOKI_URL. Unset: no Loki projection",
        },
    )
    loki_tenant: str | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_LOKI_TENANT",
            "doc": "Loki tenant, sent as X-Scope-OrgID: one word (the token, user and password, like it, take no "
            "control character)",
        },
    )
    loki_username: str | None = field(
        default=None, metadata={"env": "QUERYLOG_LOKI_USERNAME", "doc": "Loki basic-auth user (with the password)"}
    )
    loki_password: str | None = field(
        default=None, metadata={"env": "QUERYLOG_LOKI_PASSWORD", "doc": "Loki basic-auth password"}
    )
    loki_token: str | None = field(
        default=None, metadata={"env": "QUERYLOG_LOKI_TOKEN", "doc": "Loki bearer token (instead of basic auth)"}
    )
    loki_ca_file: Path | None = field(
        default=None, metadata={"env": "QUERYLOG_LOKI_CA_FILE", "doc": "CA bundle (PEM) that signs Loki's TLS cert"}
    )
    loki_insecure_skip_verify: bool = field(
        default=False,
        metadata={"env": "QUERYLOG_LOKI_INSECURE_SKIP_VERIFY", "doc": "skip Loki TLS verification (tests only)"},
    )
    loki_batch_kb: int = field(
        default=1024, metadata={"env": "QUERYLOG_LOKI_BATCH_KB", "doc": "largest Loki push, KiB of JSON before gzip"}
    )
    loki_batch_wait_s: float = field(
        default=1.0, metadata={"env": "QUERYLOG_LOKI_BATCH_WAIT_S", "doc": "seconds between Loki pushes when idle"}
    )
    metrics_namespace: str = field(
        default="querylog",
        metadata={
            "env": "QUERYLOG_METRICS_NAMESPACE",
            "doc": "prefix of the Prometheus metric names (the bundled dashboards, recording rules and alerts name "
            "querylog_*: keep the default with them)",
        },
    )
    retention: str | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_RETENTION",
            "doc": "how long events are kept anywhere (lake, search index, log): 90d, 12w, 36h; unset keeps them. "
            "The lake and the search index drop whole days, once all of a day is older than it rounded up to days "
            "(36h: 2 days)",
        },
    )
    retention_days: int | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_RETENTION_DAYS",
            "doc": "lake and search-index retention in days, overriding QUERYLOG_RETENTION for them",
        },
    )
    log_retention: str = field(
        default="7d",
        metadata={
            "env": "QUERYLOG_LOG_RETENTION",
            "doc": "a log segment is deleted this long after its last write, once every durable projection has it "
            "(0s, 24h, 7d; never longer than QUERYLOG_RETENTION)",
        },
    )
    auto_compact: bool = field(
        default=True,
        metadata={
            "env": "QUERYLOG_AUTO_COMPACT",
            "doc": "merge the lake's hours that closed over five minutes ago at each housekeeping round of the "
            "running service (as `querylog compact --no-days`); off leaves the lake to `querylog compact`",
        },
    )
    housekeeping_interval_s: float = field(
        default=60.0,
        metadata={
            "env": "QUERYLOG_HOUSEKEEPING_INTERVAL_S",
            "doc": "seconds between two rounds of log trimming and lake/search retention in the running service",
        },
    )
    metrics_snapshot_interval_s: float = field(
        default=30.0,
        metadata={
            "env": "QUERYLOG_METRICS_SNAPSHOT_INTERVAL_S",
            "doc": "seconds between two snapshots of the metrics fold (a restart folds only what came after one)",
        },
    )
    log_max_gb: float | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_LOG_MAX_GB",
            "doc": "cap on the log's size: past it, segments the lake has are deleted whatever their age",
        },
    )
    ingest_token: str | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_INGEST_TOKEN",
            "doc": "bearer token required by POST /v1/events and /v1/traces when set (/v1/chat and /v1/feedback "
            "stay open: they are the chat API itself)",
        },
    )
    ingest_max_bytes: int = field(
        # The OpenTelemetry Collector's OTLP/HTTP receiver takes 20 MiB: an SDK's batch of 512 spans with prompts
        # captured (RAG context, Korean at 3 bytes a character) passes 5 MiB, and an exporter never retries a 413.
        default=20 * 1024 * 1024,
        metadata={
            "env": "QUERYLOG_INGEST_MAX_BYTES",
            "doc": "largest POST /v1/events or /v1/traces body in bytes (413 above it)",
        },
    )
    ingest_inflight_max_bytes: int = field(
        # A batch's objects weigh several times its JSON: three 20 MiB batches at once stay within a few hundred MB.
        default=64 * 1024 * 1024,
        metadata={
            "env": "QUERYLOG_INGEST_INFLIGHT_MAX_BYTES",
            "doc": "bodies POST /v1/events and /v1/traces read at once, in bytes (a gzip one counts ten times its "
            "length until inflated, then its size; a chunked one QUERYLOG_INGEST_MAX_BYTES); a request past it is "
            "answered 503, retry in a second. One request alone always fits",
        },
    )
    ingest_max_events: int = field(
        default=10_000,
        metadata={"env": "QUERYLOG_INGEST_MAX_EVENTS", "doc": "most events in a POST /v1/events batch (413 above)"},
    )
    ingest_dedup_window: int = field(
        default=100_000,
        metadata={
            "env": "QUERYLOG_INGEST_DEDUP_WINDOW",
            "doc": "event ids remembered to make re-sent POST /v1/events batches add nothing",
        },
    )
    redact_extra: dict[str, str] = field(
        default_factory=dict,
        metadata={"env": "QUERYLOG_REDACT_EXTRA", "doc": "extra redaction patterns, a JSON object name→regex"},
    )
    user_id_salt: str | None = field(
        default=None, metadata={"env": "QUERYLOG_USER_ID_SALT", "doc": "when set, user ids are stored as salted hashes"}
    )
    release: str | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_RELEASE",
            "doc": "the service's release (e.g. a version or git sha), carried by every event to compare releases; "
            "unset, the demo API uses querylog's version",
        },
    )
    prompt_version: str | None = field(
        default=None,
        metadata={"env": "QUERYLOG_PROMPT_VERSION", "doc": "the prompt version every event carries, for A/B views"},
    )
    capture_answers: bool = field(
        default=True,
        metadata={
            "env": "QUERYLOG_CAPTURE_ANSWERS",
            "doc": "keep each answer's text in its response_generated event (and in its Langfuse trace); off keeps "
            "only its length",
        },
    )
    prices_file: Path | None = field(
        default=None,
        metadata={
            "env": "QUERYLOG_PRICES",
            "doc": "the path of a price table file (JSON, the shape of the bundled one) that replaces the bundled "
            "model prices",
        },
    )
    aliases: str = field(
        default="starter",
        metadata={
            "env": "QUERYLOG_ALIASES",
            "doc": "company names for search (an alias CSV, docs/search.md): starter (the bundled KOSPI/KOSDAQ and "
            "US listing), off, or a file's path; commands and the metrics fold read it when they start, the explorer "
            "whenever it changes",
        },
    )
    projections: str = field(
        default="process",
        metadata={
            "env": "QUERYLOG_PROJECTIONS",
            "doc": "process, thread or none: where `querylog serve` runs the projections (Parquet, Loki, stdout and "
            "the metrics fold): a child process, threads of the API process, or elsewhere (`querylog project`)",
        },
    )

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    def company_names(self, *, strict: bool = False) -> Names | None:
        """The alias file's companies as the reformulation rule reads them (logging/reformulation.py); None when
        QUERYLOG_ALIASES is off, or when the file cannot be read: that is logged (`aliases_refused`), and
        reformulations then compare characters only. `strict` (a command a person runs, whose numbers would
        change): a file that cannot be read is a `ConfigError` instead."""
        path = self.aliases_path
        if path is None:
            return None
        import structlog

        from querylog.analytics.aliases import AliasError, load_aliases
        from querylog.logging.reformulation import Names

        try:
            aliases = load_aliases(path)
        except (AliasError, OSError) as exc:
            if strict:
                raise ConfigError(
                    f"QUERYLOG_ALIASES: the alias file cannot be used: {exc} (`querylog aliases` checks it; "
                    "QUERYLOG_ALIASES=off goes without)"
                ) from None
            structlog.get_logger("querylog.search").warning(
                "aliases_refused", path=str(path), reason=str(exc), kept="reformulations compare characters only"
            )
            return None
        return Names(aliases.canonical_by_key())

    @property
    def aliases_path(self) -> Path | None:
        """The alias file search uses: the bundled starter listing, none (``off``), or the named file."""
        if self.aliases == "off":
            return None
        if self.aliases == "starter":
            from querylog.analytics.aliases import STARTER

            return STARTER
        return Path(self.aliases).expanduser()

    @property
    def metrics_forget_path(self) -> Path:
        """The queries an erase removed, for the metrics folds running meanwhile (logging/forget.py)."""
        return self.state_dir / "metrics-forget.jsonl"

    @property
    def loki_dead_letter_dir(self) -> Path:
        """The pushes Loki refused for a reason the sink cannot fix, kept to post again (docs/loki.md)."""
        return self.state_dir / "loki-dead-letter"

    @property
    def loki_checkpoint_path(self) -> Path:
        """How far the Loki projection has shipped the log (there once this home has shipped to Loki)."""
        return self.state_dir / "checkpoints" / "loki.json"

    @property
    def stdout_checkpoint_path(self) -> Path:
        """How far the stdout echo has printed the log."""
        return self.state_dir / "checkpoints" / "stdout.json"

    @property
    def metrics_snapshot_path(self) -> Path:
        """The metrics fold's snapshot (logging/metrics_snapshot.py)."""
        return self.state_dir / "metrics-snapshot.json"

    @property
    def service_lock_path(self) -> Path:
        """Held (shared) by every running `Runtime` on this data directory: what must be stopped shows as taken."""
        return self.state_dir / "locks" / "service.lock"

    @property
    def metrics_exposition_path(self) -> Path:
        """The metrics fold as the projector process publishes it for the API's /metrics (Prometheus text)."""
        return self.state_dir / "metrics-fold.prom"

    @property
    def lake_retention_days(self) -> int | None:
        """Days the lake and the search index keep: QUERYLOG_RETENTION_DAYS, else QUERYLOG_RETENTION rounded up
        to whole days (the lake drops whole UTC days), else None (keep everything)."""
        if self.retention_days is not None:
            return self.retention_days
        if self.retention is None:
            return None
        return max(1, math.ceil(duration_seconds("QUERYLOG_RETENTION", self.retention) / 86_400))

    @property
    def log_retention_s(self) -> float:
        """Seconds a projected log segment is kept: QUERYLOG_LOG_RETENTION, capped by QUERYLOG_RETENTION."""
        seconds = duration_seconds("QUERYLOG_LOG_RETENTION", self.log_retention)
        if self.retention is not None:
            seconds = min(seconds, duration_seconds("QUERYLOG_RETENTION", self.retention))
        return seconds

    @property
    def log_max_bytes(self) -> int | None:
        return None if self.log_max_gb is None else int(self.log_max_gb * 1024**3)

    def prices(self) -> PriceTable:
        """The price table in force: `prices_file`, or the bundled one."""
        from querylog.logging.pricing import DEFAULT_PRICES, PriceTable

        return DEFAULT_PRICES if self.prices_file is None else PriceTable.load(self.prices_file)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
    ) -> Settings:
        """Read and validate every ``QUERYLOG_*`` variable; raise one `ConfigError` naming the bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def get(name: str) -> str | None:
            raw = env.get(name)
            return raw if raw not in (None, "") else None

        if (raw := get("QUERYLOG_HOME")) is not None:
            values["home"] = Path(raw).expanduser()
        for key, var in (("env", "QUERYLOG_ENV"), ("service", "QUERYLOG_SERVICE")):
            if (raw := get(var)) is not None:
                if not _NAME_RE.match(raw):
                    raise ConfigError(
                        f"{var} must be 1-63 letters, digits, '_', '.' or '-' (it becomes a Loki label); got {raw!r}"
                    )
                values[key] = raw
        if (raw := get("QUERYLOG_FSYNC")) is not None:
            if raw not in ("always", "interval", "never"):
                raise ConfigError(f"QUERYLOG_FSYNC must be always, interval or never; got {raw!r}")
            values["fsync"] = raw
        for key, var, minimum, maximum, integer in (
            ("fsync_interval_s", "QUERYLOG_FSYNC_INTERVAL_S", 0.01, _MONTH_S, False),
            ("segment_max_mb", "QUERYLOG_SEGMENT_MAX_MB", 1, 1 << 20, True),
            ("segment_max_age_s", "QUERYLOG_SEGMENT_MAX_AGE_S", 1, _MONTH_S, False),
            ("parquet_interval_s", "QUERYLOG_PARQUET_INTERVAL_S", 0.05, _MONTH_S, False),
            ("parquet_batch_events", "QUERYLOG_PARQUET_BATCH_EVENTS", 1, 100_000_000, True),
            ("retention_days", "QUERYLOG_RETENTION_DAYS", 1, _CENTURY_S // 86_400, True),
            ("housekeeping_interval_s", "QUERYLOG_HOUSEKEEPING_INTERVAL_S", 0.1, _MONTH_S, False),
            ("metrics_snapshot_interval_s", "QUERYLOG_METRICS_SNAPSHOT_INTERVAL_S", 0.1, _MONTH_S, False),
            ("ingest_max_bytes", "QUERYLOG_INGEST_MAX_BYTES", 1024, 1 << 30, True),
            ("ingest_inflight_max_bytes", "QUERYLOG_INGEST_INFLIGHT_MAX_BYTES", 1024, 1 << 40, True),
            ("ingest_max_events", "QUERYLOG_INGEST_MAX_EVENTS", 1, 10_000_000, True),
            ("ingest_dedup_window", "QUERYLOG_INGEST_DEDUP_WINDOW", 0, 100_000_000, True),
        ):
            if (raw := get(var)) is not None:
                values[key] = _number(var, raw, minimum=minimum, maximum=maximum, integer=integer)
        for key, var in (("retention", "QUERYLOG_RETENTION"), ("log_retention", "QUERYLOG_LOG_RETENTION")):
            if (raw := get(var)) is not None:
                if key == "retention" and duration_seconds(var, raw) <= 0:
                    raise ConfigError(f"{var} must be longer than 0 (unset it to keep everything); got {raw!r}")
                duration_seconds(var, raw)
                values[key] = raw.strip()
        if (raw := get("QUERYLOG_LOG_MAX_GB")) is not None:
            values["log_max_gb"] = _number("QUERYLOG_LOG_MAX_GB", raw, minimum=0.001, maximum=1_000_000)
        if (raw := get("QUERYLOG_STDOUT_EVENTS")) is not None:
            values["stdout_events"] = _bool("QUERYLOG_STDOUT_EVENTS", raw)
        loki = get("QUERYLOG_LOKI_URL") or get("LOKI_URL")
        if loki is not None:
            values["loki_url"] = _loki_url(loki)
        for key, var in (
            ("loki_tenant", "QUERYLOG_LOKI_TENANT"),
            ("loki_username", "QUERYLOG_LOKI_USERNAME"),
            ("loki_password", "QUERYLOG_LOKI_PASSWORD"),
            ("loki_token", "QUERYLOG_LOKI_TOKEN"),
            ("ingest_token", "QUERYLOG_INGEST_TOKEN"),
        ):
            if (raw := get(var)) is not None:
                # Sent (or, the ingest token, compared with what is sent) as a header: a control character (a .env
                # saved with Windows line ends) fails each request, and a tenant or a bearer token is one word.
                one_word = key in ("loki_tenant", "ingest_token")
                bad = re.search(r"[\x00-\x20\x7f]" if one_word else r"[\x00-\x1f\x7f]", raw)
                if bad is not None:
                    hint = (
                        "a .env saved with Windows line ends?"
                        if bad.group() == "\r"
                        else "it must be one word"
                        if one_word
                        else "no control character"
                    )
                    raise ConfigError(
                        f"{var} holds {bad.group()!r} at position {bad.start()}: a header cannot carry it ({hint})"
                    )
                values[key] = raw
        if "loki_token" in values and ("loki_username" in values or "loki_password" in values):
            raise ConfigError("QUERYLOG_LOKI_TOKEN and QUERYLOG_LOKI_USERNAME/PASSWORD exclude each other: pick one")
        if ("loki_username" in values) != ("loki_password" in values):
            raise ConfigError("QUERYLOG_LOKI_USERNAME and QUERYLOG_LOKI_PASSWORD go together: set both or neither")
        if (raw := get("QUERYLOG_LOKI_CA_FILE")) is not None:
            path = Path(raw).expanduser()
            if not path.is_file():
                what = "is a directory" if path.is_dir() else "does not exist"
                raise ConfigError(f"QUERYLOG_LOKI_CA_FILE must name a readable PEM file; {raw!r} {what}")
            try:
                ssl.create_default_context(cafile=str(path))  # as the Loki client will, so that a bad one stops here
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"QUERYLOG_LOKI_CA_FILE {raw!r} holds no CA certificate Python's ssl can load (PEM): {exc}"
                ) from None
            values["loki_ca_file"] = path
        if (raw := get("QUERYLOG_LOKI_INSECURE_SKIP_VERIFY")) is not None:
            values["loki_insecure_skip_verify"] = _bool("QUERYLOG_LOKI_INSECURE_SKIP_VERIFY", raw)
        if values.get("loki_insecure_skip_verify") and "loki_ca_file" in values:
            raise ConfigError("QUERYLOG_LOKI_CA_FILE and QUERYLOG_LOKI_INSECURE_SKIP_VERIFY contradict: pick one")
        for key, var, minimum, maximum, integer in (
            ("loki_batch_kb", "QUERYLOG_LOKI_BATCH_KB", 512, 1 << 20, True),
            ("loki_batch_wait_s", "QUERYLOG_LOKI_BATCH_WAIT_S", 0.05, 3_600, False),
        ):
            if (raw := get(var)) is not None:
                values[key] = _number(var, raw, minimum=minimum, maximum=maximum, integer=integer)
        if (raw := get("QUERYLOG_METRICS_NAMESPACE")) is not None:
            if not _PROM_NS_RE.match(raw) or raw.startswith("__"):  # Prometheus keeps names with __ for itself
                raise ConfigError(
                    "QUERYLOG_METRICS_NAMESPACE must match [a-zA-Z_][a-zA-Z0-9_]* (a Prometheus name) and not start "
                    f"with __; got {raw!r}"
                )
            values["metrics_namespace"] = raw
        if (raw := get("QUERYLOG_USER_ID_SALT")) is not None:
            values["user_id_salt"] = raw
        if (raw := get("QUERYLOG_REDACT_EXTRA")) is not None:
            try:
                extra = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"QUERYLOG_REDACT_EXTRA must be a JSON object of name → regex; {exc}") from None
            if not isinstance(extra, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
            ):
                raise ConfigError(
                    'QUERYLOG_REDACT_EXTRA must be a JSON object of name → regex, like {"ORDER": "ORD-\\\\d{8}"}'
                )
            from querylog.logging.redaction import Redactor

            try:
                Redactor(extra_patterns=extra)  # compile them now, so a bad one stops the start, named
            except ValueError as exc:
                raise ConfigError(f"QUERYLOG_REDACT_EXTRA: {exc}") from None
            values["redact_extra"] = extra
        for key, var in (("release", "QUERYLOG_RELEASE"), ("prompt_version", "QUERYLOG_PROMPT_VERSION")):
            if (raw := get(var)) is not None:
                from querylog.logging.events import name_text_problem

                if (why := name_text_problem(raw.strip())) is not None:  # as every event holds it to
                    raise ConfigError(f"{var}: {why}")
                values[key] = raw.strip()
        if (raw := get("QUERYLOG_CAPTURE_ANSWERS")) is not None:
            values["capture_answers"] = _bool("QUERYLOG_CAPTURE_ANSWERS", raw)
        if (raw := get("QUERYLOG_AUTO_COMPACT")) is not None:
            values["auto_compact"] = _bool("QUERYLOG_AUTO_COMPACT", raw)
        if (raw := get("QUERYLOG_PRICES")) is not None:
            from querylog.logging.pricing import PriceTable, PriceTableError

            try:
                PriceTable.load(Path(raw).expanduser())  # read it now, so a bad file stops the start, named
            except PriceTableError as exc:
                raise ConfigError(f"QUERYLOG_PRICES: {exc}") from None
            values["prices_file"] = Path(raw).expanduser()
        if (raw := get("QUERYLOG_ALIASES")) is not None:
            raw = raw.strip() or "starter"
            values["aliases"] = alias_setting(raw)
        if (raw := get("QUERYLOG_STDOUT_FORMAT")) is not None:
            if raw not in STDOUT_FORMATS:
                raise ConfigError(f"QUERYLOG_STDOUT_FORMAT must be auto, json or console; got {raw!r}")
            values["stdout_format"] = raw
        if (raw := get("QUERYLOG_PROJECTIONS")) is not None:
            if raw not in PROJECTION_MODES:
                raise ConfigError(f"QUERYLOG_PROJECTIONS must be thread, process or none; got {raw!r}")
            values["projections"] = raw
        values.update(overrides or {})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """These settings as ``QUERYLOG_*`` variables: `from_env` of the result gives them back (a child process
        started with them sees what this one sees). An unset value is passed as empty, which reads as unset."""
        out: dict[str, str] = {"LOKI_URL": ""}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, dict):
                text = json.dumps(value)
            else:
                text = str(value)
            out[str(f.metadata["env"])] = text
        return out


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting — the source of `docs/configuration.md` and `--help`."""
    rows = []
    for f in fields(Settings):
        default = "{}" if f.name == "redact_extra" else f.default
        rows.append((str(f.metadata["env"]), "" if default is None else str(default), str(f.metadata["doc"])))
    return rows
