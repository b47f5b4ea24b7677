"""The price table: which row prices a response, what is recorded and what is computed, and a bad file's error."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from querylog.config import ConfigError, Settings
from querylog.logging.events import ResponseGenerated
from querylog.logging.parquet import events_to_table
from querylog.logging.pricing import DEFAULT_PRICES, Price, PriceTable, PriceTableError

_TABLE = PriceTable(
    "test-1",
    [
        Price(model="m", effective_from=date(2025, 1, 1), input=2.0, output=8.0, cache_read=0.5),
        Price(model="m", effective_from=date(2025, 6, 1), input=1.0, output=4.0),
        Price(model="m-mini", effective_from=date(2025, 1, 1), input=0.1, output=0.2),
    ],
)


def _response(model: str | None, ts: datetime, **fields: object) -> ResponseGenerated:
    return ResponseGenerated(
        query_id="q-1",
        ts=ts,
        gen_ai_request_model=model,
        gen_ai_usage_input_tokens=1_000,
        gen_ai_usage_output_tokens=500,
        **fields,  # type: ignore[arg-type]
    )


def _priced(*events: ResponseGenerated) -> list[tuple[float | None, str | None]]:
    table = events_to_table(list(events), _TABLE)
    return list(zip(table.column("cost_usd").to_pylist(), table.column("cost_source").to_pylist(), strict=True))


def test_the_row_in_effect_on_the_events_utc_date_prices_it() -> None:
    before, after = datetime(2025, 5, 31, 23, 59, tzinfo=UTC), datetime(2025, 6, 1, 0, 1, tzinfo=UTC)
    assert _priced(_response("m", before), _response("m", after)) == [
        ((1_000 * 2.0 + 500 * 8.0) / 1e6, "price_table:test-1"),
        ((1_000 * 1.0 + 500 * 4.0) / 1e6, "price_table:test-1"),
    ]


def test_cache_read_tokens_are_part_of_the_input_at_their_own_price() -> None:
    when = datetime(2025, 2, 1, tzinfo=UTC)
    [(cost, _)] = _priced(_response("m", when, gen_ai_usage_cache_read_input_tokens=400))
    assert cost == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)
    # a row without a cache-read price charges them as input: the same as no cache at all
    [(later, _)] = _priced(_response("m", datetime(2025, 7, 1, tzinfo=UTC), gen_ai_usage_cache_read_input_tokens=400))
    assert later == pytest.approx((1_000 * 1.0 + 500 * 4.0) / 1e6)


def test_a_dated_snapshot_takes_its_models_row_and_a_longer_name_is_its_own_model() -> None:
    assert _TABLE.price("m-2025-03-01", date(2025, 3, 2)) == _TABLE.price("m", date(2025, 3, 2))
    mini = _TABLE.price("m-mini", date(2025, 3, 2))
    assert mini is not None and mini.model == "m-mini"
    assert _TABLE.price("m-large", date(2025, 3, 2)) is None  # not a dated snapshot of "m"


def test_what_cannot_be_priced_stays_null_never_zero() -> None:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    unknown = _response("no-such-model", when)
    too_early = _response("m", datetime(2024, 12, 31, tzinfo=UTC))
    no_tokens = ResponseGenerated(query_id="q", ts=when, gen_ai_request_model="m", gen_ai_usage_input_tokens=5)
    no_model = _response(None, when)
    assert _priced(unknown, too_early, no_tokens, no_model) == [(None, None)] * 4


def test_a_recorded_cost_wins_over_the_table() -> None:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    assert _priced(_response("m", when, cost_usd=0.123), _response("no-such-model", when, cost_usd=0.5)) == [
        (0.123, "recorded"),
        (0.5, "recorded"),
    ]


def test_the_bundled_table_prices_the_models_it_lists() -> None:
    assert DEFAULT_PRICES.version and {"gpt-4o", "gpt-4o-mini"} <= set(DEFAULT_PRICES.models)
    row = DEFAULT_PRICES.price("gpt-4o-2024-08-06", date(2026, 1, 1))
    assert row is not None and row.model == "gpt-4o"
    cost = DEFAULT_PRICES.cost("gpt-4o", datetime(2026, 1, 1, tzinfo=UTC), 1_000_000, 0)
    assert cost == row.input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a valid price table"),
        (json.dumps({"version": "x", "prices": [{"model": "m", "effective_from": "2025-01-01", "input": 1}]}), "output"),
        (json.dumps({"version": "x", "prices": [{"model": "m", "effective_from": "2025-01-01", "input": -1, "output": 1}]}), "m input"),
        (json.dumps({"version": " ", "prices": []}), "version"),
        (
            json.dumps(
                {
                    "version": "x",
                    "prices": [
                        {"model": "m", "effective_from": "2025-01-01", "input": 1, "output": 1},
                        {"model": "m", "effective_from": "2025-01-01", "input": 2, "output": 2},
                    ],
                }
            ),
            "same date",
        ),
    ],
)
def test_a_bad_price_file_is_refused_naming_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceTableError, match=message):
        PriceTable.load(path)
    with pytest.raises(ConfigError, match="QUERYLOG_PRICES"):
        Settings.from_env({"QUERYLOG_PRICES": str(path)})


def test_querylog_prices_replaces_the_bundled_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"version": "ours-2", "prices": [{"model": "m", "effective_from": "2025-01-01", "input": 1, "output": 1}]})
    )
    prices = Settings.from_env({"QUERYLOG_PRICES": str(path)}).prices()
    assert prices.version == "ours-2" and prices.models == ("m",)
    assert Settings.from_env({}).prices() is DEFAULT_PRICES
    with pytest.raises(ConfigError, match="QUERYLOG_PRICES"):
        Settings.from_env({"QUERYLOG_PRICES": str(tmp_path / "missing.json")})


def test_the_model_that_answered_is_priced_when_the_response_names_it() -> None:
    from querylog.logging.metrics import MetricsProjection

    routed = _response("m", datetime(2025, 3, 1, tzinfo=UTC), gen_ai_response_model="m-mini-2025-02-01")
    [(cost, source)] = _priced(routed)
    assert cost == pytest.approx((1_000 * 0.1 + 500 * 0.2) / 1e6) and source == "price_table:test-1"
    projection = MetricsProjection(prices=_TABLE)
    projection.apply([routed])
    text = projection.exposition().decode()
    assert 'querylog_llm_cost_usd_total{model="m"} 0.0002' in text  # counted under the model asked for
