"""Tests for the keyword intent classifier."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from querylog.service import intents
from querylog.service.intents import Classification, Intent, classify

CASES: list[tuple[str, Intent]] = [
    # Asked in the demo ("{c} 경쟁사는?") and by users: who a company competes with is about the company.
    ("SK하이닉스 경쟁사는?", Intent.COMPANY_INFO),
    ("LG에너지솔루션은 왜 떨어졌나요", Intent.STOCK_ANALYSIS),  # why a stock moved: the demo asks it
    ("테슬라 오늘 왜 올랐어?", Intent.STOCK_ANALYSIS),
    ("코스피 하락 이유", Intent.MARKET_OVERVIEW),  # the market's move stays the market's
    ("Who are Tesla's competitors?", Intent.COMPANY_INFO),
    # Korean, particles attached to the keyword or the company name
    ("네이버는 요즘 주가가 어때?", Intent.STOCK_ANALYSIS),
    ("삼성전자의 목표주가 알려줘", Intent.STOCK_ANALYSIS),
    ("SK하이닉스 지금 매수해도 될까요", Intent.STOCK_ANALYSIS),
    ("현대차 실적이 좋아졌나요", Intent.STOCK_ANALYSIS),
    ("카카오 PER은 몇 배야", Intent.STOCK_ANALYSIS),
    ("삼성전자 관련 뉴스 있어?", Intent.NEWS_INQUIRY),
    ("SK하이닉스가 오늘 발표한 소식", Intent.NEWS_INQUIRY),
    ("카카오 공시 나왔나", Intent.NEWS_INQUIRY),
    ("오늘 코스피는 어땠어", Intent.MARKET_OVERVIEW),
    ("원달러 환율이 왜 올라?", Intent.MARKET_OVERVIEW),
    ("코스피 전망", Intent.MARKET_OVERVIEW),
    ("연준이 금리를 내리면 증시는?", Intent.MARKET_OVERVIEW),
    ("외국인 순매수 현황", Intent.MARKET_OVERVIEW),
    ("카카오 대표이사가 누구야", Intent.COMPANY_INFO),
    ("현대차 본사는 어디에 있나요", Intent.COMPANY_INFO),
    ("네이버는 뭐 하는 회사야", Intent.COMPANY_INFO),
    ("LG에너지솔루션은 언제 설립됐어", Intent.COMPANY_INFO),
    # English, any case
    ("Should I buy Tesla?", Intent.STOCK_ANALYSIS),
    ("NVIDIA price target", Intent.STOCK_ANALYSIS),
    ("apple EARNINGS this quarter", Intent.STOCK_ANALYSIS),
    ("What is Apple's market cap?", Intent.STOCK_ANALYSIS),
    ("Any news on Apple?", Intent.NEWS_INQUIRY),
    ("What did Tesla announce today", Intent.NEWS_INQUIRY),
    ("latest headlines about NVIDIA", Intent.NEWS_INQUIRY),
    ("How is the KOSPI doing", Intent.MARKET_OVERVIEW),
    ("will the Fed cut rates", Intent.MARKET_OVERVIEW),
    ("stock market outlook", Intent.MARKET_OVERVIEW),
    ("Who is the CEO of Tesla?", Intent.COMPANY_INFO),
    ("What does NVIDIA do?", Intent.COMPANY_INFO),
    ("where is Apple headquartered", Intent.COMPANY_INFO),
    # Mixed Korean and English
    ("NAVER의 CEO는?", Intent.COMPANY_INFO),
    ("Tesla 주가 전망", Intent.STOCK_ANALYSIS),
    ("KOSPI 지수 오늘", Intent.MARKET_OVERVIEW),
    ("SK하이닉스 HBM news", Intent.NEWS_INQUIRY),
    # Nothing to go on
    ("안녕하세요", Intent.UNKNOWN),
    ("hello there", Intent.UNKNOWN),
    ("", Intent.UNKNOWN),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_classifies_korean_english_and_mixed_queries(text: str, expected: Intent) -> None:
    assert classify(text).intent is expected


@pytest.mark.parametrize(("text", "expected"), [case for case in CASES if case[1] is not Intent.UNKNOWN])
def test_nfd_input_normalised_to_nfc_classifies_the_same(text: str, expected: Intent) -> None:
    decomposed = unicodedata.normalize("NFD", text)
    assert classify(unicodedata.normalize("NFC", decomposed)).intent is expected


def test_decomposed_hangul_is_normalised_rather_than_missed() -> None:
    decomposed = unicodedata.normalize("NFD", "삼성전자 주가")
    assert decomposed != "삼성전자 주가"
    assert classify(decomposed).intent is Intent.STOCK_ANALYSIS


def test_latin_keywords_match_whole_words_only() -> None:
    # "sell" inside "bestseller", "index" inside "indexer", "news" inside "newsletter" are not keywords.
    assert classify("bestseller indexer newsletter").intent is Intent.UNKNOWN


def test_case_sensitive_acronyms_do_not_match_ordinary_words() -> None:
    assert classify("I am fed up").intent is Intent.UNKNOWN
    assert classify("costs per unit").intent is Intent.UNKNOWN
    assert classify("삼성전자 PER").intent is Intent.STOCK_ANALYSIS


def test_keyword_inside_a_longer_keyword_counts_once() -> None:
    result = classify("삼성전자 목표주가")
    assert result.keywords == ("목표주가",)
    assert classify("stock market today").keywords == ("stock market",)


def test_keywords_listed_in_order_of_appearance() -> None:
    assert classify("최근 삼성전자 뉴스").keywords == ("최근", "뉴스")


def test_unknown_has_zero_confidence_and_no_keywords() -> None:
    assert classify("오늘 날씨 어때") == Classification(intent=Intent.UNKNOWN, confidence=0.0, keywords=())


def test_confidence_grows_with_margin() -> None:
    unopposed = classify("삼성전자 주가")
    contested = classify("삼성전자 주가 뉴스")  # one stock keyword against one news keyword: a tie
    assert unopposed.confidence > contested.confidence
    assert contested.intent is Intent.STOCK_ANALYSIS  # ties go to the earlier intent in the priority order


def test_repeated_keyword_is_not_stronger_evidence() -> None:
    assert classify("주가 주가 주가").confidence == classify("주가").confidence


def test_intent_values_are_the_event_strings() -> None:
    assert [i.value for i in Intent] == [
        "stock_analysis",
        "news_inquiry",
        "market_overview",
        "company_info",
        "unknown",
    ]
    assert classify("코스피").intent == "market_overview"


def test_every_keyword_belongs_to_one_intent_only() -> None:
    seen: dict[str, Intent] = {}
    for intent, keywords in intents._KEYWORDS.items():
        for keyword, weight in keywords:
            assert weight in (1, 2)
            assert keyword.casefold() not in seen, f"{keyword!r} listed for {seen.get(keyword.casefold())} too"
            seen[keyword.casefold()] = intent


@given(st.text(max_size=200))
def test_any_text_gives_a_valid_deterministic_classification(text: str) -> None:
    first = classify(text)
    assert first == classify(text)
    assert 0.0 <= first.confidence <= 1.0
    assert (first.intent is Intent.UNKNOWN) == (first.keywords == ())


_KEYWORD_TEXT = [keyword for keywords in intents._KEYWORDS.values() for keyword, _ in keywords]
# Non-ASCII letters that Unicode case folding equates with ASCII ones (long s ~ s, dotless i ~ i, Kelvin ~ k).
_LOOKALIKES = str.maketrans({"s": "\u017f", "i": "\u0131", "k": "\u212a"})


@given(
    st.lists(
        st.one_of(
            st.sampled_from(_KEYWORD_TEXT),
            st.sampled_from(_KEYWORD_TEXT).map(lambda keyword: keyword.lower().translate(_LOOKALIKES)),
            st.sampled_from(["는", "의", "가", "s", "S", "'s", " ", "  ", "x", "KOSPI", "what does X do"]),
            st.text(max_size=5),
        ),
        max_size=12,
    ).map("".join)
)
def test_needle_prefilter_never_hides_a_match(text: str) -> None:
    # classify skips a rule whose needle is not in the lower-cased text; that is only sound if every match
    # of the rule's regex implies the needle is there.
    for _, keyword, _, needle, pattern in intents._RULES:
        if pattern.search(text):
            assert needle in text.lower(), keyword
