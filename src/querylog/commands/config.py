"""``querylog config``: the settings in force, after validation."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any

from querylog.config import Settings, duration_seconds
from querylog.logging.redaction import shown_url

_SECRET = ("ingest_token", "user_id_salt", "loki_password", "loki_token")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show the settings in force (secrets masked)",
        description="Validate the QUERYLOG_* environment and print the settings in force.",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    fields = dataclasses.fields(settings)
    width = max(len(f.metadata["env"]) for f in fields)
    for f in fields:
        value = getattr(settings, f.name)
        if f.name in _SECRET and value:
            value = "***"
        elif f.name == "loki_url" and value:
            value = shown_url(value)  # a password in the URL itself
        elif f.name == "log_retention" and settings.retention is not None:
            capped = settings.log_retention_s < duration_seconds("QUERYLOG_LOG_RETENTION", settings.log_retention)
            value = f"{value} (in force: {settings.retention}, QUERYLOG_RETENTION caps it)" if capped else value
        print(f"{f.metadata['env']:<{width}}  {value}")
    for name, shown in _outside_rows(os.environ):
        print(f"{name:<{width}}  {shown}")
    # The LLM and Langfuse variables are read by `serve` where it builds the chat API: checked here as it checks them.
    problem = _outside_settings(os.environ)
    if problem is not None:
        print(f"querylog config: configuration error: {problem}", file=sys.stderr)
        return 2
    # Files named by a setting are read where they are used: say now if one cannot be, rather than at a search.
    if settings.aliases_path is not None:
        from querylog.analytics.aliases import AliasError, load_aliases

        try:
            load_aliases(settings.aliases_path)
        except (AliasError, OSError) as exc:
            print(
                f"querylog config: configuration error: QUERYLOG_ALIASES: the alias file cannot be used: {exc}",
                file=sys.stderr,
            )
            return 2
    return 0


#: The variables `serve` reads outside `Settings` (the LLM step, Langfuse), as shown: secrets masked, URLs without
#: their credentials.
_OUTSIDE: tuple[tuple[str, str], ...] = (
    ("QUERYLOG_LLM_BASE_URL", "url"),
    ("QUERYLOG_LLM_MODEL", "plain"),
    ("QUERYLOG_LLM_API_KEY", "secret"),
    ("QUERYLOG_LLM_TIMEOUT_S", "plain"),
    ("LANGFUSE_HOST", "url"),
    ("LANGFUSE_BASE_URL", "url"),
    ("LANGFUSE_PUBLIC_KEY", "plain"),
    ("LANGFUSE_SECRET_KEY", "secret"),
)


def _outside_rows(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    rows = []
    for name, kind in _OUTSIDE:
        value = environ.get(name, "").strip()
        if not value:
            rows.append((name, "None"))
        else:
            rows.append((name, "***" if kind == "secret" else shown_url(value) if kind == "url" else value))
    return rows


def _outside_settings(environ: Mapping[str, str]) -> str | None:
    """Why `serve` would refuse the QUERYLOG_LLM_* or LANGFUSE_* variables, or None."""
    from querylog.service.generation import generator_from_env

    try:
        close = getattr(generator_from_env(environ), "close", None)  # an LLM server's generator holds a client
        if callable(close):
            close()
        if any(name.startswith("LANGFUSE_") and value.strip() for name, value in environ.items()):
            from querylog.service.tracing import langfuse_settings  # imports Langfuse: only when it is asked for

            langfuse_settings(environ)
    except ValueError as exc:
        return str(exc)
    return None
