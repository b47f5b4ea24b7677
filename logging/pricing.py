"""Cost from tokens: a versioned price table, applied where the lake and the metrics are built.

Tokens are facts an event records; prices change and get corrected. So the cost of a `response_generated`
event is computed by the projections, not stored by the producer: the Parquet projection writes `cost_usd`
and `cost_source` into the lake, and the metrics projection counts `querylog_llm_cost_usd_total`. Correcting a
price (a file named by ``QUERYLOG_PRICES``) and running ``querylog replay parquet`` re-prices history.

What is recorded and what is computed (the lake's `cost_source`):

- ``recorded``: the event carried `cost_usd` (a provider or gateway reported what it billed); kept as it is.
- ``price_table:<version>``: priced here, from the row in effect on the event's UTC date of the model that
  answered (`gen_ai_response_model`), or of the one requested when the response did not say.
- null: the model is not in the table, or the tokens are not known; `cost_usd` stays null, never 0.

The price: ``(input - cache_read) × input + cache_read × cache_read_price + output × output``, per million
tokens (cache-read tokens are part of the input count, reasoning tokens part of the output count, as OpenAI,
Anthropic and the OpenTelemetry GenAI conventions count them; a row without a cache-read price charges them as
input). A model matches a row by its exact name, or by a dated snapshot of it (``gpt-4o-2024-08-06`` → ``gpt-4o``).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "PriceTableError"]

_RESOURCE: Final = "data/prices.json"


class PriceTableError(ValueError):
    """A price file that cannot be used; the message names the file and the entry."""


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model's list price in USD per million tokens, from `effective_from` (a UTC date) on."""

    model: str
    effective_from: date
    input: float
    output: float
    cache_read: float | None = None
    note: str | None = None

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int | None) -> float:
        cached = min(cache_read_tokens or 0, input_tokens)
        cached_price = self.input if self.cache_read is None else self.cache_read
        return ((input_tokens - cached) * self.input + cached * cached_price + output_tokens * self.output) / 1e6


class _File(msgspec.Struct, forbid_unknown_fields=True):
    version: str
    prices: list[Price]
    source: str | None = None


class PriceTable:
    """Prices by model, each with the dates they apply from. Immutable once built."""

    def __init__(self, version: str, prices: Sequence[Price]) -> None:
        if not version.strip():
            raise PriceTableError("a price table needs a version (e.g. the date its prices were read)")
        by_model: dict[str, list[Price]] = {}
        for price in prices:
            if not price.model.strip():
                raise PriceTableError(f"price table {version}: an entry has an empty model name")
            for name, value in (("input", price.input), ("output", price.output), ("cache_read", price.cache_read)):
                if value is not None and not value >= 0:
                    raise PriceTableError(f"price table {version}: {price.model} {name} must be >= 0, got {value}")
            by_model.setdefault(price.model, []).append(price)
        for model, rows in by_model.items():
            rows.sort(key=lambda p: p.effective_from)
            days = [p.effective_from for p in rows]
            if len(set(days)) != len(days):
                raise PriceTableError(f"price table {version}: {model} has two prices from the same date")
        self.version = version
        self.source = f"price_table:{version}"
        self._by_model = by_model

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceTable:
        """The table in `path` (JSON, the shape of the bundled ``prices.json``), or the bundled one."""
        if path is None:
            data = importlib.resources.files("querylog.logging").joinpath(_RESOURCE).read_bytes()
            where = "the bundled price table"
        else:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise PriceTableError(f"cannot read the price table {path}: {exc.strerror or exc}") from exc
            where = str(path)
        try:
            parsed = msgspec.json.decode(data, type=_File)
        except msgspec.DecodeError as exc:
            raise PriceTableError(f"{where} is not a valid price table: {exc}") from exc
        return cls(parsed.version, parsed.prices)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._by_model)

    def rows(self, model: str) -> list[Price]:
        """The rows that apply to `model` (its own, or the undated name's for a dated snapshot), oldest first."""
        rows = self._by_model.get(model)
        if rows is not None:
            return rows
        best = ""
        for name in self._by_model:
            dated = model.startswith(name + "-") and model[len(name) + 1 : len(name) + 2].isdigit()
            if dated and len(name) > len(best):
                best = name
        return self._by_model.get(best, []) if best else []

    def price(self, model: str, when: datetime | date) -> Price | None:
        day = when.astimezone(UTC).date() if isinstance(when, datetime) else when
        found = None
        for row in self.rows(model):
            if row.effective_from <= day:
                found = row
        return found

    def cost(
        self,
        model: str | None,
        when: datetime,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
    ) -> float | None:
        """USD for these tokens, or None when the model has no price then or a token count is unknown."""
        if model is None or input_tokens is None or output_tokens is None:
            return None
        price = self.price(model, when)
        return None if price is None else price.cost(input_tokens, output_tokens, cache_read_tokens)

    def apply(self, table: pa.Table) -> pa.Table:
        """The lake rows `table` with `cost_usd` and `cost_source` filled (see the module docstring). Works on
        whole columns: a loop runs per distinct model of the batch and price row, never per event."""
        recorded = table.column("cost_usd")
        source = pc.if_else(pc.is_valid(recorded), pa.scalar("recorded"), pa.scalar(None, pa.string()))
        cost = recorded.cast(pa.float64())
        # The model that answered, when the provider said (a router or a dated snapshot), else the one asked for.
        model_col = pc.coalesce(table.column("gen_ai_response_model"), table.column("gen_ai_request_model"))
        is_response = pc.equal(table.column("event_type"), "response_generated")
        models = pc.unique(pc.filter(model_col, pc.and_(is_response, pc.is_null(recorded)))).to_pylist()
        if models and any(m is not None for m in models):
            inputs = table.column("gen_ai_usage_input_tokens").cast(pa.float64())
            outputs = table.column("gen_ai_usage_output_tokens").cast(pa.float64())
            cached = pc.min_element_wise(
                table.column("gen_ai_usage_cache_read_input_tokens").cast(pa.float64()).fill_null(0.0), inputs
            )
            known = pc.and_(pc.is_valid(inputs), pc.is_valid(outputs))
            day = pc.cast(table.column("ts"), pa.date32())
            todo = pc.and_(pc.and_(is_response.fill_null(False), pc.is_null(recorded)), known)
            for model in models:
                if model is None:
                    continue
                # A null in a mask would make if_else write null over a recorded cost: masks are never null.
                of_model = pc.and_(todo, pc.equal(model_col, model).fill_null(False))
                for row in self.rows(model):  # oldest first: a later row overrides from its date on
                    mask = pc.and_(of_model, pc.greater_equal(day, pa.scalar(row.effective_from, pa.date32())))
                    cached_price = row.input if row.cache_read is None else row.cache_read
                    priced = pc.divide(
                        pc.add(
                            pc.add(
                                pc.multiply(pc.subtract(inputs, cached), row.input),
                                pc.multiply(cached, cached_price),
                            ),
                            pc.multiply(outputs, row.output),
                        ),
                        1e6,
                    )
                    cost = pc.if_else(mask, priced, cost)
                    source = pc.if_else(mask, pa.scalar(self.source), source)
        table = table.set_column(table.schema.get_field_index("cost_usd"), "cost_usd", cost)
        return table.set_column(table.schema.get_field_index("cost_source"), "cost_source", source)


#: The table bundled with this release (logging/data/prices.json).
DEFAULT_PRICES: Final = PriceTable.load()
