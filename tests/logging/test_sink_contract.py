"""One contract every sink passes (memory, Parquet, the stdout echo; Loki adds its own subclass)."""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pytest

from querylog.logging.events import QueryCompleted, QueryReceived
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch, Sink, SinkClosedError
from querylog.logging.sinks import MemorySink, StdoutSink


def _batch(n: int, start: int = 0, segment: str = "seg-a.jsonl") -> Batch:
    events = []
    for i in range(start, start + n):
        events.append(QueryReceived(query_id=f"q-{i}", query_text=f"네이버 {i}"))
        events.append(QueryCompleted(query_id=f"q-{i}", latency_ms=float(i)))
    return Batch(events=events, checkpoint={segment: (start + n) * 100})


class SinkContract(ABC):
    """Subclass with `make_sink` (a new sink on the same storage each call) and `stored_ids`."""

    @abstractmethod
    def make_sink(self, tmp_path: Path) -> Sink: ...

    @abstractmethod
    def stored_ids(self, sink: Sink, tmp_path: Path) -> list[str]: ...

    def test_a_new_sink_starts_at_the_beginning(self, tmp_path: Path) -> None:
        with self.make_sink(tmp_path) as sink:
            assert sink.checkpoint() == {}

    def test_write_stores_every_event_and_advances_the_checkpoint(self, tmp_path: Path) -> None:
        batch = _batch(5)
        with self.make_sink(tmp_path) as sink:
            sink.write(batch)
            assert sink.checkpoint() == batch.checkpoint
            assert sorted(self.stored_ids(sink, tmp_path)) == sorted(e.event_id for e in batch.events)
            snap = sink.telemetry.snapshot()
            assert snap.received == snap.sent == len(batch.events)

    def test_an_empty_batch_still_moves_the_checkpoint(self, tmp_path: Path) -> None:
        with self.make_sink(tmp_path) as sink:
            sink.write(Batch(events=[], checkpoint={"seg-a.jsonl": 42}))
            assert sink.checkpoint() == {"seg-a.jsonl": 42}

    def test_use_after_close_is_refused(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path)
        with pytest.raises(SinkClosedError, match="unopened"):
            sink.write(_batch(1))
        sink.open()
        sink.close()
        with pytest.raises(SinkClosedError, match="closed"):
            sink.write(_batch(1))
        with pytest.raises(SinkClosedError):
            sink.open()


class DurableSinkContract(SinkContract):
    """For sinks whose data and checkpoint outlive the process."""

    def test_a_reopened_sink_resumes_from_its_checkpoint(self, tmp_path: Path) -> None:
        first, second = _batch(3), _batch(2, start=3)
        with self.make_sink(tmp_path) as sink:
            sink.write(first)
        with self.make_sink(tmp_path) as sink:
            assert sink.checkpoint() == first.checkpoint
            sink.write(second)
            ids = self.stored_ids(sink, tmp_path)
        assert sorted(ids) == sorted(e.event_id for e in [*first.events, *second.events])


class TestMemorySink(SinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        return MemorySink()

    def stored_ids(self, sink: Sink, tmp_path: Path) -> list[str]:
        assert isinstance(sink, MemorySink)
        return [e.event_id for e in sink.events]


class TestParquetSink(DurableSinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        return ParquetSink(tmp_path / "lake")

    def stored_ids(self, sink: Sink, tmp_path: Path) -> list[str]:
        import pyarrow.parquet as pq

        assert isinstance(sink, ParquetSink)
        return [i for f in sink.files() for i in pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist()]


class TestStdoutSink(DurableSinkContract):
    """The JSON echo: what it "stores" is what it printed, kept across sinks of the same test (the same stdout)."""

    def make_sink(self, tmp_path: Path) -> Sink:
        out = self._printed.setdefault(tmp_path, io.BytesIO())
        return StdoutSink(tmp_path / "stdout.json", style="json", stream=out)  # type: ignore[arg-type]

    def stored_ids(self, sink: Sink, tmp_path: Path) -> list[str]:
        return [json.loads(line)["event_id"] for line in self._printed[tmp_path].getvalue().splitlines()]

    _printed: ClassVar[dict[Path, io.BytesIO]] = {}
