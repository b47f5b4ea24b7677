"""``querylog aliases``: check an alias file, and show what a name finds in search."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "aliases",
        help="check the alias file search uses, or show every name of a company (현대차 → Hyundai Motor, 005380)",
        description="Reads the alias file in force (QUERYLOG_ALIASES: the bundled starter listing by default, or "
        "--file) as `querylog search` would. With no NAME, reports how many companies it lists and every problem: "
        "a line that cannot be read stops it (exit 2, with the line); a name listed under two companies or too short "
        "to search by is reported and left out, search going on without it (exit 1: the file is not clean, for a CI "
        "check; 0 when it is). With NAMEs, prints each one's company and every name "
        "that finds it, and the other companies' longer names that are kept apart (카카오 → 카카오뱅크); exit 1 "
        "when none of them is in the file, as grep does. Format: docs/search.md.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="names to look up, e.g. 현대차 TSLA 엘지엔솔")
    p.add_argument("--file", metavar="FILE", help="an alias file to read instead of QUERYLOG_ALIASES (a CSV path)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.analytics.aliases import AliasError, load_aliases, name_key

    if any(not name.strip() for name in args.names):
        print("querylog aliases: an empty name names no company; give a name, e.g. 현대차", file=sys.stderr)
        return 2
    if args.file is not None:
        settings = dataclasses.replace(settings, aliases=args.file)
    path = settings.aliases_path
    if path is None:
        print("querylog aliases: QUERYLOG_ALIASES is off: search uses no alias file", file=sys.stderr)
        return 2 if args.names else 0
    try:
        aliases = load_aliases(path)
    except (AliasError, OSError) as exc:
        print(f"querylog aliases: the alias file cannot be used: {exc}", file=sys.stderr)
        return 2
    for problem in aliases.problems:
        print(f"querylog aliases: {problem}", file=sys.stderr)
    if not args.names:
        names = sum(len(aliases.keys(c)) for c in aliases.companies)
        problems = f", {len(aliases.problems)} problem(s) above" if aliases.problems else ", no problems"
        print(f"{path}: {len(aliases.companies)} companies, {names} names{problems}")
        return 1 if aliases.problems else 0
    from querylog.analytics._search_text import fold_one

    unknown = 0
    for name in args.names:
        company, read_as = aliases.company(name), None
        if company is None:  # as search reads it: 삼성전자의 is 삼성전자 and its particle
            words = fold_one(name).split()
            found = aliases.mentions(words)
            if len(found) == 1 and (found[0].start, found[0].end) == (0, len(words)):
                company, read_as = found[0].company, found[0].typed
        if company is None:
            print(f"{name}: not in {path.name}: search finds it as typed (and 초성, typos)")
            unknown += 1
            continue
        print(f"{name}: {company.canonical} (line {company.line})")
        if read_as is not None:
            print(f"  read as: {read_as} (search leaves the particle out)")
        print(f"  found as: {', '.join(n for n in company.names if aliases.company(n) is company)}")
        apart = aliases.masks(company, name_key(read_as or name))
        if apart:
            print(f"  kept apart: {', '.join(apart)}")
    return 1 if unknown == len(args.names) else 0
