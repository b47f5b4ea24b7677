"""The running pipeline of one process: the event log, the tracker, and the projections fed from the log."""

from __future__ import annotations

import httpx
import structlog

from querylog.config import Settings
from querylog.housekeeping import Housekeeper, LogCollector
from querylog.logging.loki import LokiOptions, LokiSink, TimeOrderedReader
from querylog.logging.metrics import MetricsProjection
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import CheckpointFile, Projector, Sink
from querylog.logging.redaction import Redactor
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.sinks import MetricsSink, StdoutSink, stdout_style
from querylog.logging.structured import configure_structlog
from querylog.logging.telemetry import FileTelemetry
from querylog.logging.tracker import QueryTracker
from querylog.projector_process import ProjectorProcess, telemetry_path

__all__ = [
    "Runtime",
    "elected_names",
    "elected_projectors",
    "loki_options",
    "loki_projector",
    "loki_sink",
    "make_redactor",
]

_log = structlog.get_logger("querylog.runtime")


def make_redactor(settings: Settings) -> Redactor:
    return Redactor(extra_patterns=settings.redact_extra or None, user_id_salt=settings.user_id_salt)


class Runtime:
    """Owns the log writer and the projectors. `start()` then `close()`; close drains the projections."""

    def __init__(self, settings: Settings, *, projections: bool = True) -> None:
        self.settings = settings
        self.log = EventLog(
            settings.log_dir,
            segment_max_bytes=settings.segment_max_mb * 1024 * 1024,
            segment_max_age_s=settings.segment_max_age_s,
            fsync=settings.fsync,  # type: ignore[arg-type]  # validated by Settings
            fsync_interval_s=settings.fsync_interval_s,
        )
        self.reader = LogReader(settings.log_dir)
        redactor = make_redactor(settings)
        self.redactor = redactor
        self.tracker = QueryTracker(
            self.log,
            service=settings.service,
            env=settings.env,
            redact=redactor.redact,
            pseudonymize_user_id=redactor.pseudonymize_user_id if settings.user_id_salt else None,
            release=settings.release,
            prompt_version=settings.prompt_version,
            capture_answers=settings.capture_answers,
        )
        self.metrics = MetricsProjection(
            settings.metrics_namespace, prices=settings.prices(), names=settings.company_names()
        )
        self.metrics.add_sink(self.log.telemetry)
        self.projectors: dict[str, Projector] = {}
        self._with_projections = projections
        #: Where the elected projections run (`Settings.projections`); "none" without projections at all.
        self.mode = settings.projections if projections else "none"
        self.projector_process: ProjectorProcess | None = None
        #: Log trimming and retention, run where the elected projections run (here in thread mode).
        self.housekeeper: Housekeeper | None = None
        self.metrics.add_collector(LogCollector(settings, settings.metrics_namespace))
        self._started = False

    def build_projectors(self) -> dict[str, Projector]:
        """The projections this process runs: the metrics fold always; the elected ones (Parquet, stdout, Loki)
        when ``QUERYLOG_PROJECTIONS=thread`` — otherwise their counters are read from the files the process that
        runs them publishes (`querylog project`)."""
        s = self.settings
        projectors = elected_projectors(s, self.reader) if self.mode == "thread" else {}
        # Not elected: each process folds the whole log, so every worker's /metrics has the full totals.
        # It starts from the newest snapshot of the fold, so a restart folds only what came after it.
        metrics_sink = MetricsSink(
            self.metrics,
            snapshot_path=s.metrics_snapshot_path,
            log_dir=s.log_dir,
            snapshot_every_s=s.metrics_snapshot_interval_s,
        )
        projectors["metrics"] = _projector(s, self.reader, metrics_sink.open(), interval_s=0.5, elected=False)
        for name, projector in projectors.items():
            if name != "metrics":
                self.metrics.add_sink(projector.telemetry)
        if self.mode != "thread":
            for name in elected_names(s):
                self.metrics.add_sink(FileTelemetry(name, telemetry_path(s, name)))
        return projectors

    def start(self) -> Runtime:
        if self._started:
            raise RuntimeError("Runtime already started")
        configure_structlog(console=stdout_style(self.settings.stdout_format) == "console")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.log.open()
        if self._with_projections:
            self.projectors = self.build_projectors()
            for projector in self.projectors.values():
                projector.start()
            if self.mode == "process":
                self.projector_process = ProjectorProcess(self.settings, drain_timeout_s=10.0).start()
            if self.mode == "thread":
                self.housekeeper = Housekeeper(self.settings).start()
        self._started = True
        _log.info(
            "querylog_started",
            home=str(self.settings.home),
            env=self.settings.env,
            projections=sorted(self.projectors),
            projector_process=self.projector_process.pid if self.projector_process else None,
        )
        return self

    def close(self, *, drain_timeout_s: float = 10.0) -> None:
        """Flush the log, let each projection catch up (bounded), and stop."""
        if not self._started:
            return
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None
        self.log.close()
        if self.projector_process is not None:
            self.projector_process.request_stop()  # the child drains while this process's projections do
        for name, projector in self.projectors.items():
            projector.stop(drain_timeout_s=drain_timeout_s)
            projector.sink.close()
            _log.info("projection_stopped", projection=name, lag_events=projector.telemetry.snapshot().lag_events)
        if self.projector_process is not None:
            code = self.projector_process.stop()
            _log.info("projector_process_stopped", code=code)
            self.projector_process = None
        self._started = False

    def wake_projections(self) -> None:
        for projector in self.projectors.values():
            projector.wake()

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _projector(
    settings: Settings,
    reader: LogReader,
    sink: Sink,
    *,
    interval_s: float,
    batch_max_events: int = 50_000,
    elected: bool = True,
) -> Projector:
    lock = settings.state_dir / "locks" / f"{sink.name}.lock" if elected else None
    return Projector(reader, sink, lock_path=lock, interval_s=interval_s, batch_max_events=batch_max_events)


def elected_names(settings: Settings) -> list[str]:
    """The projections one process per data directory runs, elected by file lock."""
    return ["parquet", *(["stdout"] if settings.stdout_events else []), *(["loki"] if settings.loki_url else [])]


def elected_projectors(settings: Settings, reader: LogReader) -> dict[str, Projector]:
    """Parquet, stdout (when on) and Loki (when configured), each elected by its lock file, not started."""
    s = settings
    projectors = {
        "parquet": _projector(
            s,
            reader,
            ParquetSink(s.lake_dir, prices=s.prices()).open(),
            interval_s=s.parquet_interval_s,
            batch_max_events=s.parquet_batch_events,
        )
    }
    if s.stdout_events:
        checkpoint = s.stdout_checkpoint_path
        if not checkpoint.exists():
            # Start echoing from now: replaying months of history into a terminal helps nobody.
            CheckpointFile(checkpoint).save(reader.end_checkpoint())
        # Elected like the other projections: with several workers, each event is printed once.
        sink = StdoutSink(checkpoint, style=stdout_style(s.stdout_format))
        projectors["stdout"] = _projector(s, reader, sink.open(), interval_s=0.2)
    if s.loki_url:
        projectors["loki"] = loki_projector(s)
    return projectors


def loki_options(settings: Settings) -> LokiOptions:
    """How to reach Loki (tenant, auth, TLS, push size), as the projection, replay, reconcile and erase do."""
    return LokiOptions(
        tenant=settings.loki_tenant,
        username=settings.loki_username,
        password=settings.loki_password,
        token=settings.loki_token,
        ca_file=settings.loki_ca_file,
        insecure_skip_verify=settings.loki_insecure_skip_verify,
        max_push_bytes=settings.loki_batch_kb * 1024,
    )


def loki_sink(settings: Settings, *, live: bool = True, transport: httpx.BaseTransport | None = None) -> LokiSink:
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
    )


def loki_projector(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> Projector:
    """The live Loki projection: elected by file lock like the others; it reads the writers' segments merged
    in event time order, and reads the next batch ahead while one is in flight."""
    sink = loki_sink(settings, transport=transport)
    sink.open()
    return Projector(
        TimeOrderedReader(settings.log_dir),
        sink,
        lock_path=settings.state_dir / "locks" / "loki.lock",
        interval_s=settings.loki_batch_wait_s,
        batch_max_events=10_000,
        # Batches of about three pushes (a log line is about its Loki entry's size).
        batch_max_bytes=3 * sink.options.max_push_bytes,
        read_ahead=True,
    )
