"""Text folding, word boundaries and n-gram keys for the search index: one definition for build and query."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from querylog.logging.events import INVISIBLE_CHARS

__all__ = [
    "CLASS_TABLE",
    "INITIALS",
    "SPACE_TABLE",
    "WHITESPACE_RUN",
    "QueryWord",
    "codepoints",
    "explain_match",
    "fold",
    "fold_one",
    "gram_pairs",
    "initials_shown",
    "initials_word",
    "is_initials",
    "literal_word",
    "masked",
    "matched_pieces",
    "name_word",
    "query_words",
    "starts_only",
    "starts_word_count",
    "typo_eligible",
    "typo_words",
    "unquoted",
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

# Hangul syllables are composed arithmetically: 0xAC00 + (initial * 21 + medial) * 28 + final.
_SYLLABLE_FIRST: Final = 0xAC00
_SYLLABLE_LAST: Final = 0xD7A3
_PER_INITIAL: Final = 21 * 28
#: The 19 initial consonants (초성) as compatibility jamo, in the order of the syllable arithmetic.
INITIALS: Final = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_FINALS: Final = 28
_MEDIALS: Final = 21
# 초성 keys: a code point field holds at most 0x10FFFF, so values above it never collide with text. A word that
# starts with two syllables holds (INITIAL_BASE + i0, INITIAL_BASE + i1) as a START_BIGRAM; with three, also
# (INITIAL_PAIR_BASE + i0 * 19 + i1, INITIAL_BASE + i2).
INITIAL_BASE: Final = 0x110000
INITIAL_PAIR_BASE: Final = INITIAL_BASE + 0x100


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


# A question pasted from a web page or a chat app carries characters that draw nothing inside words (삼성\u200d전자),
# where no one can type them: folding drops them, in one RE2 pass (measured on 1M questions: cheaper than a literal
# replace per character). The set is the event model's, which calls a question of only these blank.
_INVISIBLE_RE: Final = f"[{INVISIBLE_CHARS}]"


def fold(texts: pa.Array) -> pa.Array:
    """NFKC (composes NFD Hangul, narrows full-width forms) then lower case, without the characters that draw
    nothing: the form both sides match in."""
    return pc.replace_substring_regex(pc.utf8_lower(pc.utf8_normalize(texts, "NFKC")), _INVISIBLE_RE, "")


#: Quotes people put around a phrase (ASCII, typographic, CJK corner brackets).
_QUOTES: Final = "\"'“”‘’「」『』"


def unquoted(text: str) -> str:
    """`text` without the quotes around its words: how people write a phrase elsewhere; here every word must be found
    anyway, so ``"네이버 주가"`` finds what ``네이버 주가`` finds rather than looking for the quotes as characters."""
    return " ".join(w for w in (w.strip(_QUOTES) for w in text.split()) if w)


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
    """One folded query word: the gram keys every match contains, and the key a word-start match contains.

    A word matches where `text` is a substring of the folded text, or, when `pattern` is set, where that RE2
    pattern matches (names, 초성 and typos, which must start a word). `masks` are the longer names of other
    companies that contain this one (카카오뱅크 for 카카오): they are blanked out of the text before matching.
    """

    text: str
    grams: tuple[int, ...]
    start_gram: int | None
    pattern: str | None = None
    masks: tuple[str, ...] = ()


def _key(kind: int, a: int, b: int = 0) -> int:
    return (kind << KIND_SHIFT) | (a << CP_SHIFT) | b


def starts_only(word: str) -> bool:
    """Whether a one-character query word matches only where it starts a word (see `query_words`)."""
    if len(word) != 1:
        return False
    return not _is_syllable(word) and CLASS_TABLE[ord(word)] not in (HAN, KANA)


def literal_word(word: str, masks: tuple[str, ...] = ()) -> QueryWord:
    """A folded word that matches as a substring (the exact tier)."""
    cps = [ord(c) for c in word]
    if len(cps) == 1:
        start = _key(START_UNIGRAM, cps[0])
        # One Latin letter, digit or jamo would match nearly every text inside its words: it must start a
        # word. A Hangul syllable or a Han character alone is a word of its own (삼, 株): any occurrence.
        grams: tuple[int, ...] = (start,) if starts_only(word) else (_key(UNIGRAM, cps[0]),)
    else:
        grams = _piece_grams(word)
        start = _key(START_BIGRAM, cps[0], cps[1])
    return QueryWord(word, grams, start, masks=masks)


def query_words(text: str) -> list[QueryWord]:
    """The distinct whitespace-separated words of the folded query, in order of appearance."""
    return [literal_word(word) for word in dict.fromkeys(fold_one(text).split())]


def _piece_grams(piece: str) -> tuple[int, ...]:
    """The grams any text containing `piece` (as written or with its whitespace removed) holds."""
    if len(piece) == 1:
        return (_key(UNIGRAM, ord(piece)),)
    return tuple(dict.fromkeys(_key(BIGRAM, ord(a), ord(b)) for a, b in itertools.pairwise(piece)))


@functools.cache
def _class_set(cls: int) -> str:
    """An RE2 character class body for every code point of word class `cls` (exactly `CLASS_TABLE`'s)."""
    members = np.flatnonzero(np.equal(CLASS_TABLE, cls))
    breaks = np.flatnonzero(np.diff(members) > 1)
    firsts = np.concatenate([members[:1], members[breaks + 1]])
    lasts = np.concatenate([members[breaks], members[-1:]])
    return "".join(
        f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in zip(firsts, lasts, strict=True)
    )


def _class_of(char: str) -> str:
    return _class_set(int(CLASS_TABLE[ord(char)]))


def _starting(char: str) -> str:
    """An RE2 prefix that holds where a word whose first character is `char` starts (see `_starts_word`)."""
    return f"(?:^|[^{_class_of(char)}])"


def _ending(char: str) -> str:
    """An RE2 suffix that holds where a word ending in `char` ends: nothing of its class follows. Hangul takes
    no suffix: particles follow names (현대차는)."""
    if CLASS_TABLE[ord(char)] == HANGUL:
        return ""
    return f"(?:$|[^{_class_of(char)}])"


def _spaced(name: str) -> str:
    """An RE2 pattern for `name` (folded, no whitespace) with any spacing between its characters."""
    return f"{WHITESPACE_RUN[:-1]}*".join(_escape(c) for c in name)


def name_word(name: str, masks: tuple[str, ...] = ()) -> QueryWord:
    """A company name or code (folded, spaces removed) that must start a word and, unless it ends in Hangul, end
    one; any spacing may sit between its characters ("hyundai motor" and "현대 자동차" for hyundaimotor,
    현대자동차). 'mu' then finds "MU 주가" but not "must"; 현대차 finds 현대차는."""
    pattern = _starting(name[0]) + _found(_spaced(name)) + _ending(name[-1])
    start = _key(START_UNIGRAM, ord(name)) if len(name) == 1 else _key(START_BIGRAM, ord(name[0]), ord(name[1]))
    return QueryWord(name, _piece_grams(name), start, pattern, masks)


@functools.lru_cache(maxsize=256)
def _mask_pattern(masks: tuple[str, ...]) -> str:
    return "|".join(_spaced(m) for m in sorted(masks, key=lambda m: (-len(m), m)))


def masked(texts: pa.Array, masks: tuple[str, ...]) -> pa.Array:
    """`texts` (folded) with the names in `masks` blanked out, however they are spaced (카카오 뱅크 as 카카오뱅크)."""
    if not masks:
        return texts
    return pc.replace_substring_regex(texts, _mask_pattern(masks), "\x00")


def _found(body: str) -> str:
    """The part of a pattern that names what matched (`matched_pieces` reads it back)."""
    return f"(?P<found>{body})"


def matched_pieces(texts: pa.Array, word: QueryWord, *, across_spaces: bool = True) -> list[str | None]:
    """What `word` matched in each folded text (None where it does not), as written or, failing that, with the
    text's whitespace removed: one pattern pass over all texts."""
    if word.pattern is None:
        return [word.text if word.text in t else None for t in texts.to_pylist()]
    texts = masked(texts, word.masks)
    found = _found_in(texts, word.pattern)
    missed = [i for i, f in enumerate(found) if f is None]
    if across_spaces and missed:
        joined = pc.replace_substring_regex(texts.take(pa.array(missed)), WHITESPACE_RUN, "")
        for i, piece in zip(missed, _found_in(joined, word.pattern), strict=True):
            found[i] = piece
    return found


def _found_in(texts: pa.Array, pattern: str) -> list[str | None]:
    return [None if m is None else m["found"] for m in pc.extract_regex(texts, pattern).to_pylist()]


def _escape(text: str) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" if not c.isalnum() else c for c in text)


_CHOSEONG_FIRST: Final = 0x1100  # NFKC folds the compatibility jamo people type (ㄴ) to these (U+1102)


def is_initials(word: str) -> bool:
    """A folded query word of two or more initial consonants only (ㄴㅇㅂ): a 초성 search."""
    return len(word) >= 2 and all(0 <= ord(c) - _CHOSEONG_FIRST < len(INITIALS) for c in word)


def initials_shown(word: str) -> str:
    """A folded 초성 word as people type it (compatibility jamo: ㄴㅇㅂ)."""
    return "".join(INITIALS[ord(c) - _CHOSEONG_FIRST] for c in word)


def _syllables_with_initial(index: int) -> str:
    first = _SYLLABLE_FIRST + index * _PER_INITIAL
    return f"[\\x{{{first:x}}}-\\x{{{first + _PER_INITIAL - 1:x}}}]"


def initials_word(word: str) -> QueryWord:
    """A 초성 word: matches where a word starts with syllables having these initial consonants, in order."""
    idx = [ord(c) - _CHOSEONG_FIRST for c in word]
    grams = [_key(START_BIGRAM, INITIAL_BASE + idx[0], INITIAL_BASE + idx[1])]
    if len(idx) >= 3:
        grams.append(_key(START_BIGRAM, INITIAL_PAIR_BASE + idx[0] * len(INITIALS) + idx[1], INITIAL_BASE + idx[2]))
    pattern = _starting("가") + _found("".join(_syllables_with_initial(i) for i in idx))
    return QueryWord(word, tuple(grams), None, pattern)


def _is_syllable(char: str) -> bool:
    return _SYLLABLE_FIRST <= ord(char) <= _SYLLABLE_LAST


def jamo_neighbours(syllable: str) -> str:
    """Every syllable one jamo away from `syllable`: another initial, medial or final (adding or dropping one)."""
    code = ord(syllable) - _SYLLABLE_FIRST
    initial, rest = divmod(code, _PER_INITIAL)
    medial, final = divmod(rest, _FINALS)
    out = [chr(_SYLLABLE_FIRST + i * _PER_INITIAL + rest) for i in range(len(INITIALS)) if i != initial]
    out += [chr(_SYLLABLE_FIRST + initial * _PER_INITIAL + m * _FINALS + final) for m in range(_MEDIALS) if m != medial]
    base = _SYLLABLE_FIRST + initial * _PER_INITIAL + medial * _FINALS
    out += [chr(base + f) for f in range(_FINALS) if f != final]
    return "".join(out)


#: Typo tolerance applies to words of at least this many Hangul syllables, or ASCII letters.
TYPO_MIN_SYLLABLES: Final = 3
TYPO_MIN_LETTERS: Final = 4
#: Longer words are taken as typed: no name is this long, and a word's slips grow with the square of its length
#: (a 5,600-character word took 30 s to search, a 42,000-character one did not end).
TYPO_MAX_CHARS: Final = 32
_LETTERS: Final = "abcdefghijklmnopqrstuvwxyz"


def typo_eligible(word: str) -> bool:
    """Words long enough that one slip still says what was meant: 3+ Hangul syllables or 4+ ASCII letters.
    Digits never (005380 one digit off is another company); words past `TYPO_MAX_CHARS` never."""
    if len(word) > TYPO_MAX_CHARS:
        return False
    if all(_is_syllable(c) for c in word):
        return len(word) >= TYPO_MIN_SYLLABLES
    return len(word) >= TYPO_MIN_LETTERS and all(c in _LETTERS for c in word)


def typo_words(word: str) -> list[QueryWord]:
    """The words one slip away from `word`, each starting a word: one jamo of one syllable (Hangul), or one letter
    changed, added, dropped or two neighbours swapped (Latin). Empty when `word` is not `typo_eligible`."""
    if not typo_eligible(word):
        return []
    out: list[QueryWord] = []
    hangul = _is_syllable(word[0])
    any_letter = f"[{_LETTERS[0]}-{_LETTERS[-1]}]"
    start = _starting(word[0])

    def slip(before: str, one: str, after: str) -> QueryWord:  # `one`: a character class, or "" (none)
        grams = tuple(dict.fromkeys(g for p in (before, after) if p for g in _piece_grams(p)))
        if not one:  # a literal: all its bigrams, across the join too
            grams = _piece_grams(before + after)
        return QueryWord(word, grams, None, start + _found(_escape(before) + one + _escape(after)))

    for i in range(len(word) + (0 if hangul else 1)):
        if hangul:
            out.append(slip(word[:i], f"[{jamo_neighbours(word[i])}]", word[i + 1 :]))
            continue
        if i < len(word):
            out.append(slip(word[:i], any_letter, word[i + 1 :]))  # one letter changed
            out.append(slip(word[:i], "", word[i + 1 :]))  # one letter dropped
            if i + 1 < len(word) and word[i] != word[i + 1]:
                out.append(slip(word[:i] + word[i + 1] + word[i], "", word[i + 2 :]))  # two swapped
        out.append(slip(word[:i], any_letter, word[i:]))  # one letter added
    return list({w.pattern: w for w in out}.values())


def explain_match(text: str, query: str, searched_as: Mapping[str, str] | None = None) -> str:
    """Why `text` matched `query`, word by word: ``네이버: starts a word; 웹툰: inside a word; 삼성전자: across
    spacing`` (the tiers of the ranking: a word start ranks above a match inside a word or across spaces).

    `searched_as` maps a (folded) query word to the form search looked for instead: a company name typed with its
    particle (네이버는 → 네이버), as `Aliases.mentions` reads it; that word's reason says so."""
    folded = fold_one(text)
    joined = "".join(folded.split())
    reasons = []
    for word in query_words(query):
        typed = word.text
        w = (searched_as or {}).get(typed, typed)
        as_name = f" (as {w}, its particle left off)" if w != typed else ""
        if w in folded:
            starts = any(_starts_word(folded, i) for i in range(len(folded)) if folded.startswith(w, i))
            reasons.append(f"{typed}: {'starts a word' if starts else 'inside a word'}{as_name}")
        elif w in joined:
            reasons.append(f"{typed}: across spacing{as_name}")
        else:
            reasons.append(f"{typed}: not found")
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
    # 초성: a word that starts with two syllables holds the pair of their initials; with three, also the first
    # two initials (as one value) with the third. See `initials_word`.
    syllable = (cps >= _SYLLABLE_FIRST) & (cps <= _SYLLABLE_LAST)
    initial = np.where(syllable, (cps - np.uint32(_SYLLABLE_FIRST)) // np.uint32(_PER_INITIAL), 0).astype(np.uint64)
    two = start & bigram & syllable
    two[:-1] &= syllable[1:]
    two[-1] = False
    three = two.copy()
    three[:-2] &= next_ok[1:-1] & syllable[2:]
    three[-2:] = False
    p2, p3 = np.flatnonzero(two), np.flatnonzero(three)
    base, pair_base, cp = np.uint64(INITIAL_BASE), np.uint64(INITIAL_PAIR_BASE), np.uint64(CP_SHIFT)
    kind = np.uint64(KIND_SHIFT)
    start_bigram = np.uint64(START_BIGRAM) << kind
    parts = (
        a[word],
        (np.uint64(BIGRAM) << kind) | ab[bigram],
        (np.uint64(BIGRAM) << kind) | a[left] | cps[right].astype(np.uint64),
        (np.uint64(START_UNIGRAM) << kind) | a[start],
        start_bigram | ab[start & bigram],
        start_bigram | ((base + initial[p2]) << cp) | (base + initial[p2 + 1]),
        start_bigram
        | ((pair_base + initial[p3] * np.uint64(len(INITIALS)) + initial[p3 + 1]) << cp)
        | (base + initial[p3 + 2]),
    )
    docs = (
        text_of[word],
        text_of[bigram],
        text_of[left],
        text_of[start],
        text_of[start & bigram],
        text_of[p2],
        text_of[p3],
    )
    keys = np.concatenate(parts)
    keys <<= np.uint64(DOC_BITS)
    keys |= np.concatenate(docs)
    return keys
