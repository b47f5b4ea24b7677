"""Search results as distinct questions: how often each was asked, when first and last, with which intents, and
the queries behind it.

People searching what users asked want "SK하이닉스 사업 구조 설명해줘" once, with ×40 beside it, not forty rows
in a row. `find_questions` asks the full-text index for the best *distinct* texts in the filters' dates (a
question asked 2,000 times takes one place, so rarer ones are found too); `group_questions` folds them into
questions and counts each one over the whole lake (within the same filters), so `times_asked` is exact even when
the question was asked more often than the search listed.

Two texts are the same question when they differ only in case, spacing between words ("네이버 주가  전망은?"
and "네이버 주가 전망은?") and full-width forms (ＳＫ is SK); the text shown is the one asked most recently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from querylog.analytics.catalog import QUERY_INTENT_SQL, Catalog, as_asked
from querylog.analytics.queries import KEY_FOLDS, QUESTION_KEY_SQL, Filters
from querylog.logging.events import UNCLASSIFIED
from querylog.logging.reformulation import lower_as_duckdb

if TYPE_CHECKING:
    from querylog.analytics.aliases import Aliases
    from querylog.analytics.search import SearchHit
    from querylog.analytics.upkeep import LakeSearch

__all__ = [
    "MAX_QUERY_IDS",
    "AskedQuestion",
    "find_questions",
    "group_hits",
    "group_questions",
    "question_key",
    "questions_answered",
    "questions_of",
    "window_hits",
]

#: The query ids a question carries, newest first; `times_asked` still counts every one.
MAX_QUERY_IDS: Final = 1000
#: How many more distinct texts `find_questions` asks the index for when the lake's filters left out too many.
_WIDEN: Final = 8


@dataclass(frozen=True, slots=True)
class AskedQuestion:
    """One distinct question among the results, with its best match score."""

    query_text: str
    score: float
    times_asked: int
    first_asked: datetime
    last_asked: datetime
    intents: tuple[str, ...]
    query_ids: tuple[str, ...]  # newest first, at most MAX_QUERY_IDS
    #: How the question's hit matched outside the exact tier ("삼전 → 삼성전자 (alias of 삼성전자)"), else "".
    why: str = ""
    #: The tier of the question's best hit: exact, alias, initials or typo (`SearchHit.match`).
    match: str = "exact"
    #: For a question found by its answer (the answers' index), the best matching answer; else "".
    answer: str = ""
    #: The pieces its best hit matched outside the exact tier (`SearchHit.found`), for a page to highlight.
    found: tuple[str, ...] = ()


def question_key(text: str) -> str:
    """What makes two questions the same: their words, lower-cased, full-width forms as ASCII, without the
    characters that draw nothing (as `queries.QUESTION_KEY_SQL` has it in SQL)."""
    return " ".join(lower_as_duckdb(text.translate(KEY_FOLDS)).split())


def _asked_sql(which: str) -> str:
    """The queries that asked (`which`: a condition on their ``query_received`` events), each with its question,
    start, env, service, release, prompt version and intent, as the `queries` view has them: ``asked a``,
    ``intents i``."""
    return f"""
asked AS (
    SELECT query_id, min(ts) AS ts, {as_asked("query_text")} AS query_text, {as_asked("env")} AS env,
           {as_asked("service")} AS service, {as_asked("release")} AS release,
           {as_asked("prompt_version")} AS prompt_version
    FROM events
    WHERE event_type = 'query_received' AND {which}
    GROUP BY query_id
), intents AS (
    SELECT query_id, {QUERY_INTENT_SQL} AS intent
    FROM events
    WHERE event_type IN ('intent_classified', 'query_completed', 'query_failed')
      AND query_id IN (SELECT query_id FROM asked)
    GROUP BY query_id
)"""


#: The filters on ``asked a`` and ``intents i`` (`_asked_sql`), with `_filter_params`.
_IN_FILTERS: Final = f"""
WHERE ($since IS NULL OR a.ts >= $since) AND ($until IS NULL OR a.ts < $until)
  AND (len($intents) = 0 OR list_contains($intents, coalesce(i.intent, '{UNCLASSIFIED}')))
  AND (len($envs) = 0 OR list_contains($envs, a.env))
  AND (len($services) = 0 OR list_contains($services, a.service))
  AND (len($releases) = 0 OR list_contains($releases, a.release))
  AND (len($prompt_versions) = 0 OR list_contains($prompt_versions, a.prompt_version))
"""


def _filter_params(f: Filters) -> dict[str, Any]:
    return {
        "since": f.since,
        "until": f.until,
        "intents": list(f.intents),
        "envs": list(f.envs),
        "services": list(f.services),
        "releases": list(f.releases),
        "prompt_versions": list(f.prompt_versions),
    }


_ASKED_SQL: Final = f"""
WITH {_asked_sql(f"list_contains($keys, {QUESTION_KEY_SQL})")}
SELECT a.query_text, a.query_id, a.ts, coalesce(i.intent, '{UNCLASSIFIED}') AS intent
FROM asked a LEFT JOIN intents i USING (query_id)
{_IN_FILTERS}
ORDER BY a.ts DESC, a.query_id
"""


def group_questions(
    catalog: Catalog,
    found: Sequence[tuple[float, str]],
    *,
    limit: int | None,
    filters: Filters | None = None,
) -> list[AskedQuestion]:
    """The best `limit` distinct questions among `found` ((score, question text) per matching query, in any
    order; every one with None), ranked by best score, then most recently asked; each counted over the lake within
    `filters`."""
    f = filters or Filters()
    best: dict[str, float] = {}
    for score, text in found:
        key = question_key(text)
        if score > best.get(key, float("-inf")):
            best[key] = score
    if not best:
        return []
    # Every spelling of each question (its key), not only those the index returned: the index gives a question's
    # spellings as distinct texts, and one older or rarer than its best `limit` went uncounted.
    rows = catalog.arrow(_ASKED_SQL, {"keys": sorted(best), **_filter_params(f)}).to_pylist()
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # newest first
        by_key.setdefault(question_key(row["query_text"]), []).append(row)
    questions = []
    for key, asked in by_key.items():
        if key not in best:
            continue
        intents = sorted({row["intent"] for row in asked if row["intent"]})
        questions.append(
            AskedQuestion(
                query_text=asked[0]["query_text"],
                score=best[key],
                times_asked=len(asked),
                first_asked=asked[-1]["ts"],
                last_asked=asked[0]["ts"],
                intents=tuple(intents),
                query_ids=tuple(row["query_id"] for row in asked[:MAX_QUERY_IDS]),
            )
        )
    questions.sort(key=lambda q: (-q.score, -q.last_asked.timestamp(), q.query_text))
    return questions[:limit]


def questions_of(catalog: Catalog, query_ids: Sequence[str]) -> dict[str, str]:
    """The question each of `query_ids` asked (for hits found in the answers)."""
    if not query_ids:
        return {}
    table = catalog.arrow(
        "SELECT query_id, any_value(query_text) AS query_text FROM events "
        "WHERE event_type = 'query_received' AND list_contains($ids, query_id) GROUP BY query_id",
        {"ids": list(query_ids)},
    )
    return dict(zip(table["query_id"].to_pylist(), table["query_text"].to_pylist(), strict=True))


#: Every question whose query got one of `$answers` and is within the filters (the query's own start, intent, env,
#: release and prompt version): the answers' index gives each answer text once.
_ANSWERED_SQL: Final = f"""
WITH answered AS (
    SELECT DISTINCT query_id, answer_text AS answer
    FROM events
    WHERE event_type = 'response_generated' AND list_contains($answers, answer_text)
), {_asked_sql("query_id IN (SELECT query_id FROM answered)")}
SELECT DISTINCT n.answer, a.query_text AS question
FROM answered n JOIN asked a USING (query_id) LEFT JOIN intents i USING (query_id)
{_IN_FILTERS}
"""


def questions_answered(
    catalog: Catalog, answers: Sequence[str], filters: Filters | None = None
) -> dict[str, list[str]]:
    """The questions that got each of `answers`, by queries within `filters`: a canned answer ("죄송합니다, …") is
    one text to the answers' index, however many questions got it."""
    if not answers:
        return {}
    params = {"answers": sorted(set(answers)), **_filter_params(filters or Filters())}
    rows = catalog.arrow(_ANSWERED_SQL, params)
    out: dict[str, list[str]] = {}
    for answer, question in zip(rows["answer"].to_pylist(), rows["question"].to_pylist(), strict=True):
        if question:
            out.setdefault(answer, []).append(question)
    return out


def group_hits(
    catalog: Catalog, hits: Sequence[tuple[float, str, Any]], *, limit: int | None, filters: Filters | None = None
) -> list[AskedQuestion]:
    """`group_questions` for search hits as (score, index field, hit): a hit from the answers' index counts for
    every question that got its text (its own text is the answer). Each question carries its best hit's tier and
    `why`."""
    # Within the filters only: the index applies the dates and one intent, the lake the rest (a question is not
    # listed for an answer its queries in the filters never got).
    also = questions_answered(catalog, [hit.query_text for _, field, hit in hits if field == "answers"], filters)
    found: list[tuple[float, str, str, Any]] = []  # (score, question, field, hit), best first
    for score, field, hit in hits:
        if field == "queries":
            found.append((score, hit.query_text, field, hit))
            continue
        for question in dict.fromkeys(also.get(hit.query_text, ())):
            found.append((score, question, field, hit))
    questions = group_questions(catalog, [(s, text) for s, text, _, _ in found], limit=limit, filters=filters)
    told = {question_key(hit.query_text): hit.why for _, field, hit in hits if field == "queries" and hit.why}
    tiers: dict[str, str] = {}
    answers: dict[str, str] = {}
    pieces: dict[str, tuple[str, ...]] = {}
    for _, text, field, hit in found:  # best first: a question's first is its best
        tiers.setdefault(question_key(text), hit.match)
        pieces.setdefault(question_key(text), hit.found)
        if field == "answers":
            answers.setdefault(question_key(text), hit.query_text)
    return [
        dataclasses.replace(
            q,
            why=told.get(key, ""),
            match=tiers.get(key, "exact"),
            answer=answers.get(key, ""),
            found=pieces.get(key, ()),
        )
        for q in questions
        for key in [question_key(q.query_text)]
    ]


def window_hits(
    search: LakeSearch,
    text: str,
    *,
    limit: int,
    filters: Filters | None = None,
    aliases: Aliases | None = None,
    distinct: bool = False,
) -> list[SearchHit]:
    """The index's best `limit` hits for `text` within what it can filter by itself: the dates, both ends, and the
    intent when exactly one is chosen. The lake applies the rest (env, release, prompt version, several intents).

    An intent of "unclassified" is left to the lake too: an older index holds those queries without one."""
    f = filters or Filters()
    intent = f.intents[0] if len(f.intents) == 1 and f.intents[0] != UNCLASSIFIED else None
    hits = search.search(
        text, limit=limit, intent=intent, since=f.since, until=f.until, aliases=aliases, distinct=distinct
    )
    return hits  # type: ignore[return-value]  # LakeSearch's index is a SearchIndex: its hits are SearchHits


def find_questions(
    catalog: Catalog,
    searches: Sequence[LakeSearch],
    text: str,
    *,
    limit: int,
    filters: Filters | None = None,
    aliases: Aliases | None = None,
) -> list[AskedQuestion]:
    """The best `limit` distinct questions matching `text` within `filters`, from the indexes of `searches` (the
    questions', the answers', or both), ranked and counted as `group_questions` does.

    Each index gives its best distinct texts in the dates (and intent); the lake counts them within every filter.
    When the filters the index cannot apply (env, release, several intents) leave fewer than `limit` questions
    that rank above every text not yet fetched, the index is asked for `_WIDEN` times as many, until they do or it
    has no more: a question is never missed because another was asked more often or in another env. (A question
    found by its answer may have been asked again since, with an answer that did not match: its place among the
    last ones listed is then approximate.)"""
    f = filters or Filters()
    wanted = 2 * limit  # room for a question asked with two spellings (spacing, case) without a second round
    while True:
        found = [
            (search.field, window_hits(search, text, limit=wanted, filters=f, aliases=aliases, distinct=True))
            for search in searches
        ]
        best = _best_per_query([(float(h.score), field, h) for field, hits in found for h in hits])
        questions = group_hits(catalog, best, limit=None, filters=f)  # a hit in the answers may be many questions
        cut = [hits[-1] for _, hits in found if len(hits) >= wanted]  # the weakest hit of each index not exhausted
        if not cut or _ranked_above(questions, max((float(h.score), h.ts) for h in cut)) >= limit:
            return questions[:limit]
        wanted *= _WIDEN


def _best_per_query(hits: list[tuple[float, str, Any]]) -> list[tuple[float, str, Any]]:
    """Each query once, by its best hit (a query found in its question and its answer), best first."""
    best: dict[str, tuple[float, str, Any]] = {}
    for found in hits:
        held = best.get(found[2].query_id)
        if held is None or found[0] > held[0]:
            best[found[2].query_id] = found
    return sorted(best.values(), key=lambda f: (-f[0], -f[2].ts.timestamp(), f[2].query_id))


def _ranked_above(questions: Sequence[AskedQuestion], cut: tuple[float, datetime]) -> int:
    """How many of `questions` rank at or above `cut` (a score and a time): no text the index did not return can
    outrank them, since every such text ranks below its index's weakest hit returned."""
    return sum(1 for q in questions if (q.score, q.last_asked) >= cut)
