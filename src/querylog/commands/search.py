"""``querylog search``: ranked full-text search over what users asked, brought up to date from the lake first."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from querylog.commands import lake_missing, since_argument, unreadable_file, until_argument, window_problem
from querylog.config import Settings, alias_setting
from querylog.logging.events import UNCLASSIFIED

if TYPE_CHECKING:
    from querylog.analytics.catalog import Catalog
    from querylog.analytics.upkeep import LakeSearch

FORMATS = ("table", "json")
#: The most results one search lists (`--limit`).
MAX_LIMIT = 10_000


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1-{MAX_LIMIT}; got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="full-text search over the queries users asked, or the answers they got (Korean, English, mixed)",
        description="Ranked full-text search over query texts (--in queries, the default) or over the answers "
        "the service gave (--in answers; recorded since schema v2), or both. Works for Korean (particles, no "
        "spaces), English and mixed text. Queries that reached the lake since the last search are indexed first "
        "(the indexes live under QUERYLOG_HOME/index and index-answers). Results are distinct questions, "
        "best match first: each with times_asked, first_asked, last_asked and the intents it got, counted over "
        "the whole lake within --intent, --env, --service, --since and --until; --format json adds the query ids "
        "behind each (newest first, at most 1000). --no-group lists the matching queries one by one instead. "
        "Below the exact matches come, in this order: other names of a company the text names (현대차 finds "
        "현대자동차, Hyundai Motor and 005380; the alias file is QUERYLOG_ALIASES, the bundled KOSPI/KOSDAQ/US "
        "listing by default), 초성 (ㄴㅇㅂ finds 네이버) and, only when nothing else matched, words one typo "
        "away (하이닉수 finds 하이닉스). "
        "The match column names the tier (exact, alias, initials, typo); score ranks the rows: for an exact match, "
        "how many of the words start a word of the text; -1, -2 and -3 for the tiers below (--explain says why).",
    )
    p.add_argument("text", nargs="+", help="what to look for, e.g. 네이버 주가 (words typed apart are one text)")
    p.add_argument("--limit", "-n", type=_limit, default=10, help="most results, 1-10000 (default: 10)")
    p.add_argument("--intent", help="only queries with this intent, e.g. stock_analysis")
    p.add_argument("--env", action="append", default=[], help="only queries from this env (repeatable)")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        help="only queries from this service, the app that asked (repeatable); times_asked counts only those",
    )
    p.add_argument(
        "--since",
        type=since_argument,
        metavar="WHEN",
        help="only queries since: a duration back from now (30m, 12h, 7d, 2w) or an ISO date (2025-01-31)",
    )
    p.add_argument(
        "--until",
        type=until_argument,
        metavar="WHEN",
        help="only queries before this (not included), written as --since (an ISO date, or a duration back from now)",
    )
    p.add_argument(
        "--in",
        dest="where",
        choices=("queries", "answers", "both"),
        default="queries",
        help="search the questions (default), the answers, or both (each query once, by its best score)",
    )
    p.add_argument(
        "--no-group",
        dest="group",
        action="store_false",
        help="one row per matching query (with its query_id), not one per distinct question",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="add a `why` column: for an exact match, whether each query word starts a word of the text, sits "
        "inside a word, or matched across spacing (삼성전자 in 삼성 전자); otherwise the alias, 초성 or typo that "
        "matched (현대차 → hyundai motor (alias of 현대자동차))",
    )
    p.add_argument(
        "--aliases",
        metavar="FILE",
        help="the alias file to use instead of QUERYLOG_ALIASES (a CSV path, starter or off; docs/search.md)",
    )
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    p.set_defaults(run=run, home_use="write")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog._format import format_rows, shortened
    from querylog.analytics._search_text import unquoted
    from querylog.analytics.aliases import AliasError
    from querylog.analytics.catalog import CatalogError
    from querylog.analytics.queries import Filters, open_catalog
    from querylog.analytics.search_groups import find_questions, questions_of
    from querylog.analytics.upkeep import SEARCH_FIELDS, LakeSearch, SearchField, UpkeepError
    from querylog.logging.structured import configure_structlog

    # As the index reads it ("네이버 주가" as 네이버 주가), for --explain and messages too.
    asked = unquoted(" ".join(args.text))
    if not asked.strip():
        print("querylog search: give some text to look for", file=sys.stderr)
        return 2
    if not args.group and (args.env or args.service):
        print(
            "querylog search: --env and --service filter the questions (the default), not --no-group", file=sys.stderr
        )
        return 2
    if problem := window_problem(args.since, args.until):
        print(f"querylog search: {problem}: no query could match", file=sys.stderr)
        return 2
    if lake_missing(settings.lake_dir, "search"):
        return 1  # nothing to search, and no index to make in a directory that may be a typo
    configure_structlog(stream=sys.stderr)  # stdout carries the results only
    try:
        chosen = (
            settings if args.aliases is None else dataclasses.replace(settings, aliases=alias_setting(args.aliases))
        )
        aliases = _aliases(chosen)
    except (AliasError, OSError) as exc:
        print(f"querylog search: the alias file cannot be used: {exc}", file=sys.stderr)
        return 2
    fields: tuple[SearchField, ...] = SEARCH_FIELDS if args.where == "both" else (args.where,)
    found: dict[str, tuple[float, str, Any]] = {}  # query_id → (score, field, hit): its best
    best: list[tuple[float, str, Any]] = []
    more = False  # whether more matched than --limit shows
    questions: dict[str, str] = {}
    try:
        with open_catalog(settings.lake_dir, names=settings.company_names()) as catalog:
            searches = [_synced(LakeSearch(settings.home, field=field), catalog) for field in fields]
            if args.group:
                # Distinct questions straight from the index: a question asked thousands of times takes one place.
                intents = (args.intent,) if args.intent else ()
                only = Filters(
                    since=args.since,
                    until=args.until,
                    intents=intents,
                    envs=tuple(args.env),
                    services=tuple(args.service),
                )
                # One more than shown: whether there are more to offer with --limit.
                groups = find_questions(catalog, searches, asked, limit=args.limit + 1, filters=only, aliases=aliases)
                more, groups = len(groups) > args.limit, groups[: args.limit]
            else:
                for search in searches:
                    hits = search.search(
                        asked,
                        limit=args.limit + 1,
                        intent=args.intent,
                        since=args.since,
                        until=args.until,
                        aliases=aliases,
                    )
                    for hit in hits:
                        score = float(hit.score)
                        if hit.query_id not in found or score > found[hit.query_id][0]:
                            found[hit.query_id] = (score, search.field, hit)
                # Best score first, then newest, as the index ranks them.
                best = sorted(found.values(), key=lambda f: (-f[0], -f[2].ts.timestamp(), f[2].query_id))
                more, best = len(best) > args.limit, best[: args.limit]
                questions = questions_of(catalog, [hit.query_id for _, field, hit in best if field == "answers"])
    except (UpkeepError, CatalogError) as exc:
        if unreadable_file(exc):  # the CLI names the damaged files, as for every command
            raise
        print(f"querylog search: {exc}", file=sys.stderr)
        return 1
    rows: list[tuple[Any, ...]]
    if args.group:
        if args.format == "json":
            columns = ["rank", "score", "match", "query_text", "times_asked", "first_asked", "last_asked", "intents"]
            columns.append("query_ids")
            rows = [
                (i, round(g.score, 4), g.match, g.query_text, g.times_asked, g.first_asked, g.last_asked, *lists)
                for i, g in enumerate(groups, 1)
                for lists in [(list(g.intents), list(g.query_ids))]
            ]
            if args.where != "queries":  # the answer that matched, when the question was found by its answer
                columns.append("answer")
                rows = [(*row, g.answer) for row, g in zip(rows, groups, strict=True)]
        else:
            columns = ["rank", "score", "match", "times_asked", "last_asked", "intents", "query_text"]
            rows = [
                (i, round(g.score, 4), g.match, g.times_asked, g.last_asked, ", ".join(g.intents), g.query_text)
                for i, g in enumerate(groups, 1)
            ]
    elif args.where == "queries":
        columns = ["rank", "score", "match", "ts", "intent", "query_text", "query_id"]
        rows = [
            (i, round(s, 4), h.match, h.ts, h.intent, h.query_text, h.query_id) for i, (s, _, h) in enumerate(best, 1)
        ]
    else:
        columns = ["rank", "score", "match", "found_in", "ts", "intent", "query_text", "answer", "query_id"]
        rows = [
            (
                i,
                round(s, 4),
                h.match,
                field,
                h.ts,
                h.intent,
                questions.get(h.query_id) if field == "answers" else h.query_text,
                h.query_text if field == "answers" else None,
                h.query_id,
            )
            for i, (s, field, h) in enumerate(best, 1)
        ]
    if args.explain:
        from querylog.analytics._search_text import explain_match, fold_one

        # A company typed with its particle (네이버는) was searched as its name (네이버): explained as searched.
        typed = list(dict.fromkeys(fold_one(asked).split()))
        mentions = aliases.mentions(typed) if aliases is not None else []
        searched_as = {typed[m.start]: m.typed for m in mentions if m.end == m.start + 1}
        # Outside the exact tier the index says what matched (a grouped row: its question's hit).
        told = [g.why for g in groups] if args.group else [h.why for _, _, h in best]

        def why(row: tuple[Any, ...], reason: str) -> str:
            if reason:
                return reason
            text = row[columns.index("query_text")]
            if "found_in" in columns and row[columns.index("found_in")] == "answers":
                text = row[columns.index("answer")]
            reason = explain_match(text or "", asked, searched_as)
            if args.where != "queries" and "not found" in reason:
                return "in the answer it got"  # a grouped row shows the question; the answer matched
            return reason

        rows = [(*row, why(row, reason)) for row, reason in zip(rows, told, strict=True)]
        columns = [*columns, "why"]
    if args.format == "json":
        sys.stdout.write(format_rows(columns, rows, "json"))
    elif rows:
        sys.stdout.write(format_rows(columns, rows, "table"))
    if rows and more:  # say how to see them (on stderr: a JSON reader is told its rows were cut, too)
        how = (
            "--limit N shows more"
            if len(rows) < MAX_LIMIT
            else "the most --limit takes: narrow the search (--since, --until, --intent, --env) to see the rest"
        )
        print(f"querylog search: the best {len(rows)} shown; {how}", file=sys.stderr)
    elif not rows:
        kind = {"queries": "queries", "answers": "answers", "both": "queries or answers"}[args.where]
        print(f"no {kind} match {shortened(asked, 80)!r}{_filters_said(args)}", file=sys.stderr)
        known = sorted({i for s in searches for i in s.intents()}) if args.intent not in (None, UNCLASSIFIED) else []
        if known and args.intent not in known:
            without = "" if UNCLASSIFIED in known else f" (and {UNCLASSIFIED} for queries without one)"
            print(
                f"querylog search: no query has intent {args.intent!r}; the index holds {', '.join(known)}{without}",
                file=sys.stderr,
            )
        if args.where != "queries" and not settings.capture_answers:
            print(
                "querylog search: answers are not recorded here (QUERYLOG_CAPTURE_ANSWERS=0): only those a producer "
                "sent before, or recorded before it was off, can match",
                file=sys.stderr,
            )
        elif any(s.field == "answers" and s.indexed() == 0 for s in searches):
            print(
                "querylog search: no query in the lake has its answer recorded: answers are kept from schema v2 on "
                "(a release before it kept none; a producer sends one with `q.responded(answer=…)`)",
                file=sys.stderr,
            )
    return 0


def _filters_said(args: argparse.Namespace) -> str:
    """The filters given, as a no-match line names them: `` with env 'prod', since 2026-12-01 00:00 UTC``."""
    given = [f"intent {args.intent!r}"] if args.intent else []
    given += [
        f"{flag} {' or '.join(map(repr, values))}"
        for flag, values in (("env", args.env), ("service", args.service))
        if values
    ]
    given += [
        f"{word} {when:%Y-%m-%d %H:%M} UTC" for word, when in (("since", args.since), ("before", args.until)) if when
    ]
    return f" with {', '.join(given)}" if given else ""


def _aliases(settings: Settings) -> Any:
    """The alias file in force, read now (a bad one stops the search, named with its line); its problems said."""
    from querylog.analytics.aliases import load_aliases

    path = settings.aliases_path
    if path is None:
        return None
    aliases = load_aliases(path)
    for problem in aliases.problems:
        print(f"querylog search: {problem}", file=sys.stderr)
    return aliases


def _synced(search: LakeSearch, catalog: Catalog) -> LakeSearch:
    """`search` with the lake's new queries indexed, said on stderr."""
    added = search.sync(catalog, progress=_progress if sys.stderr.isatty() else None)
    if added:
        print(f"querylog search: indexed {added} new {_noun(search.field, added)}", file=sys.stderr)
    return search


def _noun(field: str, n: int) -> str:
    if field == "answers":
        return "answer" if n == 1 else "answers"
    return "query" if n == 1 else "queries"


def _progress(done: int, total: int, what: str) -> None:
    print(f"\rindexing: {done}/{total} {what}", end="" if done < total else "\n", file=sys.stderr, flush=True)
