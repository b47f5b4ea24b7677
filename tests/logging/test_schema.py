"""One schema definition: the lake, the views, the Loki lines and the ingest API's schema all follow the events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog
from tests.support.loki_entries import entry_of, event_from_entry

from querylog.analytics.catalog import NOT_IN_QUERIES, Catalog
from querylog.logging import codec
from querylog.logging.events import (
    EVENT_CLASSES,
    MAX_ANSWER_CHARS,
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTES,
    MAX_SOURCES,
    MAX_TAGS,
    TRUNCATION_MARKER,
    Event,
    EventValidationError,
    QueryCompleted,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
)
from querylog.logging.loki import LINE_FIELDS, METADATA_FIELDS
from querylog.logging.parquet import ParquetSink, events_to_table, rows_from_lines
from querylog.logging.projection import Batch, Projector
from querylog.logging.schema import (
    DERIVED_COLUMNS,
    EVENT_FIELD_TYPES,
    LAKE_SCHEMA,
    MAP_COLUMNS,
    PERSONAL_TEXT_FIELDS,
    SchemaDefinitionError,
    arrow_type,
)
from querylog.logging.segments import EventLog, LogReader
from querylog.service.producers import event_schema_components


def _all_fields() -> set[str]:
    return {f for cls in EVENT_CLASSES.values() for f in cls.__struct_fields__}


def test_the_lake_schema_has_exactly_the_event_fields_and_the_derived_columns() -> None:
    assert set(LAKE_SCHEMA.names) == _all_fields() | {"event_type"} | set(DERIVED_COLUMNS)
    assert len(LAKE_SCHEMA.names) == len(set(LAKE_SCHEMA.names))


def test_v1_columns_keep_their_types_and_order_so_old_and_new_files_union() -> None:
    v1 = [
        ("event_id", pa.string()), ("event_type", pa.string()), ("schema_version", pa.int16()),
        ("ts", pa.timestamp("us", tz="UTC")), ("query_id", pa.string()), ("result_count", pa.int32()),
        ("score", pa.int8()), ("confidence", pa.float64()), ("cache_hit", pa.bool_()),
    ]  # fmt: skip
    for name, kind in v1:
        assert LAKE_SCHEMA.field(name).type == kind, name
    assert LAKE_SCHEMA.names[:4] == ["event_id", "event_type", "schema_version", "ts"]


def test_nested_fields_are_typed_columns_not_json_strings() -> None:
    assert LAKE_SCHEMA.field("sources").type == pa.list_(
        pa.struct([("doc_id", pa.string()), ("title", pa.string()), ("score", pa.float64()), ("rank", pa.int32())])
    )
    assert LAKE_SCHEMA.field("tags").type == pa.list_(pa.string())
    assert LAKE_SCHEMA.field("attributes").type == pa.map_(pa.string(), pa.string())
    assert set(MAP_COLUMNS) == {"attributes", "backend_durations_ms"}


def test_one_name_with_two_types_is_refused() -> None:
    class Odd(msgspec.Struct):
        x: int | str

    with pytest.raises(SchemaDefinitionError, match="union"):
        arrow_type(msgspec.inspect.type_info(Odd).fields[0].type)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "annotation",
    [int, Annotated[int, msgspec.Meta(ge=0)], Annotated[int, msgspec.Meta(ge=0, le=2**31)]],
    ids=["unbounded", "no upper bound", "past int32"],
)
def test_an_int_field_must_state_bounds_its_column_holds(annotation: Any) -> None:
    """Else a value past int32 is taken at ingest and refused by every Parquet write after."""
    odd = msgspec.defstruct("Odd", [("n", annotation)])
    with pytest.raises(SchemaDefinitionError, match="needs bounds within"):
        arrow_type(msgspec.inspect.type_info(odd).fields[0].type)  # type: ignore[attr-defined]


def test_a_written_file_holds_every_field_an_event_set(tmp_path: Path) -> None:
    event = _full_response()
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=[event], checkpoint={"s": 1}))
        (row,) = pq.read_table(sink.files()[0]).to_pylist()
    for name in ResponseGenerated.__struct_fields__:
        if name in ("ts", "attributes", "cost_usd"):
            continue
        assert row[name] == msgspec.json.decode(msgspec.json.encode(getattr(event, name))), name
    assert dict(row["attributes"]) == event.attributes
    # Not recorded, so priced: gpt-4o-mini at 0.15 / 0.075 cached / 0.60 per million tokens.
    assert row["cost_usd"] == pytest.approx(((1200 - 1024) * 0.15 + 1024 * 0.075 + 300 * 0.60) / 1e6)
    assert row["cost_source"].startswith("price_table:")


def test_the_events_view_has_every_lake_column_even_over_an_empty_lake(tmp_path: Path) -> None:
    with Catalog(tmp_path / "lake") as catalog:
        columns, _ = catalog.query("SELECT * FROM events LIMIT 0")
    assert columns == LAKE_SCHEMA.names


def test_every_event_field_is_a_queries_column_or_says_why_not(tmp_path: Path) -> None:
    with Catalog(tmp_path / "lake") as catalog:
        columns, _ = catalog.query("SELECT * FROM queries LIMIT 0")
    missing = (_all_fields() | {"event_type"}) - set(columns) - set(NOT_IN_QUERIES)
    assert not missing, f"event fields neither in the queries view nor in NOT_IN_QUERIES: {sorted(missing)}"
    stale = set(NOT_IN_QUERIES) - _all_fields() - {"event_type"}
    assert not stale, f"NOT_IN_QUERIES names fields no event has: {sorted(stale)}"
    shown_anyway = set(NOT_IN_QUERIES) & set(columns)
    assert not shown_anyway, f"NOT_IN_QUERIES lists columns the view does show: {sorted(shown_anyway)}"


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=list(EVENT_CLASSES))
def test_a_loki_line_carries_every_field_loki_does_not_hold_elsewhere(cls: type[Event]) -> None:
    # The stream labels hold event_type, service and env; structured metadata holds the ids; the entry's time is ts.
    # `service` and `env` are in the line too when they differ from the labels; `level` is the line's own.
    elsewhere = {"ts", *METADATA_FIELDS}
    assert set(LINE_FIELDS[cls.__struct_config__.tag]) == {"level", *(set(cls.__struct_fields__) - elsewhere)}


def test_a_v2_event_survives_the_trip_through_a_loki_line() -> None:
    event = _full_response()
    entry = entry_of(event, app="querylog", env="dev")
    labels = {**entry.labels, **entry.metadata}
    assert event_from_entry(entry.ts_ns, entry.line, labels) == event


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=list(EVENT_CLASSES))
def test_the_ingest_api_schema_lists_every_field(cls: type[Event]) -> None:
    components = event_schema_components()
    properties = components[cls.__name__]["properties"]
    assert set(properties) == set(cls.__struct_fields__) | {"event_type"}


def test_personal_text_fields_are_text_fields_of_the_schema() -> None:
    for name in PERSONAL_TEXT_FIELDS:
        assert arrow_type(EVENT_FIELD_TYPES[name]) == pa.string()


# -- v2 bounds ------------------------------------------------------------------------------------------------
def _full_response() -> ResponseGenerated:
    return ResponseGenerated(
        query_id="q-1",
        gen_ai_system="openai",
        gen_ai_request_model="gpt-4o-mini",
        gen_ai_response_model="gpt-4o-mini-2024-07-18",
        gen_ai_usage_input_tokens=1200,
        gen_ai_usage_output_tokens=300,
        gen_ai_usage_cache_read_input_tokens=1024,
        gen_ai_usage_reasoning_output_tokens=0,
        answer_text="삼성전자 배당은 분기마다 지급됩니다.",
        answer_chars=19,
        response_type="company_analysis",
        finish_reason="stop",
        ttft_ms=180.5,
        release="2026.12.0",
        prompt_version="p7",
        tags=("vip", "beta"),
        attributes={"plan": "pro", "ab.bucket": "B"},
    )


def test_an_oversized_answer_is_cut_with_a_marker_never_refused() -> None:
    event = ResponseGenerated(query_id="q", answer_text="가" * (MAX_ANSWER_CHARS + 500))
    assert event.answer_text is not None
    assert len(event.answer_text) == MAX_ANSWER_CHARS
    assert event.answer_text.endswith(TRUNCATION_MARKER)


def test_sources_past_the_bound_are_cut_and_counted() -> None:
    sources = tuple(Source(doc_id=f"d{i}", rank=i + 1) for i in range(MAX_SOURCES + 7))
    event = SearchCompleted(query_id="q", result_count=len(sources), sources=sources)
    assert event.sources is not None and len(event.sources) == MAX_SOURCES
    assert [s.doc_id for s in event.sources] == [f"d{i}" for i in range(MAX_SOURCES)]
    assert event.sources_dropped == 7


def test_a_long_title_is_capped() -> None:
    source = Source(doc_id="d", rank=1, title="t" * 1000)
    assert source.title is not None and len(source.title) < 1000 and source.title.endswith(TRUNCATION_MARKER)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tags": tuple(f"t{i}" for i in range(MAX_TAGS + 1))}, "tags"),
        ({"tags": ("",)}, "tags"),
        ({"attributes": {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}}, "attributes"),
        ({"attributes": {"k": "v" * (MAX_ATTRIBUTE_BYTES + 1)}}, "attributes"),
        ({"attributes": {"bad key": "v"}}, "attributes"),
    ],
)
def test_tags_and_attributes_over_their_bounds_are_refused_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(EventValidationError) as raised:
        QueryReceived(query_id="q", query_text="x", **fields)  # type: ignore[arg-type]
    assert raised.value.field == named


def test_maps_are_kept_in_one_order() -> None:
    a = QueryReceived(query_id="q", query_text="x", attributes={"z": "1", "a": "2"})
    b = QueryReceived(query_id="q", query_text="x", attributes={"a": "2", "z": "1"})
    assert codec.encode(a).split(b'"event_id"')[0] == codec.encode(b).split(b'"event_id"')[0]


# -- v1 lines --------------------------------------------------------------------------------------------------
V1_LINE = (
    b'{"event_type":"response_generated","gen_ai_request_model":"gpt-4o","gen_ai_usage_input_tokens":10,'
    b'"gen_ai_usage_output_tokens":5,"answer_chars":42,"event_id":"e-1","ts":"2026-11-01T00:00:00Z","query_id":"q"}'
)


def test_a_v1_line_reads_as_v2_with_nulls_and_keeps_its_version() -> None:
    event = codec.decode(V1_LINE)
    assert isinstance(event, ResponseGenerated)
    assert event.schema_version == 1
    assert event.answer_chars == 42
    assert event.answer_text is None and event.release is None and event.tags is None  # never invented
    assert b'"schema_version":1' in codec.encode(event)  # written out, so it stays v1 when re-encoded


def test_a_v1_line_takes_the_fast_path_with_the_same_row_as_the_careful_one() -> None:
    (fast,) = rows_from_lines([V1_LINE]).values()
    careful = events_to_table([codec.decode(V1_LINE)])
    assert fast.to_pylist() == careful.to_pylist()
    assert fast.column("schema_version").to_pylist() == [1]


def test_new_events_always_write_their_version() -> None:
    assert b'"schema_version":2' in codec.encode(QueryCompleted(query_id="q", latency_ms=1.0))
    # The oldest version that holds the event: a search whose count is unknown is v3's, which a v2 reader refuses.
    assert b'"schema_version":3' in codec.encode(SearchCompleted(query_id="q", result_count=None))
    assert b'"schema_version":3' in codec.encode(SearchCompleted(query_id="q", result_count=None, schema_version=2))


# -- fallbacks are counted and logged once ------------------------------------------------------------------------
def test_a_batch_the_fast_path_declines_is_counted_and_logged_once(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        log.append(QueryReceived(query_id="q", query_text="x"))
        log.flush()
    segment = next(log_dir.iterdir())
    unknown = codec.encode(QueryReceived(query_id="q2", query_text="y")).replace(
        b'"query_id"', b'"surprise":1,"query_id"'
    )
    with ParquetSink(tmp_path / "lake") as sink, structlog.testing.capture_logs() as logs:
        projector = Projector(LogReader(log_dir), sink, batch_max_events=1)
        for _ in range(2):
            with segment.open("ab") as fh:
                fh.write(unknown + b"\n")
            projector.catch_up()
        fallbacks = sink.telemetry.snapshot().fallbacks
    assert fallbacks == {"unknown_field": 2}
    declined = [entry for entry in logs if entry["event"] == "parquet_fast_path_declined"]
    assert len(declined) == 1 and declined[0]["reason"] == "unknown_field"
