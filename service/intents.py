"""Keyword intent classifier for Korean and English questions about stocks, news and markets."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["Classification", "Intent", "classify"]


class Intent(StrEnum):
    """What a query asks for. The value is what events and dashboards carry."""

    STOCK_ANALYSIS = "stock_analysis"
    NEWS_INQUIRY = "news_inquiry"
    MARKET_OVERVIEW = "market_overview"
    COMPANY_INFO = "company_info"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """The classifier's verdict.

    `confidence` is in [0, 1]: it grows with the winning intent's keyword score and with its margin over the
    runner-up, and is 0.0 for `Intent.UNKNOWN` (no evidence at all). `keywords` lists the winning intent's
    matched keywords in order of first appearance in the text.
    """

    intent: Intent
    confidence: float
    keywords: tuple[str, ...]


# Weights: 2 = the keyword alone decides the intent; 1 = supporting evidence that is ambiguous on its own
# (전망 is said of stocks and of markets alike, 대표 also means "typical" in 대표적). Kept as a dense table,
# grouped by language and weight, because one keyword a line would make it ten screens long.
# fmt: off
_KEYWORDS: Final[dict[Intent, tuple[tuple[str, int], ...]]] = {
    Intent.STOCK_ANALYSIS: (
        ("주가", 2), ("목표주가", 2), ("목표가", 2), ("실적", 2), ("영업이익", 2), ("투자의견", 2),
        ("매수", 2), ("매도", 2), ("밸류에이션", 2), ("저평가", 2), ("고평가", 2), ("살까", 2), ("팔까", 2),
        ("사도 될까", 2), ("전망", 1), ("주식", 1), ("배당", 1), ("매출", 1), ("시가총액", 1), ("수익률", 1),
        ("떨어졌", 2), ("떨어진", 2), ("올랐", 2), ("오른", 1), ("급등", 2), ("급락", 2), ("하락", 1), ("상승", 1),
        ("PER", 2), ("PBR", 2), ("EPS", 2), ("P/E", 2),
        ("stock price", 2), ("share price", 2), ("price target", 2), ("target price", 2), ("earnings", 2),
        ("valuation", 2), ("overvalued", 2), ("undervalued", 2), ("should I buy", 2), ("should I sell", 2),
        ("buy", 2), ("sell", 2), ("upgrade", 2), ("downgrade", 2), ("market cap", 2),
        ("outlook", 1), ("forecast", 1), ("revenue", 1), ("profit", 1), ("dividend", 1), ("stock", 1),
        ("shares", 1), ("analyst", 1), ("rating", 1),
    ),
    Intent.NEWS_INQUIRY: (
        ("뉴스", 2), ("소식", 2), ("발표", 2), ("기사", 2), ("공시", 2), ("속보", 2), ("보도", 2), ("헤드라인", 2),
        ("이슈", 1), ("최근", 1), ("언론", 1),
        ("news", 2), ("headline", 2), ("announced", 2), ("announce", 2), ("announcement", 2),
        ("press release", 2), ("breaking", 2), ("what happened", 2),
        ("reported", 1), ("report", 1), ("latest", 1), ("update", 1),
    ),
    Intent.MARKET_OVERVIEW: (
        ("코스피", 2), ("코스닥", 2), ("증시", 2), ("지수", 2), ("환율", 2), ("금리", 2), ("기준금리", 2),
        ("연준", 2), ("나스닥", 2), ("다우", 2), ("원달러", 2), ("원/달러", 2), ("시황", 2),
        ("시장", 1), ("외국인", 1), ("순매수", 1), ("순매도", 1), ("달러", 1), ("인플레이션", 1), ("물가", 1),
        ("국채", 1), ("채권", 1),
        ("KOSPI", 2), ("KOSDAQ", 2), ("Fed", 2), ("FOMC", 2), ("federal reserve", 2), ("stock market", 2),
        ("index", 2), ("indices", 2), ("indexes", 2), ("interest rate", 2), ("rate cut", 2), ("rate hike", 2),
        ("exchange rate", 2), ("nasdaq", 2), ("dow jones", 2), ("S&P 500", 2), ("S&P", 2),
        ("market", 1), ("inflation", 1), ("treasury", 1), ("bond yield", 1), ("KRW", 1), ("dollar", 1),
        ("economy", 1), ("macro", 1),
    ),
    Intent.COMPANY_INFO: (
        ("대표이사", 2), ("본사", 2), ("설립", 2), ("창업", 2), ("창업자", 2), ("회장", 2), ("경영진", 2),
        ("계열사", 2), ("자회사", 2), ("지배구조", 2), ("어떤 회사", 2), ("무슨 회사", 2), ("뭐 하는", 2),
        ("뭐하는", 2), ("회사 소개", 2), ("기업 정보", 2), ("주력 사업", 2), ("사업 구조", 2),
        ("경쟁사", 2), ("경쟁 업체", 2), ("경쟁업체", 2),
        ("대표", 1), ("사업", 1), ("직원", 1), ("임직원", 1), ("라이벌", 1),
        ("CEO", 2), ("founder", 2), ("founded", 2), ("headquarters", 2), ("headquartered", 2),
        ("chairman", 2), ("subsidiary", 2), ("subsidiaries", 2), ("business model", 2), ("company profile", 2),
        ("who runs", 2), ("competitor", 2), ("competitors", 2), ("rivals", 2),
        ("business", 1), ("employees", 1), ("management", 1), ("based in", 1),
    ),
}
# fmt: on

# Latin keywords that are ordinary English words in lower case: "per share" and "fed up" must not count.
_CASE_SENSITIVE: Final = frozenset({"PER", "PBR", "Fed"})

# "What does NAVER do?" names the company in the middle, so no fixed keyword can catch it.
_PATTERNS: Final[tuple[tuple[Intent, str, int, str, re.Pattern[str]], ...]] = (
    (
        Intent.COMPANY_INFO,
        "what does … do",
        2,
        "what",
        re.compile(
            r"(?<![0-9A-Za-z])what\s+(?:does|do)\s+\S(?:.{0,60}?\S)?\s+do(?![0-9A-Za-z])", re.IGNORECASE | re.ASCII
        ),
    ),
)

# A tie between intents goes to the one listed first: a stock question that mentions news or the market is
# still, most often, about the stock.
_PRIORITY: Final = (Intent.STOCK_ANALYSIS, Intent.NEWS_INQUIRY, Intent.MARKET_OVERVIEW, Intent.COMPANY_INFO)

_HANGUL: Final = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def _compile(keyword: str) -> re.Pattern[str]:
    """Hangul keywords match as substrings, because particles attach to the word (네이버는, 주가가).

    Latin keywords match as whole words, case-insensitively unless listed in `_CASE_SENSITIVE`, and also match
    their plain -s plural. Spaces inside a keyword match any run of whitespace.
    """
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    if _HANGUL.search(keyword):
        return re.compile(body)
    # re.ASCII: under Unicode IGNORECASE the Kelvin sign would match "k", and the `in` prefilter would disagree.
    flags = re.ASCII if keyword in _CASE_SENSITIVE else re.ASCII | re.IGNORECASE
    # ASCII-only boundaries, so that "CEO는" and "NAVER의" still match: a Hangul particle is not a word char here.
    return re.compile(rf"(?<![0-9A-Za-z]){body}s?(?![0-9A-Za-z])", flags)


# Each rule carries a needle, the lower-cased first word of its keyword, that any match must contain: a plain
# `in` test rules out most of the ~150 regexes for a given query, which makes classify about ten times faster.
_RULES: Final[tuple[tuple[Intent, str, int, str, re.Pattern[str]], ...]] = (
    *(
        (intent, keyword, weight, keyword.split()[0].lower(), _compile(keyword))
        for intent in _PRIORITY
        for keyword, weight in _KEYWORDS[intent]
    ),
    *_PATTERNS,
)


@dataclass(frozen=True, slots=True)
class _Match:
    start: int
    end: int
    intent: Intent
    keyword: str
    weight: int


def _find_matches(text: str) -> list[_Match]:
    lowered = text.lower()
    found = [
        _Match(m.start(), m.end(), intent, keyword, weight)
        for intent, keyword, weight, needle, pattern in _RULES
        if needle in lowered
        for m in pattern.finditer(text)
    ]
    # A keyword inside a longer matched keyword is not separate evidence: 목표주가 is not also 주가, and
    # "stock market" is not also "stock".
    return [
        m
        for m in found
        if not any(o.start <= m.start and m.end <= o.end and (o.end - o.start) > (m.end - m.start) for o in found)
    ]


def _confidence(best: int, runner_up: int) -> float:
    # Half from strength (saturating: one decisive keyword gives 2/3, more push towards 1) and half from the
    # margin over the runner-up (1 when unopposed, 0 on a tie).
    strength = best / (best + 1)
    margin = (best - runner_up) / best
    return round(0.5 * strength + 0.5 * margin, 3)


def classify(text: str) -> Classification:
    """Classify a query by keyword evidence. Deterministic; input is expected NFC (NFD is normalised here)."""
    if not unicodedata.is_normalized("NFC", text):
        # Decomposed Hangul (macOS input) shares no code points with the keywords and would read as unknown.
        text = unicodedata.normalize("NFC", text)
    matches = _find_matches(text)
    scores: dict[Intent, int] = dict.fromkeys(_PRIORITY, 0)
    seen: set[tuple[Intent, str]] = set()
    for m in matches:
        # A keyword repeated in one query counts once: repetition is not stronger evidence.
        if (m.intent, m.keyword) not in seen:
            seen.add((m.intent, m.keyword))
            scores[m.intent] += m.weight
    ranked = sorted(_PRIORITY, key=lambda intent: -scores[intent])  # stable: ties keep priority order
    best, runner_up = ranked[0], ranked[1]
    if scores[best] == 0:
        return Classification(intent=Intent.UNKNOWN, confidence=0.0, keywords=())
    keywords: list[str] = []
    for m in sorted(matches, key=lambda m: (m.start, m.end)):
        if m.intent is best and m.keyword not in keywords:
            keywords.append(m.keyword)
    return Classification(
        intent=best,
        confidence=_confidence(scores[best], scores[runner_up]),
        keywords=tuple(keywords),
    )
