"""Analytics over the Parquet lake: DuckDB catalog, queries, search, reports, the explorer."""
