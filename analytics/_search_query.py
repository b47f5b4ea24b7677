"""Top-k evaluation: intersect n-gram lists newest-first, verify by substring, rank, stop as soon as top-k is final."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from querylog.analytics._search_segment import PostingList, Segment
from querylog.analytics._search_text import (
    INTENT_KIND,
    KIND_SHIFT,
    WHITESPACE_RUN,
    QueryWord,
    masked,
    starts_word_count,
)

__all__ = ["Ranked", "View", "top_k"]

# Chunks grow geometrically: a common query is answered from its first few hundred candidates, a rare one
# still crosses its lists in a handful of numpy calls. Tests shrink FIRST_CHUNK to exercise many chunks.
FIRST_CHUNK = 256
_MAX_CHUNK: Final = 1 << 16
_MAX_WINDOW: Final = 1 << 20  # documents per step when every list is a bitmap
_GROWTH: Final = 4

#: A ranked hit: (-word starts, -ts, query_id) sorts best first; then where it lives (view, document).
Ranked = tuple[int, int, str, int, int]


@dataclass(frozen=True, slots=True)
class View:
    """A segment as one search sees it: only its first `live` documents exist (retention cuts the tail)."""

    segment: Segment
    live: int


class _TopK:
    """The best `k` hits so far, and the test that tells a list walk it can stop."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.items: list[Ranked] = []

    #: Whether `offer` needs each hit's text (`_DistinctTopK`).
    distinct: bool = False

    def offer(self, items: list[Ranked], texts: Sequence[str] = ()) -> None:
        self.items.extend(items)
        self.items.sort()
        del self.items[self.k :]

    def beats(self, starts: int, ts: int) -> bool:
        """True when every one of the k hits ranks above any hit with at most `starts` word starts and ts <= `ts`."""
        if len(self.items) < self.k:
            return False
        kth_starts, kth_ts = -self.items[-1][0], -self.items[-1][1]
        return kth_starts > starts or (kth_starts == starts and kth_ts > ts)


class _DistinctTopK(_TopK):
    """The best `k` hits of distinct texts, each text by its best hit: a question asked 2,000 times takes one
    place, not 2,000, so the questions asked less often are still found. `beats` holds as it is: once k texts
    rank above a candidate, it can neither enter nor improve the hit of a text already held."""

    distinct = True

    def __init__(self, k: int) -> None:
        super().__init__(k)
        self._text_of: dict[str, str] = {}  # query_id → text, for the hits held

    def offer(self, items: list[Ranked], texts: Sequence[str] = ()) -> None:
        best = {self._text_of[item[2]]: item for item in self.items}
        for item, text in zip(items, texts, strict=True):
            held = best.get(text)
            if held is None or item < held:
                best[text] = item
                self._text_of[item[2]] = text
        self.items = sorted(best.values())[: self.k]
        self._text_of = {item[2]: self._text_of[item[2]] for item in self.items}


def _first_of_each_text(texts: pa.Array) -> tuple[npt.NDArray[np.intp], list[str]]:
    """Positions of the first occurrence of each text, ascending, and those texts. Within one segment, documents
    are in rank order among equal scores (ts desc, query_id), and a text's score depends on the text alone: the
    first is its best. Encoded, not listed: a question asked 100,000 times costs one string, not 100,000."""
    encoded = pc.dictionary_encode(texts)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    first.sort()
    return first, encoded.dictionary.take(pa.array(codes[first])).to_pylist()


def _member_sorted(chunk: npt.NDArray[np.uint32], docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    # Search only the window of `docs` that the chunk spans: chunks are sorted, so that window is contiguous.
    lo = int(np.searchsorted(docs, chunk[0]))
    hi = int(np.searchsorted(docs, chunk[-1], side="right"))
    window = np.asarray(docs[lo:hi])
    if window.size == 0:
        return np.zeros(chunk.size, np.bool_)
    idx = np.minimum(np.searchsorted(window, chunk), window.size - 1)
    found: npt.NDArray[np.bool_] = window[idx] == chunk
    return found


def _member_bits(chunk: npt.NDArray[np.uint32], bits: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    words = np.asarray(bits[chunk >> np.uint32(6)])
    found: npt.NDArray[np.bool_] = ((words >> (chunk & np.uint32(63)).astype(np.uint64)) & np.uint64(1)).astype(
        np.bool_
    )
    return found


def _member(chunk: npt.NDArray[np.uint32], plist: PostingList) -> npt.NDArray[np.bool_]:
    if plist.docs is not None:
        return _member_sorted(chunk, plist.docs)
    assert plist.bits is not None
    return _member_bits(chunk, plist.bits)


def _bits_to_docs(words: npt.NDArray[np.uint64], first_word: int) -> npt.NDArray[np.uint32]:
    nonzero = np.flatnonzero(words)
    if nonzero.size == 0:
        return np.zeros(0, np.uint32)
    bits = np.unpackbits(words[nonzero].view(np.uint8), bitorder="little").reshape(-1, 64)
    rows, cols = np.nonzero(bits)
    docs: npt.NDArray[np.uint32] = ((nonzero[rows] + first_word) * 64 + cols).astype(np.uint32)
    return docs


def _conjunction(
    lists: Sequence[PostingList], end: int, begin: int = 0
) -> Iterator[tuple[npt.NDArray[np.uint32], int]]:
    """Documents in [begin, end) in every list, ascending, in chunks; with each chunk, the first document not
    covered.

    The rarest array drives and the others are probed (binary search in a window, or one bit each); when all
    lists are bitmaps, they are AND-ed a window of words at a time.
    """
    sparse = sorted((p for p in lists if p.docs is not None), key=lambda p: p.count)
    dense = [p for p in lists if p.docs is None]
    size = FIRST_CHUNK
    if sparse:
        driver = sparse[0].docs
        assert driver is not None
        stop_at = int(np.searchsorted(driver, end))
        pos = int(np.searchsorted(driver, begin))
        while pos < stop_at:
            nxt = min(pos + size, stop_at)
            chunk = np.asarray(driver[pos:nxt])
            for other in (*sparse[1:], *dense):
                if chunk.size == 0:
                    break
                chunk = chunk[_member(chunk, other)]
            pos = nxt
            yield chunk, (int(driver[pos]) if pos < stop_at else end)
            size = min(size * _GROWTH, _MAX_CHUNK)
        return
    bitmaps = [p.bits for p in dense if p.bits is not None]
    n_words = -(-end // 64)
    step = max(1, size // 8)  # a window of 8 * size documents: bitmaps hold at least 1 in 32
    word = begin // 64
    while word < n_words:
        nxt = min(word + step, n_words)
        acc = np.array(bitmaps[0][word:nxt], dtype=np.uint64)
        for other_bits in bitmaps[1:]:
            np.bitwise_and(acc, other_bits[word:nxt], out=acc)
        docs = _bits_to_docs(acc, word)
        word = nxt
        yield docs[(docs >= begin) & (docs < end)], min(word * 64, end)
        step = min(step * _GROWTH, _MAX_WINDOW // 64)


def _verify(
    segment: Segment,
    view_index: int,
    docs: npt.NDArray[np.uint32],
    words: Sequence[QueryWord],
    top: _TopK,
    *,
    ranked: bool,
    across_spaces: bool,
) -> None:
    """Keep the candidates that contain every word (grams only promise a superset), score them, offer them.

    A candidate that lacks a word as written is tried again with its spaces removed: "삼성전자" finds "삼성 전자".
    Such a match starts no word, so it ranks below texts that spell the word as the query does. Unranked (the
    alias, 초성 and typo tiers), every hit scores 0: newest first. For a `distinct` top, only the first hit of
    each text in the chunk is offered (the others rank below it)."""
    folded = segment.folded(docs)
    keep = _contains_all(folded, words)
    missed = ~keep
    if across_spaces and missed.any():
        joined = pc.replace_substring_regex(folded.filter(pa.array(missed)), WHITESPACE_RUN, "")
        keep[missed] = _contains_all(joined, words)
    hits = docs[keep]
    if hits.size == 0:
        return
    shown: list[str] = []
    if top.distinct:
        first, shown = _first_of_each_text(segment.docs.column("text").take(pa.array(hits)).combine_chunks())
        if len(first) < hits.size:
            kept = np.flatnonzero(keep)
            keep[:] = False
            keep[kept[first]] = True
            hits = docs[keep]
    query_ids: list[str] = segment.column("query_id", hits)
    ts = segment.ts[hits]
    if ranked:
        masks = tuple(dict.fromkeys(m for w in words for m in w.masks))
        texts: list[str] = masked(folded.filter(pa.array(keep)), masks).to_pylist()
        # A name (a pattern word) matched where it starts a word, or the text would not be here; its folded text
        # ("hyundaimotor") need not occur as written, so it is not looked for.
        literal = tuple(w.text for w in words if w.pattern is None)
        named = len(words) - len(literal)
        scores = [-(starts_word_count(text, literal) + named) for text in texts]
    else:
        scores = [0] * len(query_ids)
    top.offer(
        [
            (score, -int(t), qid, view_index, int(doc))
            for score, t, qid, doc in zip(scores, ts, query_ids, hits, strict=True)
        ],
        shown,
    )


def _contains(texts: pa.Array, word: QueryWord) -> pa.Array:
    texts = masked(texts, word.masks)
    if word.pattern is not None:
        return pc.match_substring_regex(texts, word.pattern)
    return pc.match_substring(texts, word.text)


def _contains_all(texts: pa.Array, words: Sequence[QueryWord]) -> npt.NDArray[np.bool_]:
    mask = _contains(texts, words[0])
    for word in words[1:]:
        mask = pc.and_(mask, _contains(texts, word))
    found: npt.NDArray[np.bool_] = mask.to_numpy(zero_copy_only=False).copy()
    return found


@dataclass(frozen=True, slots=True)
class _Plan:
    view_index: int
    segment: Segment
    begin: int  # documents [begin, end) are live, not older than `since` and older than `until`
    end: int
    required: list[PostingList]
    starts: list[PostingList | None]  # per word: documents where the word may start a word


def _plan(
    views: Sequence[View], words: Sequence[QueryWord], intent: str | None, since_us: int | None, until_us: int | None
) -> list[_Plan]:
    plans: list[_Plan] = []
    for i, view in enumerate(views):
        segment = view.segment
        end = view.live if since_us is None else min(view.live, segment.newer_than(since_us))
        # Documents are newest first: those at or after `until` are a prefix, skipped rather than verified.
        begin = 0 if until_us is None else segment.newer_than(until_us)
        if begin >= end:
            continue
        required: list[PostingList] = []
        for key in (g for w in words for g in w.grams):
            plist = segment.lookup(key)
            if plist is None:  # a gram no document holds: no document in this segment can match
                break
            required.append(plist)
        else:
            if intent is not None:
                code = segment.intent_code(intent)
                plist = None if code is None else segment.lookup((INTENT_KIND << KIND_SHIFT) | code)
                if plist is None:
                    continue
                required.append(plist)
            starts = [None if w.start_gram is None else segment.lookup(w.start_gram) for w in words]
            plans.append(_Plan(i, segment, begin, end, required, starts))
    # Newest segments first, so the top-k fills with recent hits and prunes older segments early.
    plans.sort(key=lambda p: -int(p.segment.ts[p.begin]))
    return plans


class _Replay:
    """A chunk stream that remembers what it yielded, so every level after the first replays the same scan.

    A rare conjunction of common words is then crossed once, not once per level.
    """

    def __init__(self, chunks: Iterator[tuple[npt.NDArray[np.uint32], int]]) -> None:
        self._source = chunks
        self._seen: list[tuple[npt.NDArray[np.uint32], int]] = []

    def __iter__(self) -> Iterator[tuple[npt.NDArray[np.uint32], int]]:
        i = 0
        while True:
            if i == len(self._seen):
                item = next(self._source, None)
                if item is None:
                    return
                self._seen.append(item)
            yield self._seen[i]
            i += 1


def top_k(
    views: Sequence[View],
    words: Sequence[QueryWord],
    k: int,
    intent: str | None,
    since_us: int | None,
    *,
    ranked: bool = True,
    across_spaces: bool = True,
    until_us: int | None = None,
    distinct: bool = False,
) -> list[Ranked]:
    """The k best hits by (word starts desc, ts desc, query_id asc), exactly as a full scan would rank them.

    Unranked, every hit scores 0 (newest first); `across_spaces` False matches the text as written only.
    `since_us` and `until_us` keep hits with since <= ts < until. `distinct` keeps the best hit of each text
    only: the k best distinct texts.

    Levels: a document's `ub` is how many words' word-start grams it holds, an upper bound on its true number
    of word starts. Level u walks, newest first, the candidates with ub == u; a walk stops once the k-th best
    hit outranks (u, ts of the next candidate), and a level is skipped once the k-th best has more than u.
    Every level walks one shared, replayed scan of the word grams' conjunction, except that the top level
    drives from the word-start lists when those are much rarer (웹툰 mostly inside 네이버웹툰).
    """
    top = _DistinctTopK(k) if distinct else _TopK(k)
    plans = _plan(views, words, intent, since_us, until_us)
    scans: dict[int, _Replay] = {}
    n_words = len(words)
    for level in range(n_words, -1, -1) if ranked else (0,):
        if len(top.items) == k and -top.items[-1][0] > level:
            break
        for plan in plans:
            segment = plan.segment
            if top.beats(level, int(segment.ts[plan.begin])):
                continue
            known = [s for s in plan.starts if s is not None] if ranked else []
            if len(known) < level:
                continue
            rarest = min(p.count for p in plan.required)
            chunks: Iterator[tuple[npt.NDArray[np.uint32], int]] | _Replay
            if level == n_words and min((p.count for p in known), default=0) * 4 < rarest:
                chunks, probes = _conjunction([*plan.required, *known], plan.end, plan.begin), []
            else:
                chunks = scans.setdefault(plan.view_index, _Replay(_conjunction(plan.required, plan.end, plan.begin)))
                probes = known
            for chunk, boundary in chunks:
                if probes and chunk.size:  # without probes the lists themselves guarantee ub == level
                    ub = np.zeros(chunk.size, np.int64)
                    for probe in probes:
                        ub += _member(chunk, probe)
                    chunk = chunk[ub == level]
                if chunk.size:
                    _verify(segment, plan.view_index, chunk, words, top, ranked=ranked, across_spaces=across_spaces)
                if boundary >= plan.end or top.beats(level, int(segment.ts[boundary])):
                    break
    return top.items
