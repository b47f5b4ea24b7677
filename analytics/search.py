"""Ranked full-text search over query texts for Korean (particles, compounds, NFD), English and mixed text."""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from querylog.analytics._search_buffer import PendingRows
from querylog.analytics._search_query import Ranked, View, top_k
from querylog.analytics._search_segment import DOCS_SCHEMA, Segment, SegmentFormatError, hash_strings
from querylog.analytics._search_text import (
    QueryWord,
    fold,
    fold_one,
    initials_shown,
    initials_word,
    is_initials,
    literal_word,
    matched_pieces,
    name_word,
    typo_eligible,
    typo_words,
    unquoted,
)

if TYPE_CHECKING:
    from querylog.analytics.aliases import Aliases, Company, Mention

__all__ = ["TIER_SCORES", "SearchHit", "SearchIndex", "SearchIndexError", "SearchIndexOutdatedError"]

_MANIFEST: Final = "manifest.json"
_LOCK: Final = "writer.lock"
_MANIFEST_FORMAT: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_MERGE_FACTOR: Final = 8  # segments of one size class merged together: each row is rewritten ~log8(N) times
_PREP_CHUNK: Final = 1 << 20
#: Most alias combinations tried for one query (two companies named with 8 names each make 64).
_MAX_ALIAS_VARIANTS: Final = 64
#: Words of one query tried one slip off (the first that qualify): a long query that matched nothing would
#: otherwise cross hundreds of variants.
_MAX_TYPO_WORDS: Final = 3
#: The score of each tier below the exact one: every exact hit (score = word starts, >= 0) ranks above them.
TIER_SCORES: Final = {"exact": 0.0, "alias": -1.0, "initials": -2.0, "typo": -3.0}
# Placeholders in an explanation, replaced (not str.format: names and queries may hold braces) by what matched
# and by the company.
_FOUND: Final = "\x00found\x00"
_COMPANY: Final = "\x00company\x00"


class SearchIndexError(Exception):
    """The index on disk cannot be used as asked (another writer committed, or a file is damaged)."""


class SearchIndexOutdatedError(SearchIndexError):
    """The index on disk was written by an older version: rebuild it from its source (the lake)."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One matching query, and how it matched.

    `match` is the tier: ``exact`` (the words as typed; `score` is how many start a word in the text), ``alias``
    (another name of a company the query names; score -1), ``initials`` (초성; -2) or ``typo`` (one jamo or
    letter off, tried only when nothing else matched; -3). `why` says what matched outside the exact tier:
    "현대차 → hyundai motor (alias of 현대자동차)", "ㄴㅇㅂ → 네이버 (초성)", "하이닉수 → 하이닉스 (typo)".
    """

    query_id: str
    query_text: str
    ts: datetime
    intent: str | None
    score: float
    match: str = "exact"
    why: str = ""
    #: The pieces of the text that matched outside the exact tier (as folded: "네이버", "samsung electronics"), for
    #: a page to highlight where the query's own words are not in the text.
    found: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Variant:
    """One conjunction to run: its words, whether they may match across spacing, how to explain a hit."""

    words: list[QueryWord]
    across_spaces: bool
    explain: tuple[tuple[QueryWord, str], ...]  # (pattern word, how its match reads, `_FOUND` standing for it)


@dataclass(slots=True)
class _Entry:
    segment: Segment
    live: int  # retention keeps the newest `live` documents of the segment


def _to_us(ts: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC, like every ts in the lake."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_US


def _timestamps_us(column: pa.ChunkedArray) -> pa.Array:
    if not pa.types.is_timestamp(column.type):
        raise TypeError(f"column ts must be a timestamp, got {column.type}; cast it first")
    if column.null_count:
        raise ValueError("column ts must not hold nulls")
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
    raw = column.cast(pa.int64()).to_numpy()
    return pa.array(raw * (1_000_000 // per_second) if per_second <= 1_000_000 else raw // 1_000)


def _prepare_texts(texts: pa.Array) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """NFC text for display and the folded text for matching (null where equal), chunked across two threads."""

    def one(chunk: pa.Array) -> tuple[pa.Array, pa.Array]:
        nfc = pc.utf8_normalize(chunk, "NFC")
        folded = fold(nfc)
        return nfc, pc.if_else(pc.equal(folded, nfc), pa.scalar(None, pa.large_string()), folded)

    chunks = [texts.slice(lo, _PREP_CHUNK) for lo in range(0, len(texts), _PREP_CHUNK)] or [texts]
    if len(chunks) == 1:
        done = [one(chunks[0])]
    else:  # Arrow's kernels release the GIL, so two threads halve the normalisation time of a bulk build
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            done = list(pool.map(one, chunks))
    return pa.chunked_array([d[0] for d in done], pa.large_string()), pa.chunked_array(
        [d[1] for d in done], pa.large_string()
    )


def _first_occurrences(ids: pa.Array, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """Mask of rows whose query_id did not occur earlier in the batch."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    if not np.any(ordered[1:] == ordered[:-1]):
        return np.ones(len(ids), np.bool_)
    rows = pa.table({"query_id": ids, "row": pa.array(np.arange(len(ids), dtype=np.int64))})
    first = rows.group_by("query_id").aggregate([("row", "min")]).column("row_min").to_numpy()
    keep = np.zeros(len(ids), np.bool_)
    keep[first] = True
    return keep


class SearchIndex:
    """An on-disk, incrementally updated search index: immutable segments plus a manifest naming the live ones.

    Matching: query and texts are folded (NFKC, lower case) and every whitespace-separated query word must be
    a substring of the text, so 네이버 matches 네이버는 and 네이버웹툰, nvidia matches NVIDIA의. Ranking: by
    how many query words start a word in the text, then newest first, then query_id (docs/search.md).
    One writer at a time (commit takes a file lock and refuses to overwrite a newer commit); any number of
    readers, each seeing the state committed when it opened plus its own uncommitted additions.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._generation, self._entries = self._load()
        self._pending = PendingRows()  # added since the last commit, in memory only

    # -- state on disk ------------------------------------------------------------------------------------

    def _read_manifest(self) -> dict[str, Any]:
        path = self._directory / _MANIFEST
        if not path.exists():
            return {"format": _MANIFEST_FORMAT, "generation": 0, "segments": []}
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != _MANIFEST_FORMAT:
            raise SearchIndexError(f"{path}: manifest format {manifest.get('format')}, expected {_MANIFEST_FORMAT}")
        return manifest

    def _load(self) -> tuple[int, list[_Entry]]:
        # A concurrent commit may delete a segment between our reading the manifest and opening it; the new
        # manifest then names its replacement, so read again.
        for _ in range(5):
            manifest = self._read_manifest()
            try:
                entries = [
                    _Entry(Segment.open(self._directory / s["name"]), int(s["live"])) for s in manifest["segments"]
                ]
            except FileNotFoundError:
                continue
            except SegmentFormatError as exc:
                raise (SearchIndexOutdatedError if exc.older else SearchIndexError)(str(exc)) from None
            return int(manifest["generation"]), entries
        raise SearchIndexError(f"{self._directory}: segments keep disappearing; is a writer deleting them?")

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        with open(self._directory / _LOCK, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write_segment(self, segment: Segment) -> Segment:
        name = f"seg-{self._generation + 1:08d}-{secrets.token_hex(4)}"
        segment.write(self._directory / name)
        return Segment.open(self._directory / name)  # memory-mapped: the built arrays can be freed

    def _write_manifest(self, entries: list[_Entry], generation: int) -> None:
        manifest = {
            "format": _MANIFEST_FORMAT,
            "generation": generation,
            "segments": [{"name": e.segment.name, "live": e.live, "docs": e.segment.n} for e in entries],
        }
        tmp = self._directory / f"{_MANIFEST}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(json.dumps(manifest, indent=1, ensure_ascii=False).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._directory / _MANIFEST)  # the commit point: before it the old state, after it the new
        dir_fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _remove_unreferenced(self, entries: list[_Entry]) -> None:
        keep = {e.segment.name for e in entries}
        for path in self._directory.iterdir():
            if path.name.startswith("seg-") and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(f"{_MANIFEST}.tmp-"):
                path.unlink(missing_ok=True)

    # -- adding -------------------------------------------------------------------------------------------

    def add(self, rows: Iterable[tuple[str, datetime, str | None, str]]) -> int:
        """Add (query_id, ts, intent, query_text) rows; a query_id already in the index is skipped. Returns new rows."""
        ids: list[str] = []
        ts: list[int] = []
        intents: list[str | None] = []
        texts: list[str] = []
        for query_id, when, intent, text in rows:
            ids.append(query_id)
            ts.append(_to_us(when))
            intents.append(intent)
            texts.append(text)
        return self._add(
            pa.array(ids, pa.large_string()),
            pa.array(ts, pa.int64()),
            pa.array(intents, pa.large_string()),
            pa.array(texts, pa.large_string()),
        )

    def add_arrow(self, table: pa.Table) -> int:
        """`add` for an Arrow table with columns query_id, ts (timestamp), intent, query_text: the bulk path."""
        missing = {"query_id", "ts", "intent", "query_text"} - set(table.column_names)
        if missing:
            raise ValueError(f"table lacks column(s) {sorted(missing)}; it needs query_id, ts, intent, query_text")
        ids = table.column("query_id").cast(pa.large_string()).combine_chunks()
        intents = table.column("intent").cast(pa.large_string()).combine_chunks()
        texts = table.column("query_text").cast(pa.large_string()).combine_chunks()
        return self._add(ids, _timestamps_us(table.column("ts")), intents, texts)

    def _add(self, ids: pa.Array, ts: pa.Array, intents: pa.Array, texts: pa.Array) -> int:
        if ids.null_count:
            raise ValueError("query_id must not be null")
        if len(ids) == 0:
            return 0
        hashes = hash_strings(ids)
        keep = _first_occurrences(ids, hashes)
        for entry in self._entries:
            keep &= ~entry.segment.find_ids(hashes, ids, entry.live)
        keep &= ~self._pending.find_ids(hashes, ids)
        if not keep.any():
            return 0
        if not keep.all():  # filtering copies every column: skip it for the usual all-new bulk load
            mask = pa.array(keep)
            ids, ts, intents, texts = ids.filter(mask), ts.filter(mask), intents.filter(mask), texts.filter(mask)
            hashes = hashes[keep]
        nfc, folded = _prepare_texts(texts.fill_null(""))
        docs = pa.table([ids, ts, intents, nfc, folded], schema=DOCS_SCHEMA)
        self._pending.append(docs, hashes)
        added: int = docs.num_rows
        return added

    # -- reading ------------------------------------------------------------------------------------------

    def search(
        self,
        text: str,
        *,
        limit: int = 20,
        intent: str | None = None,
        since: datetime | None = None,
        aliases: Aliases | None = None,
        until: datetime | None = None,
        distinct: bool = False,
    ) -> list[SearchHit]:
        """Queries matching `text`, best first: the exact tier (every word a substring, see the module docstring),
        then other names of the companies it names (`aliases`), then 초성, then — only when none of those found
        anything — words one typo away. Lower tiers are searched only while fewer than `limit` hits are found.

        `since` and `until` keep ``since <= ts < until``. With `distinct`, each text is returned once, by its best
        hit: the `limit` best distinct texts, however often the best of them were asked (grouping by question
        needs every question, not the 2,000 newest askings of a popular one)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        typed = list(dict.fromkeys(unquoted(fold_one(text)).split()))
        if not typed:
            return []
        views = [View(e.segment, e.live) for e in self._entries]
        pending = self._pending.segment()
        if pending is not None:
            views.append(View(pending, pending.n))
        since_us = None if since is None else _to_us(since)
        until_us = None if until is None else _to_us(until)
        # query_id (or, `distinct`, the text) → (rank, tier, the variant that found it)
        best: dict[str, tuple[Ranked, str, int]] = {}
        tried: list[_Variant] = []
        for tier, variants in _tiers(typed, aliases):
            if tier == "typo" and best:
                break  # typos are the last resort: only when nothing else matched
            ranked_tier = tier == "exact"
            for variant in variants:
                tried.append(variant)
                found = top_k(
                    views,
                    variant.words,
                    limit,
                    intent,
                    since_us,
                    ranked=ranked_tier,
                    across_spaces=variant.across_spaces,
                    until_us=until_us,
                    distinct=distinct,
                )
                keys = _texts(views, found) if distinct else {}
                for rank in found:
                    key = keys[rank[3], rank[4]] if distinct else rank[2]
                    if key in best:
                        continue  # found by a better tier, or by an earlier variant of this one (same rank)
                    if not ranked_tier:
                        rank = (int(-TIER_SCORES[tier]), *rank[1:])
                    best[key] = (rank, tier, len(tried) - 1)
            if len(best) >= limit:
                break
        ranked = sorted(best.values())[:limit]
        return self._hits(views, ranked, tried)

    def _hits(
        self, views: list[View], ranked: list[tuple[Ranked, str, int]], variants: list[_Variant]
    ) -> list[SearchHit]:
        texts = _texts(views, [r for r, _, _ in ranked])
        why, found = _explain(variants, [(v, texts[r[3], r[4]]) for r, _, v in ranked])
        hits: list[SearchHit] = []
        for i, ((neg_score, neg_ts, query_id, view_index, doc), tier, _) in enumerate(ranked):
            segment = views[view_index].segment
            code = int(segment.intent[doc])
            hits.append(
                SearchHit(
                    query_id=query_id,
                    query_text=texts[view_index, doc],
                    ts=_EPOCH + timedelta(microseconds=-neg_ts),
                    intent=segment.intents[code] if code >= 0 else None,
                    score=float(-neg_score) if tier == "exact" else TIER_SCORES[tier],
                    match=tier,
                    why=why[i],
                    found=found[i],
                )
            )
        return hits

    def __len__(self) -> int:
        return sum(e.live for e in self._entries) + len(self._pending)

    def intents(self) -> list[str]:
        """The intents of the committed queries, sorted (those of segments retention emptied may remain)."""
        return sorted({intent for e in self._entries if e.live for intent in e.segment.intents})

    # -- retention and commit -----------------------------------------------------------------------------

    def remove_older_than(self, cutoff: datetime) -> int:
        """Drop rows with ts < cutoff (the lake's retention), visible now, durable on commit. Returns rows removed."""
        cutoff_us = _to_us(cutoff)
        removed = self._pending.remove_older_than(cutoff_us)
        for entry in self._entries:
            live = min(entry.live, entry.segment.newer_than(cutoff_us))
            removed += entry.live - live
            entry.live = live
        return removed

    def commit(self) -> None:
        """Make every change durable; atomic: a crash at any point leaves the previous commit intact."""
        with self._writer_lock():
            on_disk = int(self._read_manifest()["generation"])
            if on_disk != self._generation:
                raise SearchIndexError(
                    f"{self._directory} was committed by another writer (generation {on_disk}, this index opened "
                    f"{self._generation}); open it again and repeat the additions"
                )
            entries = [e for e in self._entries if e.live > 0]
            pending = self._pending.segment()
            if pending is not None:
                entries.append(_Entry(self._write_segment(pending), pending.n))
            entries = self._compact(entries)
            self._write_manifest(entries, self._generation + 1)
            self._generation += 1
            self._entries = entries
            self._pending.clear()
            self._remove_unreferenced(entries)

    def _compact(self, entries: list[_Entry]) -> list[_Entry]:
        """Tiered merging, as in an LSM tree: any size class holding _MERGE_FACTOR segments becomes one segment.

        A segment retention removed rows from is rewritten too: their texts leave the disk with the retention day
        (`QUERYLOG_RETENTION` bounds how long a question is kept anywhere), not once most of the segment expired.
        """
        while True:
            classes: dict[int, list[_Entry]] = {}
            for e in entries:
                if e.live < e.segment.n:
                    classes.setdefault(-1, []).append(e)
                else:
                    classes.setdefault(e.live.bit_length() // 3, []).append(e)  # log8 size class
            group = next((g for c, g in sorted(classes.items()) if len(g) >= _MERGE_FACTOR or c == -1), None)
            if group is None:
                return entries
            merged = _merge(group)
            entries = [e for e in entries if e not in group]
            entries.append(_Entry(self._write_segment(merged.segment), merged.live))


def _texts(views: list[View], ranked: list[Ranked]) -> dict[tuple[int, int], str]:
    """The text of each ranked hit, by (view, document): one take per segment, not one per hit."""
    texts: dict[tuple[int, int], str] = {}
    for view_index in {r[3] for r in ranked}:
        docs = np.array([r[4] for r in ranked if r[3] == view_index], np.uint32)
        column = views[view_index].segment.column("text", docs)
        texts.update(((view_index, int(d)), t) for d, t in zip(docs, column, strict=True))
    return texts


def _explain(variants: list[_Variant], found: list[tuple[int, str]]) -> tuple[list[str], list[tuple[str, ...]]]:
    """What matched, for each (variant, text) hit outside the exact tier, said and as the pieces of the text: one
    pattern pass per variant word."""
    why = [""] * len(found)
    matched: list[tuple[str, ...]] = [()] * len(found)
    for v, variant in enumerate(variants):
        if not variant.explain:
            continue
        rows = [i for i, (which, _) in enumerate(found) if which == v]
        if not rows:
            continue
        folded = fold(pa.array([found[i][1] for i in rows], pa.string()))
        pieces = [matched_pieces(folded, word) for word, _ in variant.explain]
        for j, i in enumerate(rows):
            why[i] = "; ".join(
                template.replace(_FOUND, p[j] or word.text)
                for (word, template), p in zip(variant.explain, pieces, strict=True)
            )
            matched[i] = tuple(piece for p in pieces if (piece := p[j]))
    return why, matched


def _tiers(typed: list[str], aliases: Aliases | None) -> Iterator[tuple[str, Iterable[_Variant]]]:
    """The tiers of a query, best first, each as the conjunctions that make it up (see `SearchIndex.search`).

    A company the query names (`aliases`) is matched as a name even in the exact tier: it starts a word, a Latin
    name or code also ends one (MU is not in "must"), and other companies' longer names are masked (카카오 does
    not find 카카오뱅크)."""
    mentions = aliases.mentions(typed) if aliases is not None else []
    named = {i: m for m in mentions for i in range(m.start, m.end)}
    exact: list[QueryWord] = []
    for i, w in enumerate(typed):
        if i not in named:
            exact.append(literal_word(w))
        elif named[i].start == i:
            assert aliases is not None
            m = named[i]
            exact.append(name_word(m.typed, aliases.masks(m.company, m.typed)))
    yield "exact", [_Variant(exact, True, ())]
    if mentions:
        assert aliases is not None
        yield "alias", list(_alias_variants(typed, mentions, aliases))
    if any(is_initials(w) for w in typed):
        words = [initials_word(w) if is_initials(w) else literal_word(w) for w in typed]
        explain = tuple((w, f"{initials_shown(w.text)} → {_FOUND} (초성)") for w in words if w.pattern is not None)
        variants = [_Variant(words, False, explain)]
        for i, word in enumerate(words):  # 초성 that spell a company's whole name find its other names too
            if word.pattern is not None and aliases is not None:
                shown = initials_shown(word.text)
                variants += _company_variants(words, i, aliases, f"{shown} → {_FOUND} (초성 of {_COMPANY})")
        yield "initials", variants[:_MAX_ALIAS_VARIANTS]
    # Built only if the search gets this far (nothing matched above): a generator, not a list.
    yield "typo", _typo_variants(typed, set(named), aliases)


def _typo_variants(typed: list[str], named: set[int], aliases: Aliases | None) -> Iterator[_Variant]:
    """The query with one of its first `_MAX_TYPO_WORDS` eligible words one slip off. A company's name is not
    among them: its aliases say how else it may be written. A slip that spells a company's whole name finds it as
    the name would (its longer neighbours masked, 셀트리옹 → 셀트리온, not 셀트리온제약), and by its other names
    too (하이닉수 → SK hynix)."""
    eligible = [i for i, w in enumerate(typed) if i not in named and typo_eligible(w)][:_MAX_TYPO_WORDS]
    for i in eligible:
        w = typed[i]
        for typo in typo_words(w):
            spelled = _whole_names(typo, aliases) if aliases is not None else []
            if spelled:
                assert aliases is not None
                masks = tuple(dict.fromkeys(m for key, c in spelled for m in aliases.masks(c, key)))
                typo = dataclasses.replace(typo, masks=masks)
            words = [typo if j == i else literal_word(other) for j, other in enumerate(typed)]
            yield _Variant(words, True, ((typo, f"{w} → {_FOUND} (typo)"),))
            if spelled:
                assert aliases is not None
                yield from _company_variants(words, i, aliases, f"{w} → {_FOUND} (typo of {_COMPANY})", spelled)


def _whole_names(word: QueryWord, aliases: Aliases) -> list[tuple[str, Company]]:
    """The names of the alias file that a pattern word (초성, typo) spells whole, with their companies."""
    keys = aliases.all_keys()
    found = matched_pieces(pa.array(keys, pa.string()), dataclasses.replace(word, masks=()), across_spaces=False)
    return [
        (key, company)
        for key, piece in zip(keys, found, strict=True)
        if piece == key and (company := aliases.company_of_key(key)) is not None
    ]


def _company_variants(
    words: list[QueryWord],
    i: int,
    aliases: Aliases,
    template: str,
    spelled: list[tuple[str, Company]] | None = None,
) -> list[_Variant]:
    """`words` with word `i` replaced by each name of every company that word spells whole."""
    spelled = _whole_names(words[i], aliases) if spelled is None else spelled
    variants = []
    for company in dict.fromkeys(company for _, company in spelled):
        for other in aliases.keys(company):  # the spelled name too: as a name, it matches however it is spaced
            name = name_word(other, aliases.masks(company, other))
            explain = ((name, template.replace(_COMPANY, company.canonical)),)
            variants.append(_Variant([name if j == i else w for j, w in enumerate(words)], True, explain))
    return variants


def _alias_variants(typed: list[str], mentions: list[Mention], aliases: Aliases) -> Iterator[_Variant]:
    """Every combination of names for the companies the query names, but the one as typed."""
    choices = [aliases.keys(m.company) for m in mentions]
    covered = {i: m for m in mentions for i in range(m.start, m.end)}
    for count, combo in enumerate(itertools.product(*choices)):
        if count >= _MAX_ALIAS_VARIANTS:
            return
        if all(key == m.typed for key, m in zip(combo, mentions, strict=True)):
            continue
        words: list[QueryWord] = []
        explain: list[tuple[QueryWord, str]] = []
        for key, m in zip(combo, mentions, strict=True):
            word = name_word(key, aliases.masks(m.company, key))
            words.append(word)
            if key != m.typed:
                shown = " ".join(typed[m.start : m.end])
                explain.append((word, f"{shown} → {_FOUND} (alias of {m.company.canonical})"))
        words += [literal_word(w) for i, w in enumerate(typed) if i not in covered]
        yield _Variant(words, True, tuple(explain))


def _merge(entries: list[_Entry]) -> _Entry:
    docs = pa.concat_tables([e.segment.live_docs(e.live) for e in entries])
    return _Entry(Segment.build(docs), docs.num_rows)
