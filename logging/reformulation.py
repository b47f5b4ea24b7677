"""When a query counts as reformulated: one rule for the lake's `queries` view and the metrics fold.

A query is reformulated when the next query of its session came within `WINDOW_S` and says the same thing again:
the two texts' tokens have a Jaccard similarity of at least `SIMILARITY`. A text's tokens (whitespace removed, lower
case): each character that is not ASCII (a Hangul syllable says enough alone), each pair of neighbouring ASCII
characters (single letters would make any two English sentences alike), and each company it names (`Names`, from
the alias file), as one token whatever name it goes by:

- "네이버 주가 전망은?" then "네이버 주가 전망 알려줘"; "삼성전자 주가" then "삼전 주가 어때"; "삼성전자" then
  "Samsung Electronics"; "how do I reset my password" then "how to reset password?" are;
- "삼성전자 주가 전망" then "삼성전자 배당 일정" (a new question about the same company), "How do I reset my
  password?" then "What are your opening hours?" are not;
- two texts that name only different companies are not, however alike the rest ("price target for Kakao?" then
  "price target for NAVER?"), unless one's name is part of the other's ("카카오 금리" then "카카오뱅크 금리").

The lake computes it in SQL (`sql_columns` and `sql_reformulated`), the metrics fold with `asked` and
`reformulates`; a property test checks that the two agree.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from querylog.logging.events import NOT_CAPTURED

__all__ = [
    "SIMILARITY",
    "WINDOW_S",
    "Asked",
    "Names",
    "asked",
    "lower_as_duckdb",
    "reformulates",
    "sql_columns",
    "sql_reformulated",
]

WINDOW_S: Final = 300
SIMILARITY: Final = 0.5
#: What DuckDB's regexp_replace(text, '\s+', '', 'g') removes: RE2's \s, ASCII whitespace but the vertical tab.
_SPACE: Final = re.compile(r"[\t\n\f\r ]+")
_NOT_ASCII: Final = re.compile(r"[^\x00-\x7f]")
_ASCII_RUN: Final = re.compile(r"[\x00-\x7f]+")
#: Latin names this short (amd, mu, sk) would be found inside other words once spaces are gone: left out.
_MIN_LATIN: Final = 4


@dataclass(frozen=True)
class Names:
    """Company names as the rule matches them: name key (lower case, no whitespace) → canonical name."""

    canonical: Mapping[str, str]
    #: The names as one RE2 alternation, for the lake's SQL.
    pattern: str = field(init=False)
    #: The same names as a compiled trie of alternatives, for `asked`: Python's `re` tries a flat alternation's
    #: hundreds of names one by one at every position (40 µs an English text), a trie's one branch.
    matcher: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        usable = [k for k in self.canonical if k and not (k.isascii() and len(k) < _MIN_LATIN)]
        # Longest first: alternation takes the first alternative that matches, so 카카오뱅크 is read as 카카오뱅크,
        # not as 카카오 and 뱅크. The trie's optional tails are greedy: the longest name at a position, the same.
        ordered = sorted(usable, key=lambda k: (-len(k), k))
        object.__setattr__(self, "pattern", "|".join(re.escape(k) for k in ordered))
        trie: dict[str, Any] = {}
        for key in ordered:
            node = trie
            for char in key:
                node = node.setdefault(char, {})
            node[""] = {}  # a name ends here
        object.__setattr__(self, "matcher", re.compile(_trie_pattern(trie)))


def _trie_pattern(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


@dataclass(frozen=True, slots=True)
class Asked:
    """A query text as the rule compares it."""

    tokens: frozenset[str]
    companies: frozenset[str] = frozenset()  # canonical names
    found: frozenset[str] = frozenset()  # the names as the text wrote them (name keys)


#: Marks a company's token: no other token starts with it (one-character tokens aside, which it cannot be).
_COMPANY: Final = "\ue000"


def lower_as_duckdb(text: str) -> str:
    """`text` lower-cased as DuckDB's lower() does it, which the lake's side uses: İ is i (Python adds a combining
    dot), and Σ is σ wherever it stands (Python writes ς at a word's end). Those are the only two places where the
    two lower case differently."""
    if text.isascii():
        return text.lower()
    text = text.replace("İ", "I")
    if "Σ" in text:
        return "".join(char.lower() for char in text)
    return text.lower()


def _compact(text: str) -> str:
    return lower_as_duckdb(_SPACE.sub("", text))


def _tokens(compact: str) -> set[str]:
    tokens = set() if compact.isascii() else set(_NOT_ASCII.findall(compact))
    for run in _ASCII_RUN.findall(compact):  # its pairs, or itself alone between other characters
        tokens.update(map(operator.add, run, run[1:]) if len(run) > 1 else (run,))
    return tokens


def asked(text: str, names: Names | None = None) -> Asked:
    if text == NOT_CAPTURED:  # no text was recorded: it says nothing, so it never asks another query again
        return Asked(frozenset())
    compact = _compact(text)
    if names is None or not names.pattern:
        return Asked(frozenset(_tokens(compact)))
    found: list[str] = []

    def taken(match: re.Match[str]) -> str:
        found.append(match.group())
        return ""

    rest = names.matcher.sub(taken, compact)  # one pass: the names found, and the text without them
    companies = frozenset(names.canonical[k] for k in found)
    return Asked(frozenset(_tokens(rest) | {_COMPANY + c for c in companies}), companies, frozenset(found))


def _similar(a: frozenset[str], b: frozenset[str]) -> bool:
    union = len(a | b)
    return union > 0 and len(a & b) / union >= SIMILARITY


def _named_apart(first: Asked, then: Asked) -> bool:
    """Both name companies, none the same, and no name is part of another (카카오, 카카오뱅크 are not apart)."""
    if not (first.companies and then.companies) or first.companies & then.companies:
        return False
    return not any(a in b or b in a for a in first.found for b in then.found)


def reformulates(first: Asked, then: Asked) -> bool:
    """Whether `then`, the session's next query, asks `first` again (the time window aside)."""
    return not _named_apart(first, then) and _similar(first.tokens, then.tokens)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_tokens(compact: str) -> str:
    """`_tokens` in DuckDB: the characters that are not ASCII, then each ASCII run's pairs (those that start at an
    even offset, then at an odd one), or the run itself when it is one character."""
    runs = f"regexp_extract_all({compact}, '[\\x00-\\x7f]+')"
    pairs = "list_concat(regexp_extract_all(r, '..'), regexp_extract_all(r[2:], '..'))"
    return (
        f"list_concat(regexp_extract_all({compact}, '[^\\x00-\\x7f]'), "
        f"flatten(list_transform({runs}, lambda r: CASE WHEN length(r) = 1 THEN [r] ELSE {pairs} END)))"
    )


def sql_columns(text: str, names: Names | None) -> list[list[tuple[str, str]]]:
    """What `sql_reformulated` compares, computed once per query from its text expression: stages of (column,
    DuckDB expression) pairs, each stage's expressions reading the columns of the stages before."""
    # No text recorded (`NOT_CAPTURED`): no token, so never similar to another query.
    said = (
        f"CASE WHEN {text} = {_sql_string(NOT_CAPTURED)} THEN '' "
        rf"ELSE lower(regexp_replace({text}, '\s+', '', 'g')) END"
    )
    if names is None or not names.pattern:
        return [[("_tokens", f"list_distinct({_sql_tokens(said)})")]]
    pattern = _sql_string(names.pattern)
    table = ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in sorted(names.canonical.items()))
    found = f"list_distinct(regexp_extract_all(_said, {pattern}))"
    companies = f"list_sort(list_distinct(list_transform(_found_list, lambda x: MAP {{{table}}}[x])))"
    marked = f"list_transform(_companies, lambda c: {_sql_string(_COMPANY)} || c)"
    rest = f"regexp_replace(_said, {pattern}, '', 'g')"
    return [
        [("_said", said)],
        [("_found_list", found), ("_rest", rest)],
        [
            ("_companies", companies),
            # The names found joined by a character no name holds: "is x part of one of them" becomes contains().
            ("_found", "list_aggregate(_found_list, 'string_agg', '\x01')"),
        ],
        [("_tokens", f"list_distinct(list_concat({_sql_tokens('_rest')}, {marked}))")],
    ]


def sql_reformulated(next_of: str, names: Names | None) -> str:
    """The rule as a DuckDB expression over the columns of `sql_columns`; `next_of` wraps a column name into the
    next query's value (e.g. ``lead({}) OVER next_in_session``)."""
    a, b = "_tokens", next_of.format("_tokens")
    both = f"len(list_intersect({a}, {b}))"  # each list holds a token once: the union's size follows
    sizes = f"len({a}) + len({b})"
    similar = f"(CASE WHEN {sizes} = 0 THEN false ELSE {both} / ({sizes} - {both}) >= {SIMILARITY} END)"
    if names is None or not names.pattern:
        return similar
    companies, next_companies = "_companies", next_of.format("_companies")
    found, next_found = "_found", next_of.format("_found")
    part_of = (
        f"(len(list_filter(string_split({found}, '\x01'), lambda x: contains({next_found}, x))) > 0 "
        f"OR len(list_filter(string_split({next_found}, '\x01'), lambda y: contains({found}, y))) > 0)"
    )
    apart = (
        f"(len({companies}) > 0 AND len({next_companies}) > 0 "
        f"AND len(list_intersect({companies}, {next_companies})) = 0 AND NOT {part_of})"
    )
    return f"(NOT {apart} AND {similar})"
