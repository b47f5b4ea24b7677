"""The running pipeline of one process: the event log, the tracker, and the projections fed from the log."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Final, Literal

import httpx
import structlog

from querylog import __version__
from querylog.config import Settings
from querylog.housekeeping import Housekeeper, LogCollector, load_totals
from querylog.logging.events import AnyEvent
from querylog.logging.forget import ForgetList
from querylog.logging.loki import LokiOptions, LokiSink
from querylog.logging.metrics import MetricsProjection
from querylog.logging.metrics_snapshot import read_published_fold
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import CheckpointFile, Projector, Sink, SinkError
from querylog.logging.redaction import Redactor
from querylog.logging.segments import Checkpoint, EventLog, LogReader
from querylog.logging.sinks import MetricsSink, StdoutSink, stdout_style
from querylog.logging.structured import configure_structlog
from querylog.logging.telemetry import FileTelemetry, TelemetrySnapshot
from querylog.logging.time_order import TimeOrderedReader
from querylog.logging.tracker import QueryTracker
from querylog.projector_process import ProjectorProcess, telemetry_path

__all__ = [
    "Runtime",
    "echo_from_now",
    "elected_names",
    "elected_projectors",
    "loki_options",
    "loki_projector",
    "loki_sink",
    "make_redactor",
    "metrics_projection",
    "metrics_projector",
]

_log = structlog.get_logger("querylog.runtime")


def make_redactor(settings: Settings) -> Redactor:
    return Redactor(extra_patterns=settings.redact_extra or None, user_id_salt=settings.user_id_salt)


#: Why the service does not start while `querylog replay parquet` holds the data directory's lock exclusively.
REBUILD_RUNNING: Final = (
    "a lake rebuild (querylog replay parquet) is running on this data directory: start the service once it ends "
    "(it shows its progress)"
)


def rebuild_running(settings: Settings) -> bool:
    """Whether a lake rebuild holds this data directory (its service lock, exclusively) now."""
    try:
        with settings.service_lock_path.open("rb") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:  # none yet, or one it cannot open: start-up says what is wrong with it
        return False
    return False


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
            # What the chat API's queries and their feedback are compared by: QUERYLOG_RELEASE when the deployment
            # names one, else the version of the code answering (the same value Langfuse traces carry).
            release=settings.release or __version__,
            prompt_version=settings.prompt_version,
            capture_answers=settings.capture_answers,
        )
        self.metrics = metrics_projection(settings)
        self.metrics.add_sink(self.log.telemetry)
        self.projectors: dict[str, Projector] = {}
        #: The counters of the projections another process runs, as it publishes them.
        self.published: dict[str, FileTelemetry] = {}
        self._with_projections = projections
        #: Where the elected projections run (`Settings.projections`); "none" without projections at all.
        self.mode = settings.projections if projections else "none"
        self.projector_process: ProjectorProcess | None = None
        #: Log trimming and retention, run where the elected projections run (here in thread mode).
        self.housekeeper: Housekeeper | None = None
        self.metrics.add_collector(LogCollector(settings, settings.metrics_namespace))
        self._service_lock: IO[bytes] | None = None
        self._started = False

    def build_projectors(self) -> dict[str, Projector]:
        """The projections this process runs. ``QUERYLOG_PROJECTIONS=thread``: all of them, the metrics fold
        included. ``process``: none; the child runs them all and /metrics shows the fold it publishes. ``none``:
        the metrics fold only (a `querylog project` elsewhere runs the rest). Counters of a projection another
        process runs are read from the files it publishes."""
        s = self.settings
        projectors = elected_projectors(s, self.reader) if self.mode == "thread" else {}
        if self.mode == "process":
            path = s.metrics_exposition_path
            self.metrics.mirror(lambda: read_published_fold(path))
        else:
            # Not elected: each process folds the whole log, so every worker's /metrics has the full totals. It
            # publishes too: a restart in process mode then shows these totals, never an older run's.
            projectors["metrics"] = metrics_projector(s, self.reader, self.metrics, elected=False, publish="snapshot")
        for projector in projectors.values():  # the metrics fold's own too: a corrupt line it skipped is counted
            self.metrics.add_sink(projector.telemetry)
        if self.mode != "thread":
            for name in [*elected_names(s), *(["metrics"] if self.mode == "process" else [])]:
                self.published[name] = FileTelemetry(name, telemetry_path(s, name))
                self.metrics.add_sink(self.published[name])
        return projectors

    def projection_snapshots(self) -> dict[str, tuple[bool, TelemetrySnapshot]]:
        """Each projection's counters wherever it runs, and whether this process leads it: those it runs as they
        are now, those another process runs (``QUERYLOG_PROJECTIONS=process`` or ``none``) as it last published
        them (within a second while it runs)."""
        out = {name: (p.leading, p.telemetry.snapshot()) for name, p in self.projectors.items()}
        for name, telemetry in self.published.items():
            out[name] = (False, telemetry.snapshot())
        return out

    def start(self) -> Runtime:
        if self._started:
            raise RuntimeError("Runtime already started")
        configure_structlog(console=stdout_style(self.settings.stdout_format) == "console")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        from querylog.erase import note_user_id_salt

        note_user_id_salt(self.settings)  # an erasure by a raw user id then knows it needs the salt
        # Shared by every worker, for as long as it runs: a rebuild of the lake sees the service running at once,
        # even before the projector child has taken the Parquet projection's lock.
        lock = self.settings.service_lock_path
        lock.parent.mkdir(parents=True, exist_ok=True)
        self._service_lock = lock.open("ab")
        try:
            fcntl.flock(self._service_lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # waiting would hang start-up, deaf to signals, for as long as the rebuild runs
            self._service_lock.close()
            self._service_lock = None
            raise RuntimeError(REBUILD_RUNNING) from None
        # From here a failure (the log's disk, a projection's settings, the child process) undoes what started
        # (threads, the lock, the child), so that neither this process nor a lake rebuild (`querylog replay
        # parquet`, which needs the lock exclusively) finds them behind.
        self._started = True
        try:
            self.log.open()
            if self._with_projections:
                self.projectors = self.build_projectors()
                for projector in self.projectors.values():
                    projector.start()
                if self.mode == "process":
                    echo_from_now(self.settings, self.reader)
                    self.projector_process = ProjectorProcess(self.settings, drain_timeout_s=10.0).start()
                if self.mode == "thread":
                    self.housekeeper = Housekeeper(self.settings, before_trim=snapshot_hook(self.projectors)).start()
        except BaseException:
            self.close(drain_timeout_s=None)
            raise
        _log.info(
            "querylog_started",
            home=str(self.settings.home),
            env=self.settings.env,
            projections=sorted({*self.projectors, *self.published}),
            projections_mode=self.mode,
            projector_process=self.projector_process.pid if self.projector_process else None,
        )
        return self

    def close(self, *, drain_timeout_s: float | None = 10.0) -> None:
        """Flush the log, let each projection catch up (bounded; not at all with None), and stop."""
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
        if self._service_lock is not None:
            self._service_lock.close()  # and with it the lock
            self._service_lock = None
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


def metrics_projection(settings: Settings) -> MetricsProjection:
    return MetricsProjection(settings.metrics_namespace, prices=settings.prices(), names=settings.company_names())


def metrics_projector(
    settings: Settings,
    reader: LogReader,
    projection: MetricsProjection,
    *,
    elected: bool,
    publish: Literal["batch", "snapshot"] | None = None,
) -> Projector:
    """The metrics fold of `projection`, from the newest snapshot of it (a restart folds only what came after).
    Elected when one process folds for all (the projector process of ``QUERYLOG_PROJECTIONS=process``), which
    `publish`es the fold after each batch for the API's /metrics; the other modes' folds publish it with each
    snapshot, so that a restart into process mode never shows an older run's totals."""
    s = settings
    sink = MetricsSink(
        projection,
        snapshot_path=s.metrics_snapshot_path,
        log_dir=s.log_dir,
        snapshot_every_s=s.metrics_snapshot_interval_s,
        exposition_path=s.metrics_exposition_path if publish else None,
        publish_each_batch=publish == "batch",
        forget=ForgetList(s.metrics_forget_path),
        history=lambda: trimmed_history(s),
        erased=lambda: erased_before(s),
        forced_trim_at=lambda: load_totals(s).forced_at.get("metrics"),
    )
    return _projector(s, reader, sink.open(), interval_s=0.5, elected=elected)


def erased_before(settings: Settings) -> bool:
    """Whether `querylog erase` ever blanked events in this data directory's log (its audit file says so)."""
    from querylog.erase import AUDIT  # erase builds on this module

    return (settings.state_dir / AUDIT).exists()


def trimmed_history(settings: Settings) -> tuple[Checkpoint, Iterable[Sequence[AnyEvent]]] | None:
    """The events the log no longer holds, once housekeeping has trimmed it: the lake's, with the log position the
    lake's commit reaches (a fold from them goes on from there). None when the log was never trimmed (it holds every
    event) or the lake cannot say how far it reaches."""
    from querylog.lake_events import lake_events

    if load_totals(settings).trimmed_segments == 0:
        return None
    try:
        checkpoint = ParquetSink.committed_checkpoint(settings.lake_dir)
    except SinkError:
        return None
    return (checkpoint, lake_events(settings.lake_dir)) if checkpoint else None


def snapshot_hook(projectors: dict[str, Projector]) -> Callable[[], object] | None:
    """What housekeeping calls before it trims: the metrics fold of this process, if it runs one, writing its
    snapshot (`MetricsSink.snapshot_if_moved`)."""
    metrics = projectors.get("metrics")
    sink = metrics.sink if metrics is not None else None
    return sink.snapshot_if_moved if isinstance(sink, MetricsSink) else None


def elected_names(settings: Settings) -> list[str]:
    """The projections one process per data directory runs, elected by file lock."""
    return ["parquet", *(["stdout"] if settings.stdout_events else []), *(["loki"] if settings.loki_url else [])]


def echo_from_now(settings: Settings, reader: LogReader) -> None:
    """Start the stdout echo at the log's end, the first time: replaying months of history into a terminal helps
    nobody. The API process does it before it serves, so a projector child that starts later echoes it all."""
    checkpoint = settings.stdout_checkpoint_path
    if settings.stdout_events and not checkpoint.exists():
        CheckpointFile(checkpoint).save(reader.end_checkpoint())


def elected_projectors(settings: Settings, reader: LogReader) -> dict[str, Projector]:
    """Parquet, stdout (when on) and Loki (when configured), each elected by its lock file, not started."""
    s = settings
    from querylog.rebuild import LakeAsideError, settle_interrupted_swap

    # Before the sink opens the lake: it would make an empty one where a stopped rebuild left the live one aside.
    try:
        settled = settle_interrupted_swap(s, leftovers=False)  # a `project` beside a rebuild: leave its copy be
    except LakeAsideError as exc:
        raise SinkError(str(exc)) from None  # as a commit record it cannot read: the command exits 2, saying why
    if settled is not None:
        _log.warning("lake_rebuild_settled", action=settled)
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
        echo_from_now(s, reader)
        # Elected like the other projections: with several workers, one prints every event (at least once: a
        # printer killed before it saved its checkpoint leaves the last lines to be printed again).
        sink = StdoutSink(s.stdout_checkpoint_path, style=stdout_style(s.stdout_format))
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
    from querylog.erase import note_loki_labels

    note_loki_labels(settings)  # what an erasure's delete requests will select
    return LokiSink(
        settings.loki_url,
        app=settings.service,
        env=settings.env,
        checkpoint_path=settings.loki_checkpoint_path if live else None,
        dead_letter_dir=settings.loki_dead_letter_dir,
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
