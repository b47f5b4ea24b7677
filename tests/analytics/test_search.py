"""Tests for querylog.analytics.search: Korean/English matching, filters, ranking, persistence, crash safety."""

from __future__ import annotations

import json
import os
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from querylog.analytics import _search_query, _search_segment
from querylog.analytics._search_text import CLASS_TABLE, SPACE_TABLE, fold_one, starts_only
from querylog.analytics.search import SearchHit, SearchIndex, SearchIndexError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
Row = tuple[str, datetime, str | None, str]


def rows(*texts: str, intent: str | None = None, start: int = 0) -> list[Row]:
    """One row a text, q<start>, q<start+1>, …, an hour apart (later rows are newer)."""
    return [(f"q{start + i}", T0 + timedelta(hours=start + i), intent, t) for i, t in enumerate(texts)]


def ids(hits: Sequence[SearchHit]) -> list[str]:
    return [h.query_id for h in hits]


@pytest.fixture
def index(tmp_path: Path) -> SearchIndex:
    return SearchIndex(tmp_path / "search")


@pytest.fixture
def corpus(index: SearchIndex) -> SearchIndex:
    index.add(
        rows(
            "네이버는 어때",  # q0
            "네이버의 주가 전망",  # q1
            "네이버가 왜 떨어졌어",  # q2
            "네이버웹툰 신작 알려줘",  # q3
            "카카오 주가",  # q4
            "NVIDIA의 실적 발표 언제야",  # q5
            "nvidia earnings today",  # q6
            "Apple Stock Price",  # q7
            "삼성전자 배당 얼마야",  # q8
            "삼성전자 실적",  # q9
            "웹툰 추천",  # q10
            "엔비디아nvidia 분기실적",  # q11
        )
    )
    return index


# -- matching -----------------------------------------------------------------------------------------------


def test_a_word_matches_it_with_any_particle_attached(corpus: SearchIndex) -> None:
    assert set(ids(corpus.search("네이버"))) == {"q0", "q1", "q2", "q3"}


def test_a_compound_is_found_by_either_part(corpus: SearchIndex) -> None:
    assert "q3" in ids(corpus.search("네이버"))
    assert set(ids(corpus.search("웹툰"))) == {"q3", "q10"}


def test_a_query_with_a_particle_matches_only_that_form(corpus: SearchIndex) -> None:
    assert ids(corpus.search("네이버는")) == ["q0"]


def test_nfd_query_matches_nfc_text(corpus: SearchIndex) -> None:
    query = unicodedata.normalize("NFD", "네이버")
    assert query != "네이버"
    assert set(ids(corpus.search(query))) == {"q0", "q1", "q2", "q3"}


def test_nfd_text_is_found_by_nfc_query_and_shown_as_nfc(index: SearchIndex) -> None:
    index.add(rows(unicodedata.normalize("NFD", "카카오뱅크 대출 금리")))
    (hit,) = index.search("뱅크")
    assert hit.query_text == "카카오뱅크 대출 금리"


def test_characters_that_draw_nothing_neither_hide_a_text_nor_a_query(index: SearchIndex) -> None:
    # Pasted from a web page or a chat app: a zero-width joiner inside the name, a soft hyphen, a BOM.
    index.add(rows("삼성\u200d전자 배당", "\ufeff하이닉스 실\u00ad적", "네이버 주가"))
    (hit,) = index.search("삼성전자")
    assert hit.query_text == "삼성\u200d전자 배당"  # shown as asked
    assert ids(index.search("하이닉스 실적")) == ["q1"]
    assert ids(index.search("네\u200b이버")) == ["q2"]


def test_english_is_case_insensitive(corpus: SearchIndex) -> None:
    assert set(ids(corpus.search("NVIDIA"))) == {"q5", "q6", "q11"}
    assert ids(corpus.search("apple STOCK")) == ["q7"]


def test_full_width_letters_fold_to_ascii(index: SearchIndex) -> None:
    index.add(rows("ＮＶＩＤＩＡ 주가"))
    assert ids(index.search("nvidia")) == ["q0"]
    assert ids(index.search("ＮＶＩＤＩＡ")) == ["q0"]


def test_mixed_korean_and_english_query(corpus: SearchIndex) -> None:
    assert set(ids(corpus.search("NVIDIA 실적"))) == {"q5", "q11"}


def test_every_word_must_match(corpus: SearchIndex) -> None:
    assert ids(corpus.search("삼성전자 배당")) == ["q8"]
    assert corpus.search("삼성전자 웹툰") == []


def test_unrelated_texts_are_not_returned(corpus: SearchIndex) -> None:
    assert corpus.search("쿠팡") == []
    assert corpus.search("네이버카카오") == []  # both words exist, the compound does not
    assert all("카카오" not in h.query_text for h in corpus.search("네이버"))


def test_a_single_korean_syllable_matches_inside_words(corpus: SearchIndex) -> None:
    assert set(ids(corpus.search("삼"))) == {"q8", "q9"}
    assert set(ids(corpus.search("툰"))) == {"q3", "q10"}


def test_a_single_latin_letter_matches_where_a_word_starts(index: SearchIndex) -> None:
    index.add(rows("a b", "bca", "xyz"))
    assert set(ids(index.search("A"))) == {"q0"}  # "bca" has an a, inside a word


def test_blank_query_returns_nothing(corpus: SearchIndex) -> None:
    assert corpus.search("   ") == []


def test_limit_must_be_positive(corpus: SearchIndex) -> None:
    with pytest.raises(ValueError, match="limit"):
        corpus.search("네이버", limit=0)


def test_limit_caps_the_hits(corpus: SearchIndex) -> None:
    assert len(corpus.search("네이버", limit=2)) == 2


# -- filters ------------------------------------------------------------------------------------------------


def test_intent_filter(index: SearchIndex) -> None:
    index.add(rows("삼성전자 주가", "삼성전자 뉴스", intent="stock"))
    index.add(rows("삼성전자 실적", start=2, intent="news"))
    index.add(rows("삼성전자", start=3))
    assert ids(index.search("삼성전자", intent="news")) == ["q2"]
    assert set(ids(index.search("삼성전자", intent="stock"))) == {"q0", "q1"}
    assert index.search("삼성전자", intent="weather") == []
    assert {h.intent for h in index.search("삼성전자")} == {"stock", "news", None}


def test_since_filter_is_inclusive(corpus: SearchIndex) -> None:
    since = T0 + timedelta(hours=2)
    assert set(ids(corpus.search("네이버", since=since))) == {"q2", "q3"}
    assert corpus.search("네이버", since=T0 + timedelta(days=1)) == []


def test_since_is_exact_at_every_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_search_segment, "_TS_FENCE", 4)  # the cut falls in every position of a fence block
    index = SearchIndex(tmp_path)
    index.add(rows(*(f"카카오 {i}" for i in range(30))))
    for hour in range(32):
        got = set(ids(index.search("카카오", limit=100, since=T0 + timedelta(hours=hour))))
        assert got == {f"q{i}" for i in range(hour, 30)}


def test_intent_and_since_together(index: SearchIndex) -> None:
    index.add(rows("카카오 주가", "카카오 뉴스", intent="a"))
    index.add(rows("카카오 실적", "카카오페이", start=2, intent="b"))
    assert ids(index.search("카카오", intent="a", since=T0 + timedelta(hours=1))) == ["q1"]


def test_naive_datetimes_are_utc(index: SearchIndex) -> None:
    index.add([("q0", datetime(2025, 1, 1, 9), None, "테스트")])
    (hit,) = index.search("테스트", since=datetime(2025, 1, 1, 9))
    assert hit.ts == datetime(2025, 1, 1, 9, tzinfo=UTC)


# -- ranking ------------------------------------------------------------------------------------------------


def test_word_start_matches_rank_above_matches_inside_a_word(index: SearchIndex) -> None:
    index.add(rows("네이버 주가", "웹툰은네이버", "네이버웹툰"))  # q1 matches inside a word, and is not newest
    hits = index.search("네이버")
    assert ids(hits) == ["q2", "q0", "q1"]
    assert [h.score for h in hits] == [1.0, 1.0, 0.0]


def test_more_words_at_word_starts_rank_higher(index: SearchIndex) -> None:
    index.add(rows("nvidia 실적 발표", "geforcenvidia 분기실적", "nvidia 분기실적"))
    hits = index.search("nvidia 실적")
    assert ids(hits) == ["q0", "q2", "q1"]
    assert [h.score for h in hits] == [2.0, 1.0, 0.0]


def test_a_rare_word_start_match_outranks_many_newer_inner_matches(index: SearchIndex) -> None:
    # 웹툰 starts a word in one old text and sits inside 네이버웹툰 in forty newer ones: the top level is then
    # driven from the (rarer) word-start list, and must still find the old text first.
    index.add(rows("웹툰 추천", *(f"네이버웹툰 {i}화" for i in range(40))))
    hits = index.search("웹툰", limit=3)
    assert ids(hits) == ["q0", "q40", "q39"]
    assert [h.score for h in hits] == [1.0, 0.0, 0.0]


def test_a_latin_word_glued_to_hangul_starts_a_word(index: SearchIndex) -> None:
    index.add(rows("NVIDIA의", "엔비디아nvidia", "네이버의"))
    assert [h.score for h in index.search("nvidia")] == [1.0, 1.0]
    assert [h.score for h in index.search("의")] == [1.0, 0.0]  # after Latin a class change; after Hangul not


def test_equal_scores_rank_newest_first_then_by_query_id(index: SearchIndex) -> None:
    index.add([("b", T0, None, "카카오"), ("a", T0, None, "카카오"), ("c", T0 + timedelta(1), None, "카카오")])
    assert ids(index.search("카카오")) == ["c", "a", "b"]


def test_scores_and_order_do_not_depend_on_segment_layout(tmp_path: Path) -> None:
    texts = [f"{w} 주가 {i}" for i, w in enumerate(["네이버", "웹툰은네이버", "네이버웹툰"] * 7)]
    one = SearchIndex(tmp_path / "one")
    one.add(rows(*texts))
    many = SearchIndex(tmp_path / "many")
    for i, text in enumerate(texts):
        many.add(rows(text, start=i))
        if i % 3 == 0:
            many.commit()
    assert [(h.query_id, h.score) for h in one.search("네이버", limit=9)] == [
        (h.query_id, h.score) for h in many.search("네이버", limit=9)
    ]


# -- incremental updates, persistence, retention -------------------------------------------------------------


def test_add_returns_new_rows_and_re_adding_is_a_no_op(index: SearchIndex) -> None:
    assert index.add(rows("네이버", "카카오")) == 2
    assert index.add(rows("네이버", "카카오")) == 0
    index.commit()
    assert index.add(rows("다른 텍스트", "카카오")) == 0  # same ids: the text is not updated either
    assert index.add([("q0", T0, None, "x"), ("q9", T0, None, "새 질문"), ("q9", T0, None, "중복")]) == 1
    assert len(index) == 3
    assert index.search("다른") == []
    assert [h.query_text for h in index.search("질문")] == ["새 질문"]


def test_new_rows_are_searchable_before_and_after_commit(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path)
    index.add(rows("네이버 주가"))
    index.commit()
    index.add(rows("네이버 실적", start=1))
    assert set(ids(index.search("네이버"))) == {"q0", "q1"}
    assert ids(SearchIndex(tmp_path).search("네이버")) == ["q0"]  # another reader sees committed rows only
    index.commit()
    reopened = SearchIndex(tmp_path)
    assert set(ids(reopened.search("네이버"))) == {"q0", "q1"}
    assert reopened.add(rows("네이버 주가")) == 0


def test_state_survives_reopen(corpus: SearchIndex, tmp_path: Path) -> None:
    before = corpus.search("네이버", limit=50)
    corpus.commit()
    reopened = SearchIndex(tmp_path / "search")
    assert len(reopened) == len(corpus) == 12
    assert reopened.search("네이버", limit=50) == before


def test_many_small_adds_and_commits_stay_correct(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path)
    for i in range(40):
        index.add(rows(f"카카오 {i}번째 질문", start=i))
        if i % 2:
            index.commit()
    index.commit()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["segments"]) < 10  # tiered merging keeps the segment count logarithmic
    assert len(SearchIndex(tmp_path).search("카카오", limit=100)) == 40
    assert len(list(tmp_path.glob("seg-*"))) == len(manifest["segments"])


def test_many_small_adds_without_commit_stay_deduplicated(index: SearchIndex) -> None:
    for i in range(25):
        assert index.add(rows(f"토스 질문 {i}", start=i)) == 1
        if i % 5 == 0:
            assert len(index.search("토스", limit=100)) == i + 1  # searching builds the buffered rows
    assert index.add(rows(*(f"토스 질문 {i}" for i in range(25)))) == 0
    assert len(index) == 25
    assert len(index.search("토스", limit=100)) == 25


def test_retention_removes_older_rows_durably(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path)
    index.add(rows("네이버 0", "네이버 1", "네이버 2"))
    index.commit()
    index.add(rows("네이버 3", start=3))  # uncommitted rows follow retention too
    assert index.remove_older_than(T0 + timedelta(hours=2)) == 2
    assert index.remove_older_than(T0 + timedelta(hours=2)) == 0
    assert set(ids(index.search("네이버"))) == {"q2", "q3"}
    assert len(index) == 2
    index.commit()
    assert set(ids(SearchIndex(tmp_path).search("네이버"))) == {"q2", "q3"}


@pytest.mark.parametrize("expired", [8, 1], ids=["most-rows", "one-row"])
def test_retention_rewrites_the_segment_and_the_expired_texts_leave_the_disk(tmp_path: Path, expired: int) -> None:
    # A segment was rewritten only once more than half expired: the texts of an expired day stayed on disk, where
    # docs/privacy.md says retention bounds how long a question is kept (walk).
    index = SearchIndex(tmp_path)
    index.add(rows(*(f"카카오 {i}" for i in range(10))))
    index.commit()
    index.remove_older_than(T0 + timedelta(hours=expired))
    index.commit()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["docs"] for s in manifest["segments"]] == [10 - expired]
    assert set(ids(SearchIndex(tmp_path).search("카카오"))) == {f"q{i}" for i in range(expired, 10)}
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert "카카오 0".encode() not in on_disk


def test_add_arrow_takes_lake_columns(index: SearchIndex) -> None:
    table = pa.table(
        {
            "query_id": ["a", "b", "c"],
            "ts": pa.array([0, 3_600_000_000_000, 7_200_000_000_000], pa.timestamp("ns")),
            "intent": pa.array(["x", None, "x"]).dictionary_encode(),
            "query_text": ["네이버 주가", None, "Naver 주가"],
            "extra": [1, 2, 3],
        }
    )
    assert index.add_arrow(table) == 3
    assert index.add_arrow(table) == 0
    hits = index.search("주가", intent="x")
    assert ids(hits) == ["c", "a"]
    assert hits[0].ts == datetime(1970, 1, 1, 2, tzinfo=UTC)


def test_add_arrow_names_missing_columns(index: SearchIndex) -> None:
    with pytest.raises(ValueError, match="query_text"):
        index.add_arrow(pa.table({"query_id": ["a"], "ts": pa.array([0], pa.timestamp("us")), "intent": [None]}))


def test_null_query_id_is_refused(index: SearchIndex) -> None:
    table = pa.table(
        {"query_id": [None], "ts": pa.array([0], pa.timestamp("us")), "intent": [None], "query_text": ["x"]}
    )
    with pytest.raises(ValueError, match="query_id"):
        index.add_arrow(table)


# -- crash safety and concurrency ---------------------------------------------------------------------------


def test_leftovers_of_a_crashed_commit_are_ignored_then_cleaned(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path)
    index.add(rows("네이버 주가"))
    index.commit()
    # What a commit that died before its manifest replace leaves: a written (or half-written) segment and a
    # temporary manifest naming it.
    (tmp_path / "seg-99999999-deadbeef").mkdir()
    (tmp_path / "seg-99999999-deadbeef" / "postings.npy").write_bytes(b"\x93NUMPY half")
    (tmp_path / "manifest.json.tmp-deadbeef").write_text('{"format": 1, "generation": 2, "segme')
    reopened = SearchIndex(tmp_path)
    assert ids(reopened.search("네이버")) == ["q0"]
    reopened.add(rows("네이버 실적", start=1))
    reopened.commit()
    assert not (tmp_path / "seg-99999999-deadbeef").exists()
    assert not (tmp_path / "manifest.json.tmp-deadbeef").exists()
    assert set(ids(SearchIndex(tmp_path).search("네이버"))) == {"q0", "q1"}


def test_a_commit_that_fails_at_the_commit_point_leaves_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = SearchIndex(tmp_path)
    index.add(rows("네이버 주가"))
    index.commit()
    index.add(rows("네이버 실적", start=1))

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash at the commit point")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        index.commit()
    monkeypatch.undo()
    assert ids(SearchIndex(tmp_path).search("네이버")) == ["q0"]


def test_a_second_writer_cannot_overwrite_a_newer_commit(tmp_path: Path) -> None:
    first, second = SearchIndex(tmp_path), SearchIndex(tmp_path)
    first.add(rows("네이버"))
    first.commit()
    second.add(rows("카카오", start=1))
    with pytest.raises(SearchIndexError, match="another writer"):
        second.commit()
    assert ids(SearchIndex(tmp_path).search("네이버")) == ["q0"]


def test_a_word_typed_without_its_space_finds_the_text_that_has_it(index: SearchIndex) -> None:
    index.add(
        rows(
            "삼성 전자 배당 일정",  # q0
            "삼성전자 실적",  # q1
            "삼성SDI 전망",  # q2
            "삼성 바이오로직스",  # q3
            "삼성\u3000\u3000전자\t주가",  # q4: ideographic spaces and a tab
            "SK 하이닉스 HBM",  # q5
        )
    )
    hits = index.search("삼성전자", limit=10)
    assert ids(hits) == ["q1", "q4", "q0"]  # spelled as typed first, then the spaced ones, newest first
    assert [h.score for h in hits] == [1.0, 0.0, 0.0]
    assert sorted(ids(index.search("삼성 전자", limit=10))) == ["q0", "q1", "q4"]  # and the other way round
    assert ids(index.search("sk하이닉스", limit=10)) == ["q5"]
    assert ids(index.search("삼성전자 배당", limit=10)) == ["q0"]
    assert ids(index.search("전자배당", limit=10)) == ["q0"]
    assert ids(index.search("삼성바이오", limit=10)) == ["q3"]
    assert ids(index.search("성SDI전망", limit=10)) == ["q2"]


def test_one_letter_or_jamo_matches_only_where_a_word_starts(index: SearchIndex) -> None:
    index.add(rows("Apple stock price", "nvidia earnings", "a share of 삼성전자", "ㅋㅋ 네이버 웃기네", "삼성 바이오"))
    assert sorted(ids(index.search("a", limit=10))) == ["q0", "q2"]  # not every text with an a inside a word
    assert ids(index.search("ㅋ", limit=10)) == ["q3"]
    assert sorted(ids(index.search("삼", limit=10))) == ["q2", "q4"]  # a syllable alone is a word: anywhere
    assert ids(index.search("x", limit=10)) == []


def test_an_index_of_an_older_format_is_refused_as_outdated(tmp_path: Path) -> None:
    from querylog.analytics.search import SearchIndexOutdatedError

    old = SearchIndex(tmp_path / "search")
    old.add(rows("네이버 주가"))
    old.commit()
    for meta in (tmp_path / "search").glob("*/meta.json"):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 2}))
    with pytest.raises(SearchIndexOutdatedError, match="segment format 2"):
        SearchIndex(tmp_path / "search")
    for meta in (tmp_path / "search").glob("*/meta.json"):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 99}))
    with pytest.raises(SearchIndexError) as refused:
        SearchIndex(tmp_path / "search")
    assert not isinstance(refused.value, SearchIndexOutdatedError)  # a newer format is not rebuilt over


def test_public_surface() -> None:
    from querylog.analytics import search

    assert sorted(search.__all__) == [
        "SearchHit",
        "SearchIndex",
        "SearchIndexError",
        "SearchIndexOutdatedError",
        "TIER_SCORES",
    ]


# -- normalisation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        (unicodedata.normalize("NFD", "네이버는"), "네이버는"),
        ("NVIDIA의 실적", "nvidia의 실적"),
        ("ＡＢＣ１２３", "abc123"),
        ("㈜삼성", "(주)삼성"),
    ],
)
def test_fold(raw: str, folded: str) -> None:
    assert fold_one(raw) == folded


# -- properties: the index answers exactly what a brute-force scan answers -----------------------------------

_SYLLABLES = "네이버웹툰삼성전자는의가카오내젼섬"
_ALPHABET = st.sampled_from([*_SYLLABLES, *"aAbBnN01", " ", "\u3000", "\t", "(", ".", "Ａ", "ᄂ", "ㅇ", "ㅅ"])
_TEXTS = st.text(_ALPHABET, max_size=12)


def _starts_word(text: str, i: int) -> bool:
    if i == 0:
        return True
    prev, cur = CLASS_TABLE[ord(text[i - 1])], CLASS_TABLE[ord(text[i])]
    return bool(prev == 0 or prev != cur)


def _jamo(syllable: str) -> tuple[str, str, str] | None:
    """(initial, medial, final or "") of a precomposed syllable, by Unicode's own decomposition."""
    if not "가" <= syllable <= "힣":
        return None
    parts = unicodedata.normalize("NFD", syllable)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _one_slip(typed: str, found: str) -> bool:
    """The typo rule: one jamo of one syllable (Hangul); one letter a-z changed, added, dropped, or two neighbours
    swapped (Latin)."""
    if "가" <= typed[0] <= "힣":
        if len(found) != len(typed):
            return False
        diffs = [(a, b) for a, b in zip(typed, found, strict=True) if a != b]
        if len(diffs) != 1:
            return False
        ja, jb = _jamo(diffs[0][0]), _jamo(diffs[0][1])
        return ja is not None and jb is not None and sum(x != y for x, y in zip(ja, jb, strict=True)) == 1
    letters = set("abcdefghijklmnopqrstuvwxyz")
    if len(found) == len(typed):
        diffs = [i for i, (a, b) in enumerate(zip(typed, found, strict=True)) if a != b]
        if len(diffs) == 1:
            return found[diffs[0]] in letters
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and typed[diffs[0]] == found[diffs[1]]
            and typed[diffs[1]] == found[diffs[0]]
        )
    if len(found) == len(typed) + 1:
        return any(found[:i] + found[i + 1 :] == typed and found[i] in letters for i in range(len(found)))
    if len(found) == len(typed) - 1:
        return any(typed[:i] + typed[i + 1 :] == found for i in range(len(typed)))
    return False


def _typo_eligible(word: str) -> bool:
    if len(word) > 32:  # no name is longer; its slips would grow with the square of its length
        return False
    if all("가" <= c <= "힣" for c in word):
        return len(word) >= 3
    return len(word) >= 4 and all("a" <= c <= "z" for c in word)


def _starts_at(text: str) -> list[int]:
    return [i for i in range(len(text)) if not SPACE_TABLE[ord(text[i])] and _starts_word(text, i)]


def _literal_ok(folded: str, text: str, word: str) -> bool:
    return word in text and (
        not starts_only(word) or any(_starts_word(folded, i) for i, c in enumerate(folded) if c == word)
    )


def _initials_at(folded: str, word: str) -> bool:
    """A word of `folded` starts with syllables whose initial consonants are `word`'s."""
    for i in _starts_at(folded):
        piece = folded[i : i + len(word)]
        if len(piece) == len(word) and all(
            (j := _jamo(c)) is not None and j[0] == k for c, k in zip(piece, word, strict=True)
        ):
            return True
    return False


def _slip_ok(folded: str, text: str, word: str, slipped: str) -> bool:
    """`word` matches `text` (the folded text, or it with its whitespace removed), one slip off if it is `slipped`."""
    if word != slipped:
        return _literal_ok(folded, text, word)
    n = len(word)
    return any(_one_slip(word, text[i : i + m]) for i in _starts_at(text) for m in (n - 1, n, n + 1))


def brute_force(docs: Sequence[Row], query: str, intent: str | None, since: datetime | None) -> list[tuple[str, float]]:
    """The specification, spelled out, without aliases. Exact tier: every query word a substring of the folded
    text as written or with its whitespace removed (one letter or jamo only where it starts a word); ranked by
    (word starts in the text as written, ts, query_id). 초성 tier (score -2): a word of 2+ initial consonants
    matches where a word of the text as written starts with syllables having them. Typo tier (score -3), only when
    nothing above matched: one eligible word one slip off, starting a word. Lower tiers: newest first."""
    words = list(dict.fromkeys(fold_one(query).split()))
    chosen = [d for d in docs if (intent is None or d[2] == intent) and (since is None or d[1] >= since)]
    if not words:
        return []
    exact = []
    for query_id, ts, _, text in chosen:
        folded = fold_one(text)
        joined = "".join(folded.split())
        if not (
            all(_literal_ok(folded, folded, w) for w in words) or all(_literal_ok(folded, joined, w) for w in words)
        ):
            continue
        starts = sum(any(_starts_word(folded, i) for i in range(len(folded)) if folded.startswith(w, i)) for w in words)
        exact.append((-starts, -ts.timestamp(), query_id))
    found = {qid for _, _, qid in exact}
    lower: list[tuple[int, float, str]] = []
    initials = [w for w in words if len(w) >= 2 and all("\u1100" <= c <= "\u1112" for c in w)]
    for query_id, ts, _, text in chosen:
        folded = fold_one(text)
        if not initials or query_id in found:
            continue

        if all(_initials_at(folded, w) if w in initials else _literal_ok(folded, folded, w) for w in words):
            lower.append((2, -ts.timestamp(), query_id))
    if not exact and not lower:
        for query_id, ts, _, text in chosen:
            folded = fold_one(text)
            joined = "".join(folded.split())
            for slipped in [w for w in words if _typo_eligible(w)][:3]:  # the first three that qualify
                if all(_slip_ok(folded, folded, w, slipped) for w in words) or all(
                    _slip_ok(folded, joined, w, slipped) for w in words
                ):
                    lower.append((3, -ts.timestamp(), query_id))
                    break
    return [(qid, float(-starts)) for starts, _, qid in sorted(exact)] + [
        (qid, -float(tier)) for tier, _, qid in sorted(lower)
    ]


@st.composite
def corpora(draw: st.DrawFn) -> tuple[list[Row], str]:
    n = draw(st.integers(1, 30))
    docs: list[Row] = []
    for i in range(n):
        text = draw(_TEXTS)
        if draw(st.booleans()):
            text = unicodedata.normalize("NFD", text)
        hour = draw(st.integers(0, 5))  # few distinct ts: ties must break by query_id
        docs.append((f"q{i:02d}", T0 + timedelta(hours=hour), draw(st.sampled_from([None, "a", "b"])), text))
    # One text glued behind other syllables, again and again: many matches inside words, few at word starts,
    # as with 네이버웹툰 (and the case where the word-start lists drive the top level).
    base = draw(st.sampled_from(docs))[3]
    for j in range(draw(st.integers(0, 12))):
        glued = draw(st.sampled_from(_SYLLABLES)) + base
        docs.append((f"r{j:02d}", T0 + timedelta(hours=draw(st.integers(0, 5))), None, glued))
    words = []
    if draw(st.booleans()):  # a name, asked for by its 초성 or with one slip (the lower tiers)
        hangul = draw(st.booleans())
        name = draw(st.text(st.sampled_from(_SYLLABLES if hangul else "abnz"), min_size=3 if hangul else 4, max_size=5))
        for j in range(draw(st.integers(1, 4))):
            text = (
                draw(st.sampled_from(["", "(", "삼", "a", "가 "])) + name + draw(st.sampled_from(["", "는", " 주가"]))
            )
            docs.append((f"n{j:02d}", T0 + timedelta(hours=draw(st.integers(0, 5))), None, text))
        how = draw(st.sampled_from(["initials", "slip", "as is"] if hangul else ["slip", "as is"]))
        if how == "initials":
            words.append(_initials(name))
        else:
            words.append(draw(_slipped(name)) if how == "slip" else name)
    for _ in range(draw(st.integers(0 if words else 1, 2))):
        if draw(st.integers(0, 4)) == 0:
            words.append(draw(st.text(_ALPHABET, min_size=1, max_size=3)))
        else:
            text = draw(st.sampled_from(docs))[3]
            lo = draw(st.integers(0, len(text)))
            piece = text[lo : lo + draw(st.integers(1, 6))]
            if draw(st.booleans()):  # typed without the spaces the text has there
                piece = "".join(piece.split()) or piece
            how = draw(st.sampled_from(["as is", "as is", "initials", "slip"]))
            if how == "initials" and piece and all("가" <= c <= "힣" for c in piece):
                piece = _initials(piece)
            elif how == "slip" and piece:
                piece = draw(_slipped(piece))
            words.append(piece)
    return docs, " ".join(words)


def _initials(word: str) -> str:
    return "".join("ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"[(ord(c) - 0xAC00) // 588] for c in word)


@st.composite
def _slipped(draw: st.DrawFn, piece: str) -> str:
    """`piece` with one slip: one jamo of a syllable, or one letter changed, added, dropped or swapped."""
    i = draw(st.integers(0, len(piece) - 1))
    c = piece[i]
    if "가" <= c <= "힣":
        code = ord(c) - 0xAC00
        part = draw(st.sampled_from([588, 28, 1]))  # initial, medial, final
        size = {588: 19, 28: 21, 1: 28}[part]
        digit = code // part % size
        code += (draw(st.integers(0, size - 1)) - digit) * part
        return piece[:i] + chr(0xAC00 + code) + piece[i + 1 :]
    edit = draw(st.sampled_from(["change", "add", "drop", "swap"]))
    letter = draw(st.sampled_from("abnz"))
    if edit == "change":
        return piece[:i] + letter + piece[i + 1 :]
    if edit == "add":
        return piece[:i] + letter + piece[i:]
    if edit == "drop":
        return piece[:i] + piece[i + 1 :] or piece
    return piece[:i] + piece[i + 1 : i + 2] + piece[i] + piece[i + 2 :]


@contextmanager
def _engine(dense_min: int) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_search_query, "FIRST_CHUNK", 1)  # one candidate a chunk: early termination is exercised
        mp.setattr(_search_segment, "DENSE_MIN_COUNT", dense_min)  # 3: lists of 3+ documents become bitmaps
        mp.setattr(_search_segment, "_KEY_FENCE", 2)  # many fence blocks even in a tiny segment
        mp.setattr(_search_segment, "_TS_FENCE", 2)
        yield


def _indexed(directory: Path, docs: list[Row], split: int) -> SearchIndex:
    """The corpus in two in-memory segments (commit is covered above; fsync would dominate the run time)."""
    index = SearchIndex(directory)
    index.add(docs[:split])
    index.add(docs[split:])
    return index


_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("dense_min", [1 << 30, 3])
@_PROPERTY
@given(case=corpora(), data=st.data())
def test_results_equal_a_brute_force_scan(dense_min: int, case: tuple[list[Row], str], data: st.DataObject) -> None:
    docs, query = case
    intent = data.draw(st.sampled_from([None, "a"]))
    since = data.draw(st.sampled_from([None, T0 + timedelta(hours=3)]))
    split = data.draw(st.integers(0, len(docs)))
    with _engine(dense_min), tempfile.TemporaryDirectory() as tmp:
        index = _indexed(Path(tmp), docs, split)
        got = [(h.query_id, h.score) for h in index.search(query, limit=1000, intent=intent, since=since)]
    assert got == brute_force(docs, query, intent, since)


@pytest.mark.parametrize("dense_min", [1 << 30, 3])
@_PROPERTY
@given(case=corpora(), limit=st.integers(1, 4), split=st.integers(0, 30))
def test_top_k_equals_the_head_of_the_full_ranking(
    dense_min: int, case: tuple[list[Row], str], limit: int, split: int
) -> None:
    docs, query = case
    with _engine(dense_min), tempfile.TemporaryDirectory() as tmp:
        index = _indexed(Path(tmp), docs, min(split, len(docs)))
        got = [(h.query_id, h.score) for h in index.search(query, limit=limit)]
    assert got == brute_force(docs, query, None, None)[:limit]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=8))  # utf-8: no lone surrogates
def test_fold_is_idempotent(text: str) -> None:
    assert fold_one(fold_one(text)) == fold_one(text)


def test_explain_names_the_tier_of_each_word() -> None:
    from querylog.analytics._search_text import explain_match

    assert explain_match("네이버웹툰 신작 알려줘", "웹툰 신작") == "웹툰: inside a word; 신작: starts a word"
    assert explain_match("삼성 전자 배당", "삼성전자") == "삼성전자: across spacing"
    assert explain_match("NVIDIA의 실적", "nvidia 주가") == "nvidia: starts a word; 주가: not found"


@pytest.mark.parametrize("word", ["가나다라마바사아자차카타파하" * 3000, "abcdefghij" * 3000, "가" * 33, "a" * 33])
def test_a_word_longer_than_any_name_is_searched_as_typed_without_typo_variants(word: str) -> None:
    """Its slips would grow with the square of its length: a 42,000-character word kept a search busy for good."""
    from querylog.analytics._search_text import TYPO_MAX_CHARS, typo_words

    assert typo_words(word) == []
    assert typo_words(word[:TYPO_MAX_CHARS])  # at the bound a slip is still looked for


def test_quotes_around_words_are_not_looked_for(index: SearchIndex) -> None:
    """`querylog search '"네이버 주가"'` found nothing: the quotes were searched for as characters."""
    index.add(rows("네이버 주가 전망", "카카오 주가"))
    assert ids(index.search('"네이버 주가"')) == ids(index.search("네이버 주가")) == ["q0"]
    assert ids(index.search("「네이버」")) == ["q0"]
    assert index.search('""') == []
