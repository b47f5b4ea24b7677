"""Rows added since the last commit: normalised and de-duplicated at once, indexed lazily, as one segment."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from querylog.analytics._search_segment import Segment, find_ids, hash_strings

__all__ = ["PendingRows"]

_MAX_BATCHES: Final = 8


class _Batch:
    """One added table and its sorted id hashes, for the duplicate check of later additions."""

    __slots__ = ("docs", "id_hash", "id_row")

    def __init__(self, docs: pa.Table, hashes: npt.NDArray[np.uint64] | None = None) -> None:
        self.docs = docs
        if hashes is None:
            hashes = hash_strings(docs.column("query_id").combine_chunks())
        order = np.argsort(hashes, kind="stable")
        self.id_hash = hashes[order]
        self.id_row = order.astype(np.uint32)


class PendingRows:
    """Buffered documents (DOCS_SCHEMA). Building the index waits for a search or the commit, so a bulk load
    fed in many batches costs one segment build rather than one per batch plus merges."""

    def __init__(self) -> None:
        self._batches: list[_Batch] = []
        self._segment: Segment | None = None  # built on demand, dropped on every change

    def __len__(self) -> int:
        return sum(b.docs.num_rows for b in self._batches)

    def find_ids(self, hashes: npt.NDArray[np.uint64], ids: pa.Array) -> npt.NDArray[np.bool_]:
        found = np.zeros(len(ids), np.bool_)
        for b in self._batches:
            found |= find_ids(b.id_hash, b.id_row, b.docs.column("query_id"), b.docs.num_rows, hashes, ids)
        return found

    def append(self, docs: pa.Table, hashes: npt.NDArray[np.uint64]) -> None:
        self._batches.append(_Batch(docs, hashes))
        self._segment = None
        if len(self._batches) > _MAX_BATCHES:
            # Merge the smaller half so that the duplicate check stays a handful of binary searches; the
            # largest batch is left alone, which keeps a long series of small adds linear, not quadratic.
            self._batches.sort(key=lambda b: -b.docs.num_rows)
            small = self._batches[_MAX_BATCHES // 2 :]
            self._batches = [*self._batches[: _MAX_BATCHES // 2], _Batch(pa.concat_tables([b.docs for b in small]))]

    def remove_older_than(self, cutoff_us: int) -> int:
        removed = 0
        kept: list[_Batch] = []
        for b in self._batches:
            keep = pc.greater_equal(b.docs.column("ts"), pa.scalar(cutoff_us, pa.int64()))
            n_keep = pc.sum(keep).as_py() or 0
            removed += b.docs.num_rows - n_keep
            if n_keep == b.docs.num_rows:
                kept.append(b)
            elif n_keep:
                kept.append(_Batch(b.docs.filter(keep)))
        if removed:
            self._batches = kept
            self._segment = None
        return removed

    def segment(self) -> Segment | None:
        """The buffered rows as one in-memory segment (None when empty)."""
        if self._segment is None and self._batches:
            self._segment = Segment.build(pa.concat_tables([b.docs for b in self._batches]))
        return self._segment

    def clear(self) -> None:
        self._batches = []
        self._segment = None
