"""BM25 retrieval over the bundled finance-news corpus, Korean-aware, with a bounded LRU query cache."""

from __future__ import annotations

import heapq
import math
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "Document",
    "Hit",
    "Retriever",
    "SearchResult",
    "companies_named",
    "load_bundled_corpus",
    "parse_corpus",
    "tokenize",
]

_PACKAGE: Final = "querylog.service"
_CORPUS_RESOURCE: Final = "data/corpus.jsonl"
SNIPPET_CHARS: Final = 160


class Document(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One corpus document: a short news item. `tickers` are exchange codes or topic tags (KOSPI, FED)."""

    doc_id: str
    title: str
    body: str
    lang: Literal["ko", "en"]
    tickers: tuple[str, ...] = ()
    published: date

    def __post_init__(self) -> None:
        if not self.doc_id.strip():
            raise ValueError("doc_id must not be empty")
        if not self.title.strip() or not self.body.strip():
            raise ValueError(f"document {self.doc_id!r} needs a non-empty title and body")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One retrieved document: its BM25 score and the body sentence that best matches the query."""

    doc_id: str
    title: str
    score: float
    snippet: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """Hits best first. `top_score` is the best hit's score, None when nothing matched."""

    docs: tuple[Hit, ...]
    cache_hit: bool
    top_score: float | None


_DECODER: Final = msgspec.json.Decoder(Document)


def parse_corpus(text: str, *, source: str = "corpus") -> tuple[Document, ...]:
    """Documents from JSON Lines text, one object a line; blank lines are skipped.

    A bad line raises ValueError naming `source`, the line number and the offending field.
    """
    documents: list[Document] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            documents.append(_DECODER.decode(line))
        except (msgspec.DecodeError, ValueError) as exc:
            raise ValueError(f"{source}, line {number}: {exc}") from exc
    return tuple(documents)


def load_bundled_corpus() -> tuple[Document, ...]:
    """The synthetic corpus shipped as package data (all names real, all figures and dates invented)."""
    resource = resources.files(_PACKAGE).joinpath(_CORPUS_RESOURCE)
    return parse_corpus(resource.read_text(encoding="utf-8"), source=f"{_PACKAGE}/{_CORPUS_RESOURCE}")


#: The tickers (as documents carry them) of the companies a query names.
Named = Callable[[str], frozenset[str]]


def companies_named(documents: Iterable[Document], aliases_path: Path | None = None) -> Named:
    """Which of `documents`' tickers a query names, by any of the company's names in the alias file (the bundled
    starter listing by default: 애플, Apple and AAPL are one company). "What is the price target for NAVER?" names
    035420, so NAVER's documents come before NVIDIA's price-target story, which shares more words with it."""
    from querylog.analytics.aliases import STARTER, load_aliases
    from querylog.logging.reformulation import Names, asked

    aliases = load_aliases(aliases_path or STARTER)
    held = {ticker.upper() for doc in documents for ticker in doc.tickers}
    tickers: dict[str, frozenset[str]] = {}
    for company in aliases.companies:
        codes = frozenset(name.upper() for name in company.names if name.upper() in held)
        if codes:
            tickers[company.canonical] = codes
    names = Names({key: name for key, name in aliases.canonical_by_key().items() if name in tickers})

    def named(text: str) -> frozenset[str]:
        return frozenset().union(*(tickers[name] for name in asked(text, names).companies))

    return named


_TOKEN_RUN: Final = re.compile(r"[\uac00-\ud7a3]+|[a-z]+|[0-9]+")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")
# Only English function words: Korean particles need no list, bigrams already dilute them and BM25's IDF
# discounts the ones (있다, 했다) that occur everywhere.
# fmt: off
_STOPWORDS: Final = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "has", "have", "how",
    "i", "in", "is", "it", "its", "me", "of", "on", "or", "should", "tell", "than", "that", "the", "their",
    "there", "this", "to", "was", "what", "when", "where", "which", "who", "why", "will", "with", "you",
})
# fmt: on


def tokenize(text: str) -> list[str]:
    """Index terms of `text`: Hangul character bigrams, lowercase Latin words, digit runs.

    Korean writes particles onto words (네이버는, 주가가) and often omits spaces, so whole Hangul words would
    rarely match; overlapping bigrams (네이버는 → 네이, 이버, 버는) share most terms with the bare word. A lone
    Hangul syllable is kept as a unigram. English stopwords and one-letter Latin words are dropped.
    """
    text = unicodedata.normalize("NFC", text).lower()
    terms: list[str] = []
    for run in _TOKEN_RUN.findall(text):
        first = run[0]
        if "\uac00" <= first <= "\ud7a3":
            if len(run) == 1:
                terms.append(run)
            else:
                terms.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif first.isdigit() or (len(run) > 1 and run not in _STOPWORDS):
            terms.append(run)
    return terms


def _normalise_query(text: str) -> str:
    """The cache key: NFC, case-folded, whitespace collapsed. "삼성전자  주가" and "삼성전자 주가" are one query."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


class Retriever:
    """BM25 (Okapi, k1/b) over a fixed set of documents. Thread-safe: the index is read-only after
    construction and the LRU cache takes a lock.

    `cache_size` bounds the LRU cache of results per (normalised query, k); 0 turns caching off.
    """

    def __init__(
        self,
        documents: Iterable[Document],
        *,
        cache_size: int = 1024,
        k1: float = 1.2,
        b: float = 0.75,
        named: Named | None = None,
    ) -> None:
        docs = tuple(documents)
        if not docs:
            raise ValueError("Retriever needs at least one document; pass a non-empty corpus")
        seen: set[str] = set()
        for doc in docs:
            if doc.doc_id in seen:
                raise ValueError(f"duplicate doc_id {doc.doc_id!r}: every document needs a unique id")
            seen.add(doc.doc_id)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 disables the cache), got {cache_size!r}")
        if not (math.isfinite(k1) and k1 > 0):
            raise ValueError(f"k1 must be a finite number > 0, got {k1!r}")
        if not (math.isfinite(b) and 0.0 <= b <= 1.0):
            raise ValueError(f"b must be within [0, 1], got {b!r}")

        self._docs = docs
        self._named = named
        self._tickers = [frozenset(t.upper() for t in doc.tickers) for doc in docs]
        self._by_id = {doc.doc_id: doc for doc in docs}
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], tuple[tuple[Hit, ...], float | None]] = OrderedDict()
        self._lock = threading.Lock()

        postings: dict[str, list[tuple[int, int]]] = {}
        lengths: list[int] = []
        self._sentences: list[tuple[tuple[str, frozenset[str]], ...]] = []
        for index, doc in enumerate(docs):
            # The title is indexed twice: a headline naming the company is stronger evidence than a passing
            # mention in someone else's story (삼성전자 appears in SK하이닉스 and KOSPI pieces too).
            terms = tokenize(doc.title) * 2 + tokenize(doc.body) + tokenize(" ".join(doc.tickers))
            lengths.append(len(terms))
            for term, tf in Counter(terms).items():
                postings.setdefault(term, []).append((index, tf))
            self._sentences.append(
                tuple((s, frozenset(tokenize(s))) for s in _SENTENCE_END.split(doc.body.strip()) if s)
            )
        n = len(docs)
        avg_length = sum(lengths) / n
        self._k1 = k1
        # Per-document denominator term of BM25, computed once: k1 * (1 - b + b * |d| / avgdl).
        self._norms = [k1 * (1 - b + b * length / avg_length) for length in lengths]
        # Lucene's IDF: never negative, so a term found in most documents still counts a little.
        self._postings = {
            term: (math.log(1 + (n - len(plist) + 0.5) / (len(plist) + 0.5)), tuple(plist))
            for term, plist in postings.items()
        }

    @classmethod
    def from_bundled(cls, *, cache_size: int = 1024) -> Retriever:
        """A retriever over the corpus shipped with the package, that knows the companies' names (`companies_named`)."""
        documents = load_bundled_corpus()
        return cls(documents, cache_size=cache_size, named=companies_named(documents))

    @property
    def documents(self) -> tuple[Document, ...]:
        return self._docs

    def document(self, doc_id: str) -> Document:
        """The full document behind a hit. Raises KeyError for an unknown id."""
        return self._by_id[doc_id]

    def search(self, text: str, k: int = 3) -> SearchResult:
        """The `k` best documents for `text`, best first; ties go to the smaller doc_id, so results are stable.

        A query seen before (same normalised text and k) is answered from the cache with `cache_hit=True`.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        key = (_normalise_query(text), k)
        if self._cache_size:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    return SearchResult(docs=cached[0], cache_hit=True, top_score=cached[1])
        # Scored outside the lock: two threads racing on one new query both compute it, which is cheaper
        # than making every search wait on each other.
        docs = self._rank(key[0], k)
        top_score = docs[0].score if docs else None
        if self._cache_size:
            with self._lock:
                self._cache[key] = (docs, top_score)
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return SearchResult(docs=docs, cache_hit=False, top_score=top_score)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _rank(self, text: str, k: int) -> tuple[Hit, ...]:
        # A company the query names adds its tickers as terms (its documents carry them, in any language), and its
        # documents come first: a question about NAVER is answered from NAVER's news, however many words another
        # company's story shares with it.
        named = self._named(text) if self._named is not None else frozenset()
        # Each distinct query term counts once: a bigram repeated by the tokenizer is not a stronger request.
        terms = dict.fromkeys([*tokenize(text), *(ticker.lower() for ticker in sorted(named))])
        scores: dict[int, float] = {}
        for term in terms:
            entry = self._postings.get(term)
            if entry is None:
                continue
            idf, plist = entry
            for index, tf in plist:
                scores[index] = scores.get(index, 0.0) + idf * tf * (self._k1 + 1) / (tf + self._norms[index])
        tickers = self._tickers
        best = heapq.nsmallest(
            k,
            scores.items(),
            key=lambda item: (not (named and tickers[item[0]] & named), -item[1], self._docs[item[0]].doc_id),
        )
        query_terms = frozenset(terms)
        return tuple(
            Hit(
                doc_id=self._docs[index].doc_id,
                title=self._docs[index].title,
                score=round(score, 6),
                snippet=self._best_sentence(index, query_terms),
            )
            for index, score in best
        )

    def _best_sentence(self, index: int, query_terms: frozenset[str]) -> str:
        # The sentence sharing most terms with the query; the first one on a tie (ledes say the most).
        sentences = self._sentences[index]
        best_text, best_overlap = sentences[0][0], -1
        for sentence, terms in sentences:
            overlap = len(terms & query_terms)
            if overlap > best_overlap:
                best_text, best_overlap = sentence, overlap
        return _snippet(best_text)
