"""One immutable search segment: documents ordered newest first, an n-gram inverted index over them, id hashes."""

from __future__ import annotations

import bisect
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from querylog.analytics._search_text import DOC_BITS, INTENT_KIND, KIND_SHIFT, codepoints, gram_pairs

__all__ = [
    "DOCS_SCHEMA",
    "FORMAT_VERSION",
    "PostingList",
    "Segment",
    "SegmentFormatError",
    "find_ids",
    "hash_strings",
    "sorted_unique",
]

#: 3: bigrams across a space ("삼성 전자" holds 성전), so that a word typed without the space finds the text.
#: 4: the initial consonants (초성) of the first syllables of Hangul words, for ㄴㅇㅂ → 네이버.
#: 5: characters that draw nothing (zero-width space and joiners, soft hyphen) folded away.
FORMAT_VERSION: Final = 5


class SegmentFormatError(ValueError):
    """A segment written by another version of the index; `older` when this version can rebuild it."""

    def __init__(self, message: str, *, older: bool) -> None:
        super().__init__(message)
        self.older = older


#: The documents a segment is built from. `folded` is null where it equals `text`, which halves the text
#: stored for mostly-Korean logs (folding changes nothing in Hangul).
DOCS_SCHEMA: Final = pa.schema(
    [
        ("query_id", pa.large_string()),
        ("ts", pa.int64()),  # microseconds since the epoch, UTC
        ("intent", pa.large_string()),
        ("text", pa.large_string()),
        ("folded", pa.large_string()),
    ]
)

# Texts per gram-extraction step. Small enough that every temporary stays under glibc's 32 MiB mmap threshold:
# freed blocks are then reused instead of returned to the kernel, and page faults (slow on this kind of VM,
# ~6 us a page) stop dominating the build.
_CHUNK_TEXTS: Final = 1 << 16
# A list at least this long is stored as a bitmap when that is also smaller than the array (count >= n/32).
# Tests lower it to exercise the bitmap paths on small corpora.
DENSE_MIN_COUNT = 4096

_ARRAYS: Final = (
    "key_fence",
    "ts_fence",
    "keys",
    "counts",
    "where",
    "postings",
    "bitmaps",
    "ts",
    "intent",
    "id_hash",
    "id_doc",
)
# Every _KEY_FENCE-th key (every _TS_FENCE-th ts), in a small array read first: a lookup then binary-searches one
# 4 KiB block of keys instead of the whole memory-mapped array, i.e. touches 1-2 pages rather than ~20 — which
# is what a search costs when the index is not in the page cache yet.
_KEY_FENCE: Final = 512
_TS_FENCE: Final = 512


@dataclass(frozen=True, slots=True)
class PostingList:
    """The documents holding one gram: a sorted array, or a bitmap (one bit a document) when the list is dense."""

    count: int
    docs: npt.NDArray[np.uint32] | None
    bits: npt.NDArray[np.uint64] | None


def sorted_unique(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Sorted distinct values (np.unique is two orders of magnitude slower on this numpy build)."""
    if len(values) == 0:
        return values
    # polars sorts 64-bit keys ~5x faster than numpy here (multi-threaded), but costs ~1 ms a call.
    ordered = pl.Series(values).sort().to_numpy() if len(values) > 1 << 16 else np.sort(values)
    keep = np.ones(len(ordered), np.bool_)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    result: npt.NDArray[Any] = ordered[keep]
    return result


def _splitmix(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    result: npt.NDArray[np.uint64] = h ^ (h >> np.uint64(31))
    return result


_Q: Final = 0x9E3779B97F4A7C15
_Q_INV: Final = pow(_Q, -1, 1 << 64)


def hash_strings(values: pa.Array) -> npt.NDArray[np.uint64]:
    """A stable 64-bit hash of each string (no nulls), vectorised; equal hashes are always re-checked exactly.

    A polynomial hash over the UTF-8 bytes, computed from prefix sums so that no Python loop touches a string;
    polars' and DuckDB's hashes are not promised stable across versions, and these hashes live on disk.
    """
    values = values.cast(pa.large_binary())
    n = len(values)
    out = np.empty(n, np.uint64)
    _, off_buf, data_buf = values.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    step = 1 << 16  # temporaries under the 32 MiB mmap threshold (see _CHUNK_TEXTS)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        base = int(offsets[lo])
        block = data[base : int(offsets[hi])].astype(np.uint64)
        m = len(block)
        powers = np.full(m + 1, _Q, np.uint64)
        powers[0] = 1
        np.cumprod(powers, out=powers)
        inverse = np.full(m + 1, _Q_INV, np.uint64)
        inverse[0] = 1
        np.cumprod(inverse, out=inverse)
        prefix = np.zeros(m + 1, np.uint64)
        np.cumsum(block * powers[:m], out=prefix[1:])
        start = offsets[lo:hi] - base
        end = offsets[lo + 1 : hi + 1] - base
        h = (prefix[end] - prefix[start]) * inverse[start]
        h ^= (end - start).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)
        out[lo:hi] = _splitmix(h)
    return out


def find_ids(
    id_hash: npt.NDArray[np.uint64],
    id_doc: npt.NDArray[np.uint32],
    id_column: pa.ChunkedArray | pa.Array,
    live: int,
    hashes: npt.NDArray[np.uint64],
    ids: pa.Array,
) -> npt.NDArray[np.bool_]:
    """Which of `ids` occur among rows [0, live) of `id_column`, given its sorted hashes and their row numbers."""
    found = np.zeros(len(ids), np.bool_)
    if len(id_hash) == 0 or len(ids) == 0:
        return found
    lo = np.searchsorted(id_hash, hashes, side="left")
    hi = np.searchsorted(id_hash, hashes, side="right")
    # Equal hashes are confirmed with the strings, so a collision never drops a row: vectorised for the usual
    # single hit, one by one where the column itself holds colliding ids.
    single = np.flatnonzero(hi - lo == 1)
    rows = np.asarray(id_doc[lo[single]])
    alive = rows < live
    single, rows = single[alive], rows[alive]
    if single.size:
        same = pc.equal(id_column.take(pa.array(rows)), ids.take(pa.array(single)))
        found[single[same.to_numpy(zero_copy_only=False)]] = True
    for i in np.flatnonzero(hi - lo > 1):
        many = np.asarray(id_doc[lo[i] : hi[i]])
        many = many[many < live]
        if many.size and ids[int(i)].as_py() in id_column.take(pa.array(many)).to_pylist():
            found[i] = True
    return found


def _fsync_write(path: Path, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


class Segment:
    """Documents sorted by (ts desc, query_id asc), so document number order is recency order.

    That order is what makes top-k cheap: every posting list is sorted by document number, so walking any list
    from the start meets the newest matches first, and `since` is a prefix of the segment.
    """

    __slots__ = (
        "bitmaps",
        "counts",
        "docs",
        "id_doc",
        "id_hash",
        "intent",
        "intents",
        "key_fence",
        "keys",
        "n",
        "name",
        "postings",
        "ts",
        "ts_fence",
        "where",
    )

    def __init__(
        self,
        *,
        name: str | None,
        docs: pa.Table,
        intents: list[str],
        arrays: dict[str, npt.NDArray[Any]],
    ) -> None:
        self.name = name  # directory name once written; None while the segment lives only in memory
        self.docs = docs  # query_id, text, folded
        self.n: int = docs.num_rows
        self.intents = intents
        self.key_fence = np.array(arrays["key_fence"], dtype=np.uint64)  # small: copied into memory
        self.ts_fence = np.array(arrays["ts_fence"], dtype=np.int64)
        self.keys: npt.NDArray[np.uint64] = arrays["keys"]
        self.counts: npt.NDArray[np.int64] = arrays["counts"]
        self.where: npt.NDArray[np.int64] = arrays["where"]
        self.postings: npt.NDArray[np.uint32] = arrays["postings"]
        self.bitmaps: npt.NDArray[np.uint64] = arrays["bitmaps"]
        self.ts: npt.NDArray[np.int64] = arrays["ts"]
        self.intent: npt.NDArray[np.int16] = arrays["intent"]
        self.id_hash: npt.NDArray[np.uint64] = arrays["id_hash"]
        self.id_doc: npt.NDArray[np.uint32] = arrays["id_doc"]

    # -- reading ------------------------------------------------------------------------------------------

    def lookup(self, key: int) -> PostingList | None:
        """The posting list of one gram key, or None if no document in the segment holds it."""
        block = int(np.searchsorted(self.key_fence, np.uint64(key), side="right")) - 1
        if block < 0:
            return None
        lo = block * _KEY_FENCE
        i = lo + int(np.searchsorted(self.keys[lo : lo + _KEY_FENCE], np.uint64(key)))
        if i == len(self.keys) or int(self.keys[i]) != key:
            return None
        count = int(self.counts[i])
        where = int(self.where[i])
        if where < 0:
            return PostingList(count, None, self.bitmaps[-where - 1])
        return PostingList(count, self.postings[where : where + count], None)

    def intent_code(self, intent: str) -> int | None:
        try:
            return self.intents.index(intent)
        except ValueError:
            return None

    def newer_than(self, cutoff_us: int) -> int:
        """How many documents have ts >= cutoff: documents are newest first, so they are a prefix."""
        fence = self.ts_fence
        block = bisect.bisect_left(range(len(fence)), True, key=lambda i: bool(fence[i] < cutoff_us))
        if block == 0:
            return 0
        lo = (block - 1) * _TS_FENCE
        ts = self.ts[lo : lo + _TS_FENCE]
        return lo + bisect.bisect_left(range(len(ts)), True, key=lambda i: bool(ts[i] < cutoff_us))

    def folded(self, doc_ids: npt.NDArray[np.uint32]) -> pa.Array:
        idx = pa.array(doc_ids)
        return pc.coalesce(self.docs.column("folded").take(idx), self.docs.column("text").take(idx)).combine_chunks()

    def column(self, name: str, doc_ids: npt.NDArray[np.uint32]) -> list[Any]:
        values: list[Any] = self.docs.column(name).take(pa.array(doc_ids)).to_pylist()
        return values

    def find_ids(self, hashes: npt.NDArray[np.uint64], ids: pa.Array, live: int) -> npt.NDArray[np.bool_]:
        """Which of `ids` (with their `hashes`) this segment holds among its first `live` documents."""
        return find_ids(self.id_hash, self.id_doc, self.docs.column("query_id"), live, hashes, ids)

    def live_docs(self, live: int) -> pa.Table:
        """The first `live` documents in DOCS_SCHEMA, for merging into a new segment."""
        codes = np.asarray(self.intent[:live], dtype=np.int32)
        intent = pa.DictionaryArray.from_arrays(
            pa.array(codes, mask=codes < 0), pa.array(self.intents, pa.large_string())
        ).dictionary_decode()
        head = self.docs.slice(0, live)
        return pa.table(
            [head["query_id"], pa.array(np.asarray(self.ts[:live])), intent, head["text"], head["folded"]],
            schema=DOCS_SCHEMA,
        )

    # -- building -----------------------------------------------------------------------------------------

    @classmethod
    def build(cls, docs: pa.Table) -> Segment:
        """Index documents in DOCS_SCHEMA (query_ids unique)."""
        order = pc.sort_indices(docs, sort_keys=[("ts", "descending"), ("query_id", "ascending")])
        docs = docs.take(order).combine_chunks()
        n = docs.num_rows
        ts = docs.column("ts").to_numpy().astype(np.int64)
        intents, codes = _intent_codes(docs.column("intent"))
        keys, counts, postings = _invert(docs.column("folded"), docs.column("text"), n)
        keys, counts, postings = _append_intents(keys, counts, postings, codes, len(intents))
        where, postings, bitmaps = _densify(counts, postings, n)
        id_hash = hash_strings(docs.column("query_id").combine_chunks())
        id_order = np.argsort(id_hash, kind="stable")
        arrays: dict[str, npt.NDArray[Any]] = {
            "key_fence": keys[::_KEY_FENCE].copy(),
            "ts_fence": ts[::_TS_FENCE].copy(),
            "keys": keys,
            "counts": counts,
            "where": where,
            "postings": postings,
            "bitmaps": bitmaps,
            "ts": ts,
            "intent": codes,
            "id_hash": id_hash[id_order],
            "id_doc": id_order.astype(np.uint32),
        }
        table = pa.table(
            {"query_id": docs.column("query_id"), "text": docs.column("text"), "folded": docs.column("folded")}
        ).combine_chunks()
        return cls(name=None, docs=table, intents=intents, arrays=arrays)

    # -- storage ------------------------------------------------------------------------------------------

    def write(self, directory: Path) -> None:
        """Write the three files and fsync them; the caller makes the segment visible by committing a manifest.

        arrays.bin holds every numpy array back to back (64-byte aligned), so a segment costs three fsyncs
        rather than one a file; meta.json, written last, records where each array starts.
        """
        directory.mkdir(parents=True)
        layout: dict[str, dict[str, Any]] = {}

        def write_arrays(f: Any) -> None:
            for name in _ARRAYS:
                array = np.ascontiguousarray(getattr(self, name))
                f.write(b"\0" * (-f.tell() % 64))
                layout[name] = {"offset": f.tell(), "dtype": array.dtype.str, "shape": list(array.shape)}
                if array.size:
                    f.write(array.reshape(-1).data.cast("B"))

        def write_docs(f: Any) -> None:
            with pa.ipc.new_file(f, self.docs.schema) as writer:
                writer.write_table(self.docs)

        _fsync_write(directory / "arrays.bin", write_arrays)
        _fsync_write(directory / "docs.arrow", write_docs)
        meta = {"format": FORMAT_VERSION, "n": self.n, "intents": self.intents, "arrays": layout}
        _fsync_write(directory / "meta.json", lambda f: f.write(json.dumps(meta, ensure_ascii=False).encode()))
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def open(cls, directory: Path) -> Segment:
        """Memory-map a written segment: opening costs nothing, pages load as searches touch them."""
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            found = meta.get("format")
            raise SegmentFormatError(
                f"{directory}: segment format {found}, expected {FORMAT_VERSION}",
                older=isinstance(found, int) and found < FORMAT_VERSION,
            )
        path = directory / "arrays.bin"
        raw = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name in _ARRAYS:
            spec = meta["arrays"][name]
            dtype = np.dtype(spec["dtype"])
            size = int(np.prod(spec["shape"], dtype=np.int64)) * dtype.itemsize
            arrays[name] = raw[spec["offset"] : spec["offset"] + size].view(dtype).reshape(spec["shape"])
        docs = pa.ipc.open_file(pa.memory_map(str(directory / "docs.arrow"))).read_all()
        segment = cls(name=directory.name, docs=docs, intents=list(meta["intents"]), arrays=arrays)
        if segment.n != meta["n"]:
            raise ValueError(f"{directory}: {segment.n} documents, meta.json says {meta['n']}")
        return segment


def _intent_codes(column: pa.ChunkedArray) -> tuple[list[str], npt.NDArray[np.int16]]:
    encoded = pc.dictionary_encode(column.combine_chunks())
    names: list[str] = encoded.dictionary.to_pylist()
    if len(names) > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} distinct intents, got {len(names)}")
    # Sorted names make the segment's bytes a function of its documents alone.
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.empty(len(names) + 1, np.int16)
    remap[-1] = -1
    remap[np.array(order, dtype=np.int64)] = np.arange(len(names), dtype=np.int16)
    raw = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return [names[i] for i in order], remap[raw]


_Grams = tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]


def _chunk_grams(folded: pa.ChunkedArray, text: pa.ChunkedArray, lo: int) -> _Grams | None:
    """For texts [lo, lo + _CHUNK_TEXTS): distinct gram keys, each one's document count, and the documents."""
    chunk = pc.coalesce(folded.slice(lo, _CHUNK_TEXTS), text.slice(lo, _CHUNK_TEXTS)).combine_chunks()
    cps, starts = codepoints(chunk)
    pairs = sorted_unique(gram_pairs(cps, starts))
    del cps, starts
    if len(pairs) == 0:  # only blank texts
        return None
    grams = pairs >> np.uint64(DOC_BITS)
    docs = (pairs & np.uint64((1 << DOC_BITS) - 1)).astype(np.uint32) + np.uint32(lo)
    del pairs
    group_starts = np.flatnonzero(np.concatenate(([True], grams[1:] != grams[:-1])))
    sizes = np.diff(np.append(group_starts, len(grams))).astype(np.uint32)
    return grams[group_starts], sizes, docs


def _invert(
    folded: pa.ChunkedArray, text: pa.ChunkedArray, n: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Gram keys (sorted), their document counts, and all posting lists back to back (each sorted)."""
    starts = range(0, n, _CHUNK_TEXTS)
    if len(starts) > 1:  # numpy and polars release the GIL in the heavy calls, so chunks overlap on two cores
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            found = list(pool.map(lambda lo: _chunk_grams(folded, text, lo), starts))
    else:
        found = [_chunk_grams(folded, text, lo) for lo in starts]
    chunks = [c for c in found if c is not None]
    del found
    if not chunks:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint32)
    keys = sorted_unique(np.concatenate([c[0] for c in chunks]))
    counts = np.zeros(len(keys), np.int64)
    for grams, sizes, _ in chunks:
        counts[np.searchsorted(keys, grams)] += sizes
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    postings = np.empty(int(offsets[-1]), np.uint32)
    cursor = offsets[:-1].copy()
    # A counting sort: chunks hold ascending document numbers, so appending chunk after chunk to each gram's
    # slot keeps every list sorted without one global sort of all occurrences. Chunks are freed as they land.
    chunks.reverse()
    while chunks:
        grams, sizes, docs = chunks.pop()
        slot = np.searchsorted(keys, grams)
        sizes64 = sizes.astype(np.int64)
        group_base = np.repeat(cursor[slot] - (np.cumsum(sizes64) - sizes64), sizes64)
        postings[group_base + np.arange(len(docs), dtype=np.int64)] = docs
        cursor[slot] += sizes64
    return keys, counts, postings


def _append_intents(
    keys: npt.NDArray[np.uint64],
    counts: npt.NDArray[np.int64],
    postings: npt.NDArray[np.uint32],
    codes: npt.NDArray[np.int16],
    n_intents: int,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Intent lists join the gram lists, so an intent filter is one more list to intersect (rarest first)."""
    if n_intents == 0:
        return keys, counts, postings
    order = np.argsort(codes, kind="stable").astype(np.uint32)
    per_code = np.bincount(codes[codes >= 0].astype(np.int64), minlength=n_intents)
    skip = int(np.count_nonzero(codes < 0))
    present = np.flatnonzero(per_code)
    intent_keys = (np.uint64(INTENT_KIND) << np.uint64(KIND_SHIFT)) | present.astype(np.uint64)
    return (
        np.concatenate([keys, intent_keys]),
        np.concatenate([counts, per_code[present].astype(np.int64)]),
        np.concatenate([postings, order[skip:]]),
    )


def _densify(
    counts: npt.NDArray[np.int64], postings: npt.NDArray[np.uint32], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.uint64]]:
    """Move long lists to bitmaps: smaller on disk, and AND-ing two common grams becomes word-wise."""
    threshold = max(DENSE_MIN_COUNT, -(-n // 32))
    dense = counts >= threshold
    n_words = -(-n // 64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    dense_ids = np.flatnonzero(dense)
    bitmaps = np.zeros((len(dense_ids), n_words), np.uint64)
    for row, i in enumerate(dense_ids):
        flags = np.zeros(n_words * 64, np.bool_)
        flags[postings[offsets[i] : offsets[i + 1]]] = True
        bitmaps[row] = np.packbits(flags, bitorder="little").view(np.uint64)
    sparse_counts = np.where(dense, 0, counts)
    where = np.zeros(len(counts), np.int64)
    np.cumsum(sparse_counts[:-1], out=where[1:])
    where[dense_ids] = -(np.arange(len(dense_ids), dtype=np.int64) + 1)
    if len(dense_ids):
        postings = postings[np.repeat(~dense, counts)]
    return where, postings, bitmaps
