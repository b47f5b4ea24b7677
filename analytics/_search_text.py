"""Text folding, word boundaries and n-gram keys for the search index: one definition for build and query."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CLASS_TABLE",
    "SPACE_TABLE",
    "WHITESPACE_RUN",
    "QueryWord",
    "codepoints",
    "explain_match",
    "fold",
    "fold_one",
    "gram_pairs",
    "query_words",
    "starts_only",
    "starts_word_count",
]

_MAX_CP: Final = 0x110000

# Word classes. A word starts where the class changes or after a non-word character, so a Latin run glued to
# Hangul ("nvidia실적") is two words, while a Hangul compound ("네이버웹툰") stays one.
NON_WORD: Final = 0
HANGUL: Final = 1
HAN: Final = 2
KANA: Final = 3
OTHER_WORD: Final = 4

_HANGUL_RANGES: Final = ((0x1100, 0x1200), (0x3130, 0x3190), (0xA960, 0xA980), (0xAC00, 0xD7A4), (0xD7B0, 0xD800))
_HAN_RANGES: Final = ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0xF900, 0xFB00), (0x20000, 0x40000))
_KANA_RANGES: Final = ((0x3040, 0x3100), (0x31F0, 0x3200))

# Key layout: kind (2 bits) | first code point (21 bits) | second code point (21 bits). A key shifted left by 20
# bits still fits 64 bits, which leaves 20 bits for a document number while building (see `gram_pairs`).
UNIGRAM: Final = 0
BIGRAM: Final = 1
START_UNIGRAM: Final = 2
START_BIGRAM: Final = 3
INTENT_KIND: Final = 4  # intent lists live in the same key space of a segment but never in `gram_pairs`
KIND_SHIFT: Final = 42
CP_SHIFT: Final = 21
DOC_BITS: Final = 20


def _tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    classes = np.zeros(_MAX_CP, dtype=np.uint8)
    # str.isalnum over the BMP takes ~10 ms; outside it only CJK extensions matter once NFKC has folded the
    # mathematical alphanumerics, so the rest stays NON_WORD (each such character is a word start on its own).
    for cp in range(0x10000):
        if chr(cp).isalnum():
            classes[cp] = OTHER_WORD
    for ranges, cls in ((_HANGUL_RANGES, HANGUL), (_HAN_RANGES, HAN), (_KANA_RANGES, KANA)):
        for lo, hi in ranges:
            classes[lo:hi] = cls
    spaces = np.zeros(_MAX_CP, dtype=np.bool_)
    # The same set as str.split() uses, so query words and the index agree on what separates words.
    for cp in range(0x3001):
        if chr(cp).isspace():
            spaces[cp] = True
            classes[cp] = NON_WORD
    return classes, spaces


CLASS_TABLE, SPACE_TABLE = _tables()
#: An RE2 pattern for a run of the characters `SPACE_TABLE` calls whitespace (RE2's \s is ASCII only).
WHITESPACE_RUN: Final = "[" + "".join(f"\\x{{{cp:x}}}" for cp in np.flatnonzero(SPACE_TABLE)) + "]+"
_CLASS_BYTES: Final = CLASS_TABLE.tobytes()


def fold(texts: pa.Array) -> pa.Array:
    """NFKC (composes NFD Hangul, narrows full-width forms) then lower case: the form both sides match in."""
    return pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))


def fold_one(text: str) -> str:
    """`fold` for one string, through the same kernels so that query and index can never disagree."""
    folded: str = fold(pa.array([text], pa.string()))[0].as_py()
    return folded


def _starts_word(text: str, i: int) -> bool:
    if i == 0:
        return True
    prev = _CLASS_BYTES[ord(text[i - 1])]
    return prev == NON_WORD or prev != _CLASS_BYTES[ord(text[i])]


def starts_word_count(text: str, words: tuple[str, ...]) -> int:
    """How many of `words` occur in `text` (both folded) at least once at the start of a word."""
    count = 0
    for word in words:
        i = text.find(word)
        while i >= 0:
            if _starts_word(text, i):
                count += 1
                break
            i = text.find(word, i + 1)
    return count


@dataclass(frozen=True, slots=True)
class QueryWord:
    """One folded query word: the gram keys every match contains, and the key a word-start match contains."""

    text: str
    grams: tuple[int, ...]
    start_gram: int


def _key(kind: int, a: int, b: int = 0) -> int:
    return (kind << KIND_SHIFT) | (a << CP_SHIFT) | b


def starts_only(word: str) -> bool:
    """Whether a one-character query word matches only where it starts a word (see `query_words`)."""
    if len(word) != 1:
        return False
    cp = ord(word)
    return not (0xAC00 <= cp < 0xD7A4) and CLASS_TABLE[cp] not in (HAN, KANA)


def query_words(text: str) -> list[QueryWord]:
    """The distinct whitespace-separated words of the folded query, in order of appearance."""
    words: list[QueryWord] = []
    seen: set[str] = set()
    for word in fold_one(text).split():
        if word in seen:
            continue
        seen.add(word)
        cps = [ord(c) for c in word]
        if len(cps) == 1:
            start = _key(START_UNIGRAM, cps[0])
            # One Latin letter, digit or jamo would match nearly every text inside its words: it must start a
            # word. A Hangul syllable or a Han character alone is a word of its own (삼, 株): any occurrence.
            grams: tuple[int, ...] = (start,) if starts_only(word) else (_key(UNIGRAM, cps[0]),)
        else:
            grams = tuple(dict.fromkeys(_key(BIGRAM, a, b) for a, b in itertools.pairwise(cps)))
            start = _key(START_BIGRAM, cps[0], cps[1])
        words.append(QueryWord(word, grams, start))
    return words


def explain_match(text: str, query: str) -> str:
    """Why `text` matched `query`, word by word: ``네이버: starts a word; 웹툰: inside a word; 삼성전자: across
    spacing`` (the tiers of the ranking: a word start ranks above a match inside a word or across spaces)."""
    folded = fold_one(text)
    joined = "".join(folded.split())
    reasons = []
    for word in query_words(query):
        w = word.text
        if w in folded:
            starts = any(_starts_word(folded, i) for i in range(len(folded)) if folded.startswith(w, i))
            reasons.append(f"{w}: {'starts a word' if starts else 'inside a word'}")
        elif w in joined:
            reasons.append(f"{w}: across spacing")
        else:
            reasons.append(f"{w}: not found")
    return "; ".join(reasons)


def codepoints(texts: pa.Array) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """Decode a string array (no nulls) into one code-point array and per-text start offsets (n + 1)."""
    texts = texts.cast(pa.large_string())
    n = len(texts)
    _, off_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[texts.offset : texts.offset + n + 1]
    if data_buf is None or n == 0 or offsets[-1] == offsets[0]:
        return np.zeros(0, np.uint32), np.zeros(n + 1, np.int64)
    raw = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    # Arrow strings are valid UTF-8, so decoding is arithmetic on lead bytes and the continuation bytes after them.
    lead = (raw & 0xC0) != 0x80
    leads_before = np.zeros(len(raw) + 1, np.int64)
    np.cumsum(lead, out=leads_before[1:])
    starts = leads_before[offsets - offsets[0]]
    pos = np.flatnonzero(lead)
    padded = np.zeros(len(raw) + 3, np.uint32)
    padded[: len(raw)] = raw
    b0 = padded[pos]
    c1 = padded[pos + 1] & 0x3F
    c2 = padded[pos + 2] & 0x3F
    c3 = padded[pos + 3] & 0x3F
    cps = np.where(
        b0 < 0x80,
        b0,
        np.where(
            b0 < 0xE0,
            ((b0 & 0x1F) << 6) | c1,
            np.where(
                b0 < 0xF0, ((b0 & 0x0F) << 12) | (c1 << 6) | c2, ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3
            ),
        ),
    ).astype(np.uint32)
    return cps, starts


def gram_pairs(cps: npt.NDArray[np.uint32], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """Every (gram key, text number) of up to 2**20 folded texts, as `key << 20 | text`, unsorted, with repeats.

    Grams: each non-space character (unigram), each pair of adjacent non-space characters (bigram), and both
    again, as separate kinds, where the first character starts a word. A query word's grams are then always a
    subset of a matching text's grams, which makes the candidate lists a superset of the true matches. Two
    non-space characters with only whitespace between them also make a bigram ("삼성 전자" holds 성전): a word
    typed without the space ("삼성전자") then finds the text, which the verification accepts with its whitespace
    removed (`WHITESPACE_RUN`).
    """
    n_texts = len(starts) - 1
    if n_texts > 1 << DOC_BITS:
        raise ValueError(f"at most {1 << DOC_BITS} texts per call, got {n_texts}")
    total = len(cps)
    if total == 0:
        return np.zeros(0, np.uint64)
    lengths = np.diff(starts)
    text_of = np.repeat(np.arange(n_texts, dtype=np.uint64), lengths)
    space = SPACE_TABLE[cps]
    cls = CLASS_TABLE[cps]
    nonempty = lengths > 0
    first = np.zeros(total, np.bool_)
    first[starts[:-1][nonempty]] = True
    next_ok = np.ones(total, np.bool_)  # the next code point exists, belongs to the same text and is no space
    next_ok[starts[1:][nonempty] - 1] = False
    next_ok[:-1] &= ~space[1:]
    next_ok[-1] = False
    prev_cls = np.empty(total, np.uint8)
    prev_cls[0] = NON_WORD
    prev_cls[1:] = cls[:-1]
    word = ~space
    start = word & (first | (prev_cls == NON_WORD) | (prev_cls != cls))
    bigram = word & next_ok
    a = cps.astype(np.uint64) << np.uint64(CP_SHIFT)
    b = np.zeros(total, np.uint64)
    b[:-1] = cps[1:]
    ab = a | b
    # Across spaces: two non-space characters of one text with only whitespace between them. With the adjacent
    # pairs above, these are the bigrams of the text with its whitespace removed.
    solid = np.flatnonzero(word)
    gap = (np.diff(solid) > 1) & (text_of[solid[:-1]] == text_of[solid[1:]])
    left, right = solid[:-1][gap], solid[1:][gap]
    kind = np.uint64(KIND_SHIFT)
    parts = (
        a[word],
        (np.uint64(BIGRAM) << kind) | ab[bigram],
        (np.uint64(BIGRAM) << kind) | a[left] | cps[right].astype(np.uint64),
        (np.uint64(START_UNIGRAM) << kind) | a[start],
        (np.uint64(START_BIGRAM) << kind) | ab[start & bigram],
    )
    docs = (text_of[word], text_of[bigram], text_of[left], text_of[start], text_of[start & bigram])
    keys = np.concatenate(parts)
    keys <<= np.uint64(DOC_BITS)
    keys |= np.concatenate(docs)
    return keys
