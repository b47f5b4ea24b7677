"""Tests for the BM25 retriever, its tokenizer, corpus loading and query cache."""

from __future__ import annotations

import threading
import unicodedata
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from querylog.service.retrieval import (
    Document,
    Hit,
    Retriever,
    SearchResult,
    companies_named,
    load_bundled_corpus,
    parse_corpus,
    tokenize,
)

_SHARED = Retriever.from_bundled()  # for the property test: fixtures are not reset between examples


@pytest.fixture(scope="module")
def corpus() -> tuple[Document, ...]:
    return load_bundled_corpus()


@pytest.fixture
def retriever(corpus: tuple[Document, ...]) -> Retriever:
    return Retriever(corpus)


def _doc(doc_id: str, title: str, body: str) -> Document:
    return Document(doc_id=doc_id, title=title, body=body, lang="ko", published=date(2030, 1, 1))


def test_bundled_corpus_is_well_formed(corpus: tuple[Document, ...]) -> None:
    assert 50 <= len(corpus) <= 80
    assert len({doc.doc_id for doc in corpus}) == len(corpus)
    assert {doc.lang for doc in corpus} == {"ko", "en"}
    tickers = {ticker for doc in corpus for ticker in doc.tickers}
    assert {"005930", "000660", "035420", "035720", "005380", "373220", "AAPL", "NVDA", "TSLA"} <= tickers


def test_tokenize_makes_hangul_bigrams_latin_words_and_digit_runs() -> None:
    assert tokenize("네이버는 NAVER의 주가 005930") == ["네이", "이버", "버는", "naver", "의", "주가", "005930"]


def test_tokenize_drops_english_stopwords_and_single_letters() -> None:
    assert tokenize("What is the price of NVIDIA's stock?") == ["price", "nvidia", "stock"]


def test_tokenize_normalises_decomposed_hangul() -> None:
    assert tokenize(unicodedata.normalize("NFD", "삼성전자")) == tokenize("삼성전자")


@pytest.mark.parametrize(
    ("query", "ticker"),
    [
        ("네이버의 주가 전망은?", "035420"),
        ("네이버는 뭐 하는 회사야", "035420"),
        ("삼성전자의 목표주가", "005930"),
        ("005930 실적", "005930"),
        ("SK하이닉스가 발표한 HBM 실적", "000660"),
        ("카카오는 어떤 회사야", "035720"),
        ("현대차 본사는 어디야", "005380"),
        ("LG에너지솔루션 주가", "373220"),
        ("What does NAVER do?", "035420"),
        ("Samsung Electronics earnings", "005930"),
        ("NVIDIA price target", "NVDA"),
        ("Tesla deliveries", "TSLA"),
        ("Apple services revenue", "AAPL"),
        ("코스피 지수", "KOSPI"),
        ("원달러 환율", "USDKRW"),
        ("Fed rate cut", "FED"),
    ],
)
def test_ranks_the_matching_company_first(retriever: Retriever, query: str, ticker: str) -> None:
    result = retriever.search(query)
    assert result.docs, query
    assert ticker in retriever.document(result.docs[0].doc_id).tickers


@pytest.mark.parametrize(
    ("query", "ticker"),
    [
        # Another company's story shares more words with each of these than the named company's news does.
        ("What is the price target for NAVER?", "035420"),  # NVIDIA's "Price targets and risks"
        ("Should I buy NVIDIA stock now?", "NVDA"),  # Tesla's "should you buy"
        ("How did Kakao earnings look this quarter?", "035720"),  # Samsung's "Q4 earnings"
        ("애플의 목표주가는 얼마인가요?", "AAPL"),  # 카카오's "목표주가"; 애플 by its Korean name
        ("그럼 애플 매수해도 될까?", "AAPL"),
    ],
)
def test_a_company_named_by_any_of_its_names_is_answered_from_its_own_documents(query: str, ticker: str) -> None:
    """The demo's own questions: without the alias file, 11 of its 153 company questions were answered from
    another company's documents (NAVER's price target from NVIDIA's)."""
    result = _SHARED.search(query)
    assert [ticker in _SHARED.document(hit.doc_id).tickers for hit in result.docs] == [True, True, True], query
    company = result.docs[0].doc_id.split("-")[0]
    bm25_alone = Retriever(load_bundled_corpus()).search(query).docs[0].doc_id
    assert not bm25_alone.startswith(company), "BM25 alone answers this one: the test would not show the names at work"


def test_named_companies_come_from_the_alias_file_and_the_corpus_tickers(
    corpus: tuple[Document, ...], tmp_path: Path
) -> None:
    named = companies_named(corpus)
    assert named("네이버 주가") == {"035420"} and named("naver") == {"035420"} and named("Hyundai Motor") == {"005380"}
    assert named("삼성전자와 SK하이닉스") == {"005930", "000660"}
    assert named("오늘 날씨") == frozenset()
    # A company the corpus has no document about adds nothing; a file of one's own is read instead of the starter.
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("canonical,aliases,codes\nAcme,에이크미,AAPL\nNAVER,네이버,035420\n", encoding="utf-8")
    own = companies_named(corpus, aliases)
    assert own("에이크미 news") == {"AAPL"} and own("Apple") == frozenset()


def test_results_are_best_first_with_top_score(retriever: Retriever) -> None:
    result = retriever.search("삼성전자 실적", k=5)
    scores = [hit.score for hit in result.docs]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    assert result.top_score == scores[0]


def test_snippet_is_the_sentence_that_matches_the_query(retriever: Retriever) -> None:
    hit = retriever.search("네이버 목표주가").docs[0]
    assert "목표주가" in hit.snippet
    assert len(hit.snippet) <= 160


def test_no_match_returns_no_hits_and_no_top_score(retriever: Retriever) -> None:
    assert retriever.search("zzqx") == SearchResult(docs=(), cache_hit=False, top_score=None)
    assert retriever.search("   ").docs == ()


def test_repeated_query_is_a_cache_hit_with_the_same_hits(retriever: Retriever) -> None:
    first = retriever.search("카카오 주가")
    second = retriever.search("카카오 주가")
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.docs == first.docs
    assert second.top_score == first.top_score


def test_cache_key_is_the_normalised_query(retriever: Retriever) -> None:
    retriever.search("Tesla  Deliveries")
    assert retriever.search("  tesla deliveries ").cache_hit
    retriever.search("현대차 주가")
    assert retriever.search(unicodedata.normalize("NFD", "현대차 주가")).cache_hit


def test_cache_distinguishes_k(retriever: Retriever) -> None:
    retriever.search("카카오", k=3)
    result = retriever.search("카카오", k=1)
    assert not result.cache_hit
    assert len(result.docs) == 1


def test_cache_is_bounded_least_recently_used_first(corpus: tuple[Document, ...]) -> None:
    retriever = Retriever(corpus, cache_size=2)
    retriever.search("a1 삼성")
    retriever.search("b2 현대")
    retriever.search("a1 삼성")  # refreshes a1, so b2 is now the oldest
    retriever.search("c3 카카오")  # evicts b2
    assert retriever.search("a1 삼성").cache_hit
    assert not retriever.search("b2 현대").cache_hit


def test_cache_size_zero_disables_caching(corpus: tuple[Document, ...]) -> None:
    retriever = Retriever(corpus, cache_size=0)
    retriever.search("네이버")
    assert not retriever.search("네이버").cache_hit


def test_clear_cache_forgets_queries(retriever: Retriever) -> None:
    retriever.search("네이버")
    retriever.clear_cache()
    assert not retriever.search("네이버").cache_hit


def test_concurrent_searches_agree(retriever: Retriever) -> None:
    queries = ["네이버 주가", "Tesla news", "코스피", "환율", "삼성전자 실적"] * 20
    expected = {q: Retriever(retriever.documents, cache_size=0).search(q).docs for q in set(queries)}
    mismatches: list[str] = []

    def worker() -> None:
        for q in queries:
            if retriever.search(q).docs != expected[q]:
                mismatches.append(q)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


def test_ties_break_on_doc_id() -> None:
    retriever = Retriever([_doc("b", "같은 제목", "같은 본문."), _doc("a", "같은 제목", "같은 본문.")])
    assert [hit.doc_id for hit in retriever.search("같은 제목").docs] == ["a", "b"]


def test_hits_are_plain_frozen_values(retriever: Retriever) -> None:
    hit = retriever.search("네이버").docs[0]
    assert isinstance(hit, Hit)
    with pytest.raises(AttributeError):
        hit.score = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("k", [0, -1, True])
def test_search_refuses_bad_k(retriever: Retriever, k: int) -> None:
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        retriever.search("네이버", k=k)


def test_constructor_validates_arguments(corpus: tuple[Document, ...]) -> None:
    with pytest.raises(ValueError, match="at least one document"):
        Retriever([])
    with pytest.raises(ValueError, match="duplicate doc_id 'x'"):
        Retriever([_doc("x", "제목", "본문."), _doc("x", "제목", "본문.")])
    with pytest.raises(ValueError, match="cache_size"):
        Retriever(corpus, cache_size=-1)
    with pytest.raises(ValueError, match="b must be within"):
        Retriever(corpus, b=1.5)


def test_parse_corpus_names_the_bad_line() -> None:
    good = '{"doc_id": "d1", "title": "t", "body": "b", "lang": "en", "published": "2030-01-01"}'
    assert parse_corpus(good + "\n\n")[0].doc_id == "d1"
    with pytest.raises(ValueError, match=r"test\.jsonl, line 2: .*lang"):
        parse_corpus(
            good + '\n{"doc_id": "d2", "title": "t", "body": "b", "lang": "fr", "published": "2030-01-01"}',
            source="test.jsonl",
        )
    with pytest.raises(ValueError, match="line 1"):
        parse_corpus("not json")


@given(st.text(max_size=100))
def test_any_query_searches_without_error(text: str) -> None:
    result = _SHARED.search(text, k=3)
    assert len(result.docs) <= 3
    assert (result.top_score is None) == (result.docs == ())
