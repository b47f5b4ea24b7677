"""``querylog erase``: remove every event of users, sessions or queries from every store (see querylog.erase)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from querylog.config import Settings

if TYPE_CHECKING:
    from querylog.erase import ErasureReceipt

#: The search indexes are built from the lake: with none of the subjects' rows there, there is nothing to rebuild.
_UNTOUCHED = "untouched (no index, or the lake held none of their rows)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "erase",
        help="erase every event of a user, session or query: log, lake, search index, metrics, Loki",
        description="Erase every event of the given subjects (and every event of their queries) from the log "
        "(blanked in place), the lake (each affected hour rewritten atomically), the search index (rebuilt), the "
        "metrics snapshot and, when QUERYLOG_LOKI_URL is set, Loki (delete requests: one per user and session, one per "
        "50 query ids, over the streams this data directory shipped: the app and env pairs it noted in "
        "state/loki-labels.json, so no other deployment's (every app's and env's for one that shipped before they "
        "were noted; none for one that never shipped); Loki applies them when its "
        "compactor has deletion enabled). Safe while querylog serve runs; idempotent; an interrupted "
        "run is finished by the next (with no subject given, that is all it does). With QUERYLOG_USER_ID_SALT set, "
        "give the raw user id. Prints a receipt "
        "and appends an audit entry without ids to QUERYLOG_HOME/state/erasures.jsonl. Events written after "
        "the erase started are not erased: stop sending them first.",
    )
    p.add_argument("--user-id", action="append", default=[], metavar="ID", help="a user id (repeatable)")
    p.add_argument("--session-id", action="append", default=[], metavar="ID", help="a session id (repeatable)")
    p.add_argument("--query-id", action="append", default=[], metavar="ID", help="a query id (repeatable)")
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for a running Parquet projection to pass the erased log (default: 30)",
    )
    p.add_argument(
        "--skip-loki",
        action="store_true",
        help="leave Loki out: for a data directory that shipped to a Loki since retired (requests an earlier run "
        "kept in state/loki-deletes-pending.jsonl stay there)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="receipt format (default: text)")
    p.set_defaults(run=run, home_use="write")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.analytics.upkeep import UpkeepError
    from querylog.erase import IN_PROGRESS, ErasureError, NoSubjectError, SaltNeededError, erase, left_undone
    from querylog.logging.structured import configure_structlog

    configure_structlog(stream=sys.stderr)  # stdout carries the receipt only

    err = sys.stderr
    ids = [*args.user_id, *args.session_id, *args.query_id]
    if not ids and not left_undone(settings, skip_loki=args.skip_loki):
        print("querylog erase: name at least one subject: --user-id, --session-id or --query-id", file=err)
        return 2
    if any(not i.strip() for i in ids):
        print("querylog erase: an empty id erases nothing; give the id as it was sent", file=err)
        return 2
    if not settings.log_dir.is_dir() and not settings.lake_dir.is_dir():
        print(
            f"querylog erase: no log or lake in {settings.home}: is --home (QUERYLOG_HOME) right? nothing erased",
            file=err,
        )
        return 1
    if not 0 <= args.wait < float("inf"):
        print(f"querylog erase: --wait must be a number of seconds >= 0, got {args.wait:g}", file=err)
        return 2
    try:
        receipt = erase(
            settings,
            user_ids=args.user_id,
            session_ids=args.session_id,
            query_ids=args.query_id,
            wait_s=args.wait,
            skip_loki=args.skip_loki,
            progress=lambda line: print(f"  {line}", file=err, flush=True),
        )
    except ErasureError as exc:
        print(f"querylog erase: {exc}", file=err)
        return 1
    except SaltNeededError as exc:  # before anything is touched: a setting to give, as any other
        print(f"querylog erase: {exc}; nothing erased", file=err)
        return 2
    except NoSubjectError as exc:  # none given, and the stopped run's erasure was finished by another meanwhile
        print(f"querylog erase: {exc}", file=err)
        return 2
    except UpkeepError as exc:
        print(f"querylog erase: {exc}; run it again: it finishes what this run began", file=err)
        return 1
    except KeyboardInterrupt:
        if (settings.state_dir / IN_PROGRESS).exists():
            print(
                "querylog erase: stopped before every store was done; the next `querylog erase` (any subjects, or "
                "none) finishes this one first, and its receipt says resumed",
                file=err,
            )
        else:
            print("querylog erase: stopped before anything was erased; run it again", file=err)
        return 130
    if args.format == "json":
        print(json.dumps(receipt.as_dict(), ensure_ascii=False))
    else:
        found = receipt.log_events + receipt.lake_events + receipt.dead_letter_entries
        if not ids and not receipt.resumed:
            print("querylog erase: no subject given: filing the Loki delete requests earlier erasures left")
        elif not found and not receipt.metrics_open_queries and not receipt.metrics_sessions and not receipt.resumed:
            print("querylog erase: no event of these subjects in the log or the lake; nothing erased")
        else:
            print(f"erasure {receipt.erasure_id}: {receipt.queries} {'query' if receipt.queries == 1 else 'queries'}")
            if receipt.resumed:
                print("  resumed: an erasure a stopped run had begun, finished with this one")
            print(f"  log:    {receipt.log_events} events blanked in {receipt.log_segments} segments")
            print(f"  lake:   {receipt.lake_events} events removed, {receipt.lake_hours} hours rewritten")
            print(f"  search: {'index rebuilt without them' if receipt.search_rebuilt else _UNTOUCHED}")
            forgotten = f"{receipt.metrics_open_queries} open queries"
            if n := receipt.metrics_sessions:
                forgotten += f" and the latest question of {n} session{'s' * (n != 1)}"
            print(f"  metrics snapshot: {forgotten} forgotten")
            if receipt.dead_letter_entries:
                n = receipt.dead_letter_entries
                print(f"  Loki dead letters: {n} {'entry' if n == 1 else 'entries'} removed")
            print("  metrics counters: totals, never lowered: `reconcile --metrics-url` differs by these events")
        if settings.loki_url or receipt.loki_error:  # even when nothing was found here: Loki may hold them
            print(f"  loki:   {_loki_line(receipt)}")
        for note in receipt.notes:
            print(f"  note: {note}")
    if receipt.loki_error or receipt.notes:
        return 1
    return 0


def _loki_line(receipt: ErasureReceipt) -> str:
    from querylog.erase import LOKI_PENDING

    if receipt.loki_never_shipped and not receipt.loki_requests and not receipt.loki_error:
        return "none: this data directory never shipped to Loki (no state/checkpoints/loki.json)"
    line = f"{receipt.loki_requests} delete request{'' if receipt.loki_requests == 1 else 's'} accepted"
    if receipt.loki_earlier:
        line += f" ({receipt.loki_earlier} left by an earlier erasure)"
    if receipt.loki_error:
        line += (
            f"; {receipt.loki_pending} not filed, kept in state/{LOKI_PENDING} for the next `querylog erase`: "
            f"{receipt.loki_error}"
        )
    return line
