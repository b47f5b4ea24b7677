"""Search that understands names, measured on a labelled set: for each kind of name (alias, ticker, English name,
spacing, 초성, typo), recall of the queries about the company meant, and wrong hits (queries about another)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from querylog.analytics.aliases import STARTER, Aliases, load_aliases
from querylog.analytics.search import SearchIndex

T0 = datetime(2026, 11, 1, tzinfo=UTC)

# (company, question): what users of a Korean stock assistant ask, naming each company in several ways.
ASKED: tuple[tuple[str, str], ...] = (
    ("현대자동차", "현대차 실적 어때"),
    ("현대자동차", "현대자동차 배당 언제야"),
    ("현대자동차", "Hyundai Motor earnings this quarter"),
    ("현대자동차", "005380 목표주가"),
    ("현대자동차", "현대 자동차 전기차 판매량"),
    ("현대차증권", "현대차증권 리포트 요약해줘"),
    ("삼성전자", "삼성전자 주가 전망"),
    ("삼성전자", "삼전 언제 사야 돼"),
    ("삼성전자", "삼성 전자 배당 일정"),
    ("삼성전자", "Samsung Electronics HBM news"),
    ("삼성전자", "005930 외국인 매수"),
    ("삼성SDI", "삼성SDI 배터리 수주"),
    ("삼성바이오로직스", "삼바 4공장 가동"),
    ("삼성바이오로직스", "삼성바이오로직스 실적"),
    ("SK하이닉스", "SK하이닉스 HBM 점유율"),
    ("SK하이닉스", "하이닉스 주가 왜 올라"),
    ("SK하이닉스", "SK hynix earnings call"),
    ("SK하이닉스", "000660 공매도"),
    ("LG에너지솔루션", "엘지엔솔 북미 공장"),
    ("LG에너지솔루션", "LG에너지솔루션 실적 발표"),
    ("LG에너지솔루션", "LG엔솔 주가"),
    ("NAVER", "네이버 주가 알려줘"),
    ("NAVER", "NAVER 광고 매출"),
    ("NAVER", "035420 실적"),
    ("카카오", "카카오 주가 전망"),
    ("카카오", "Kakao 택시 분사"),
    ("카카오뱅크", "카카오뱅크 대출 금리"),
    ("카카오뱅크", "카뱅 주담대"),
    ("카카오뱅크", "카카오 뱅크 예금 이자"),  # another company's name, spaced: still not 카카오
    ("카카오페이", "카카오페이 결제액"),
    ("셀트리온", "셀트리온 신약 허가"),
    ("셀트리온제약", "셀트리온제약 주가"),
    ("NVIDIA", "엔비디아 실적 발표 언제야"),
    ("NVIDIA", "NVIDIA Blackwell 출하"),
    ("NVIDIA", "NVDA 옵션 만기"),
    ("Tesla", "테슬라 로보택시"),
    ("Tesla", "TSLA 인도량"),
    ("Tesla", "Tesla delivery numbers"),
    ("Micron", "마이크론 HBM3E"),
    ("Micron", "MU 실적 가이던스"),
    (None, "must read market news today"),  # 'mu' must not match inside must
    (None, "환율 전망 알려줘"),
    (None, "코스피 지수 어때"),
)


@dataclass(frozen=True)
class Case:
    kind: str
    query: str
    company: str
    spelled: str | None = None  # 초성 and typo find the spelling they approximate, not every alias of it


CASES: tuple[Case, ...] = (
    Case("alias", "현대차", "현대자동차"),
    Case("alias", "삼전", "삼성전자"),
    Case("alias", "엘지엔솔", "LG에너지솔루션"),
    Case("alias", "하이닉스", "SK하이닉스"),
    Case("alias", "네이버", "NAVER"),
    Case("alias", "카카오", "카카오"),
    Case("alias", "카뱅", "카카오뱅크"),
    Case("alias", "셀트리온", "셀트리온"),
    Case("alias", "삼바", "삼성바이오로직스"),
    Case("ticker", "005380", "현대자동차"),
    Case("ticker", "005930", "삼성전자"),
    Case("ticker", "NVDA", "NVIDIA"),
    Case("ticker", "tsla", "Tesla"),
    Case("ticker", "MU", "Micron"),
    Case("english", "Hyundai Motor", "현대자동차"),
    Case("english", "samsung electronics", "삼성전자"),
    Case("english", "nvidia", "NVIDIA"),
    Case("english", "SK Hynix", "SK하이닉스"),
    Case("spacing", "삼성전자", "삼성전자"),
    Case("spacing", "삼성 전자", "삼성전자"),
    Case("spacing", "현대 자동차", "현대자동차"),
    Case("initials", "ㄴㅇㅂ", "NAVER"),
    Case("initials", "ㅅㅅㅈㅈ", "삼성전자"),
    Case("initials", "ㅎㅇㄴㅅ", "SK하이닉스"),
    Case("initials", "ㅌㅅㄹ", "Tesla"),
    Case("typo", "하이닉수", "SK하이닉스"),
    Case("typo", "엔비디야", "NVIDIA"),
    Case("typo", "테슬러", "Tesla"),
    Case("typo", "nvidai", "NVIDIA"),
    Case("typo", "셀트리옹", "셀트리온"),
    # A name typed with its particle, as a question says it: "네이버는" found nothing.
    Case("particle", "네이버는", "NAVER"),
    Case("particle", "현대차의", "현대자동차"),
    Case("particle", "카카오가", "카카오"),  # not 카카오뱅크
    Case("particle", "삼성전자에서", "삼성전자"),
    Case("particle", "테슬라랑", "Tesla"),
    # A Latin name or a code with its particle: "NAVER는" found nothing, "NVIDIA의" one in twenty.
    Case("particle", "NAVER는", "NAVER"),
    Case("particle", "NVIDIA의", "NVIDIA"),
    Case("particle", "삼성SDI는", "삼성SDI"),
    Case("particle", "TSLA는", "Tesla"),
    Case("particle", "000660을", "SK하이닉스"),
)


@pytest.fixture(scope="module")
def aliases() -> Aliases:
    return load_aliases(STARTER)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    index = SearchIndex(Path(tmp_path_factory.mktemp("names")))
    index.add([(f"q{i:02d}", T0 + timedelta(minutes=i), None, text) for i, (_, text) in enumerate(ASKED)])
    index.commit()
    return index


def _relevant(case: Case) -> set[str]:
    return {
        f"q{i:02d}"
        for i, (company, text) in enumerate(ASKED)
        if company == case.company and (case.spelled is None or case.spelled in text.lower())
    }


def _company(query_id: str) -> str | None:
    return ASKED[int(query_id[1:])][0]


def test_each_kind_of_name_finds_its_company_and_no_other(index: SearchIndex, aliases: Aliases) -> None:
    by_kind: dict[str, list[tuple[int, int, int]]] = {}  # kind → (relevant found, relevant, wrong hits)
    misses = []
    for case in CASES:
        found = {h.query_id for h in index.search(case.query, limit=100, aliases=aliases)}
        relevant = _relevant(case)
        wrong = {q for q in found if _company(q) != case.company}
        by_kind.setdefault(case.kind, []).append((len(found & relevant), len(relevant), len(wrong)))
        if relevant - found or wrong:
            misses.append((case.kind, case.query, sorted(relevant - found), sorted(wrong)))
    report = {
        kind: (sum(r[0] for r in rows) / sum(r[1] for r in rows), sum(r[2] for r in rows))
        for kind, rows in by_kind.items()
    }
    # Every kind: every query about the company meant, and none about another.
    assert misses == [], f"recall and wrong hits per kind: {report}"
    assert set(report) == {"alias", "ticker", "english", "spacing", "initials", "typo", "particle"}


def test_exact_matches_rank_above_aliases_newest_first_within_a_tier(index: SearchIndex, aliases: Aliases) -> None:
    hits = index.search("현대차", limit=100, aliases=aliases)
    assert [h.match for h in hits] == ["exact"] + ["alias"] * 4
    assert hits[0].query_text == "현대차 실적 어때"
    aliased = hits[1:]
    assert [h.ts for h in aliased] == sorted((h.ts for h in aliased), reverse=True)  # newest first within a tier
    assert {h.why for h in aliased} >= {
        "현대차 → hyundai motor (alias of 현대자동차)",
        "현대차 → 005380 (alias of 현대자동차)",
    }
    # What matched in the alias's place, for a page to highlight: a piece of each text, as folded.
    assert all(h.found and all(piece in h.query_text.lower() for piece in h.found) for h in aliased)
    assert hits[0].found == ()  # an exact match highlights the words as typed


def test_an_exact_name_of_several_words_scores_as_a_word_that_starts_one(index: SearchIndex, aliases: Aliases) -> None:
    """The score counts query words that start a word of the text: "Hyundai Motor" matched as a name scored 0."""
    [hit] = [h for h in index.search("Hyundai Motor earnings", limit=100, aliases=aliases) if h.match == "exact"]
    assert (hit.query_text, hit.score) == ("Hyundai Motor earnings this quarter", 2.0)  # the name, then earnings
    exact = [h for h in index.search("Samsung Electronics", limit=100, aliases=aliases) if h.match == "exact"]
    assert [(h.query_text, h.score) for h in exact] == [("Samsung Electronics HBM news", 1.0)]


def test_typos_are_tried_only_when_nothing_else_matched(index: SearchIndex, aliases: Aliases) -> None:
    typo = index.search("하이닉수", limit=100, aliases=aliases)
    assert {h.match for h in typo} == {"typo"}
    # The slip spells a company's name: its other names find it too, and each row says which.
    assert {h.why for h in typo} == {
        "하이닉수 → 하이닉스 (typo)",
        "하이닉수 → sk hynix (typo of SK하이닉스)",
        "하이닉수 → 000660 (typo of SK하이닉스)",
    }
    # 실적 matches as typed, so 현대차 실정 (one jamo off 실적) is not widened to typos.
    assert index.search("실정", limit=100, aliases=aliases) == []  # 2 syllables: too short for typos
    assert all(h.match == "exact" for h in index.search("실적", limit=100, aliases=aliases))


def test_one_jamo_or_letter_matches_no_more_than_before(index: SearchIndex, aliases: Aliases) -> None:
    assert index.search("ㅎ", limit=100, aliases=aliases) == []
    assert index.search("m", limit=100, aliases=aliases) == [] or all(
        h.query_text.lower().split()[0].startswith("m") or " m" in h.query_text.lower()
        for h in index.search("m", limit=100, aliases=aliases)
    )


def test_without_aliases_names_are_plain_words(index: SearchIndex) -> None:
    hits = index.search("현대차", limit=100)
    assert {h.query_text for h in hits} == {"현대차 실적 어때", "현대차증권 리포트 요약해줘"}


def test_braces_in_a_name_are_text(tmp_path: Path) -> None:
    from querylog.analytics.aliases import parse_aliases

    aliases = parse_aliases("canonical,aliases,codes\n{Weird} Corp,위어드,WRD1\n", "t.csv")
    index = SearchIndex(tmp_path / "index")
    index.add([("q1", T0, None, "위어드 실적"), ("q2", T0 + timedelta(minutes=1), None, "wrd1 news")])
    hits = index.search("위어드", limit=10, aliases=aliases)
    assert [h.why for h in hits] == ["", "위어드 → wrd1 (alias of {Weird} Corp)"]  # exact first, then the alias
