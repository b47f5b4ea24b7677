"""PII redaction for query text: masks Korean ids, phone, card, email and account numbers before any sink."""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

from querylog.logging.events import INVISIBLE_CHARS

__all__ = ["BUILTIN_KINDS", "Finding", "Redactor", "default_redactor", "shown_url"]

#: Built-in detectors, in priority order: when two findings overlap, the earlier kind wins. EMAIL comes first
#: because a local part may be all digits (``01012345678@example.com``); RRN/ARN come before CARD because
#: a 13-digit Korean id can also pass Luhn.
BUILTIN_KINDS: Final = ("EMAIL", "RRN", "ARN", "CARD", "PHONE", "ACCOUNT")


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data in a text: its kind and its ``[start, end)`` offsets in the original text."""

    kind: str
    start: int
    end: int


# --- Folding ---------------------------------------------------------------------------------------------
# Detection runs on a copy of the text in which full-width forms (０１０－１２３４, ＠), NBSP-like spaces and
# the Unicode dashes are mapped to their ASCII counterparts. Every mapping is one code point to one code
# point, so offsets in the folded copy are offsets in the original and masks land on the original text.
# The full-width and space mappings are exactly what NFKC does for those characters; the dashes are our own
# addition, since a phone number typed as 010–1234–5678 (en dash) is still a phone number.
def _build_fold_table() -> dict[int, int]:
    table = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}  # full-width ! … ~ → ASCII
    for cp in (0x00A0, 0x2007, 0x2009, 0x202F, 0x3000):
        table[cp] = 0x20
    for cp in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0xFE58, 0xFE63):
        table[cp] = 0x2D
    table[0xFE6B] = 0x40  # small commercial at
    for i in range(50):  # mathematical bold/double-struck/sans-serif/monospace digits
        table[0x1D7CE + i] = 0x30 + i % 10
    return table


_FOLD: Final = _build_fold_table()
# Character ranges, not enumerated sets: re matches a few ranges far faster than a long list of code points.
_FOLDABLE: Final = re.compile(
    "[\u00a0\u2007\u2009\u202f\u2010-\u2015\u2212\u3000\ufe58\ufe63\ufe6b\uff01-\uff5e\U0001d7ce-\U0001d7ff]"
)
# The detectors also read the text as a person sees it. Characters that draw nothing (zero-width space, soft hyphen,
# word joiner…, and the CR of a CRLF) are not there at all where they split something: "010\u200b1234\u200b5678"
# reads as one number, "john\u200b@example.com" as one address. And for the built-in detectors a tab, a line break
# or a lone CR separates groups of digits as a space does (a number pasted from a table, or over two lines); extra
# patterns keep the line breaks (``(?m)^주소: .+$`` needs them). Each reading's findings are mapped back to the text,
# and overlapping ones are masked as one.
_HIDDEN: Final = re.compile(f"[\r{INVISIBLE_CHARS}]+")
#: Either kind: what only some text holds, and the rest is told in one scan.
_UNUSUAL: Final = re.compile(_FOLDABLE.pattern[:-1] + f"\r{INVISIBLE_CHARS}]")
#: Besides letters and digits, what a run of them may split: a number's separators, an address's characters (the
#: joiners of an emoji 👨‍👩‍👧 split nothing, and stay).
_SPLITTABLE: Final = frozenset("*-. ()+@_%")
_LONE_CR: Final = re.compile(r"\r(?!\n)")
#: A dash with spaces beside it, or a dot with a space before it, between groups of two digits or more
#: ("010 - 1234 - 5678", "010 . 1234 . 5678", "900101 - 1234567"): the number also reads without those spaces, as if
#: typed "010-1234-5678". A list number before a spaced phone ("1. 010 - 1234 - 5678", "2 - 010 - …") is not joined
#: to it, nor is a sentence's end ("2024. 010").
_LOOSE: Final = re.compile(r"(?<=[0-9])[0-9](?: {1,2}[-.] {0,2}| {0,2}- {1,2})(?=[0-9]{2})")
#: What that reading looks for: Korean phones and registration numbers, whose shapes no list of years or range
#: matches (read without the spaces, "200 - 500 - 1000" is a North American number, "+5 - 2023 - 2024" an
#: international one: those patterns are left out of it).
_LOOSE_KINDS: Final = frozenset({"PHONE", "RRN", "ARN"})

# Every built-in kind contains a digit or an '@' (in ASCII or a form that folds to one); text without any is
# returned untouched after this one C-level scan.
_TRIGGER: Final = re.compile("[0-9@\ufe6b\uff10-\uff19\uff20\U0001d7ce-\U0001d7ff]")
# Every numeric kind has at least nine digits joined by at most two separator characters ("02-123-4567",
# "(02) 123-4567", "+82 (0)10…", "900101-1******"). The numeric detectors run only over such chains (plus a
# two-character margin for a leading "+" or "("), so stock codes, prices, dates and times cost one scan.
# Starting only where a digit run starts, with possessive quantifiers, keeps that scan linear and cheap.
_CHAIN: Final = re.compile(r"(?<![0-9*])[0-9*](?:[-. ()+]{0,2}+[0-9*]){8,}+")

# Every numeric kind also has two groups of three or more digits ("02-123-4567", "+44 20 7946 0958") or one long
# run ("01012345678"); a date with a time ("2024.03.15 10:30") has neither and is dismissed here.
_LONG_GROUP: Final = re.compile(r"[0-9*]{3,}")


#: A UUID, or a hex id of an id's length (a span id's 16, a trace id's 32, a SHA-1's 40, a SHA-256's 64), with at least
#: one hex letter: a machine's id, never a person's number, though its digits may fall in a bank's grouping
#: (``01a2508f-f603-7649-8351-38e5fccbbd96`` holds "603-7649-8351-38") or make a Luhn-valid run. The numeric detectors
#: read such tokens as blank. A run of digits glued to letters in another shape ("4111111111111111A") is still read.
_HEX_ID: Final = re.compile(
    r"(?<![0-9A-Za-z])(?=[0-9A-Fa-f]{8})(?=[0-9-]*[A-Fa-f])"
    r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{16})"
    r"(?![0-9A-Za-z])"
)

_HEX_LETTERS: Final = frozenset("abcdefABCDEF")


def _touches_a_hex_letter(s: str, chain: re.Match[str]) -> bool:
    """Whether a hex letter is right beside `chain`: a chain of digits with part of a hex id in it always has one (the
    id holds a letter, and no letter is in a chain), so a text whose chains have none needs no look for ids."""
    start, end = chain.span()
    return (start > 0 and s[start - 1] in _HEX_LETTERS) or s[end : end + 1] in _HEX_LETTERS


def _may_hold_a_number(chain: str) -> bool:
    groups = _LONG_GROUP.findall(chain)
    return len(groups) >= 2 or (len(groups) == 1 and len(groups[0]) >= 7)


# Not glued to a longer number: no digit right before/after, and not a group inside a dashed/dotted chain
# (the "02-123-4567" inside "1002-123-456789", a run inside a decimal).
_L: Final = r"(?<![0-9])(?<![0-9][-.])"
_R: Final = r"(?![0-9])(?![-.][0-9])"

_EMAIL: Final = re.compile(
    # The lookbehind makes the scan start only at the beginning of a local-part run, which keeps it linear. A local
    # part may hold any letter (``mínsu``, ``홍길동``) and ``_``: "mí[EMAIL]" or "john_[EMAIL]" kept part of it.
    r"(?<![\w.%+\-])[\w.%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}"
)
_ID13: Final = re.compile(
    _L + r"(?P<yy>[0-9]{2})(?P<mm>0[1-9]|1[0-2])(?P<dd>0[1-9]|[12][0-9]|3[01])"
    r"(?P<sep>[- ]?)(?P<g>[1-8])(?P<tail>[0-9]{6}|\*{6})" + _R
)
_CARD_RUN: Final = re.compile(r"(?<![0-9])(?<![0-9][- ])[0-9](?:[- ]?[0-9]){12,}")
_DIGIT_GROUP: Final = re.compile(r"[0-9]+")
_AREA = r"(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50[2-8])"  # Seoul, provinces, VoIP, personal safe numbers
_KR_PHONE: Final = re.compile(
    r"(?<![0-9+])(?<![0-9][-.])(?:"
    # "+82 10…", "82-10…" (country code typed without the plus, always followed by a separator) or "010…"
    r"(?:(?:\+82[-. ]?|82[-. ])(?:\(0\)[-. ]?|0)?|0)(?:1[016789]|" + _AREA + r")"
    r"|\(0(?:1[016789]|" + _AREA + r")\)[ ]?"
    r")[-. ]?[0-9]{3,4}[-. ]?[0-9]{4}" + _R
)
_INTL_PHONE: Final = re.compile(r"(?<![0-9A-Za-z+])\+[1-9](?:[-. ]?[0-9]){9,14}" + _R)
# North American numbers need separators: a bare 10-digit run is far more often something else.
_NANP_PHONE: Final = re.compile(r"(?<![0-9(])(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-.][0-9]{4}" + _R)
# The lookahead rejects the many short numbers (dates, codes) before any group is tried.
_ACCOUNT: Final = re.compile(_L + r"(?=(?:[0-9]-?){10})[0-9]{2,14}(?:-[0-9]{1,7}){0,4}" + _R)

#: Dash groupings that Korean banks print account numbers in; these need no context words. Other shapes
#: (and bare digit runs) count as an account only next to a word such as 계좌 or "account".
_BANK_GROUPINGS: Final = frozenset(
    {
        (3, 2, 6),  # 신한 (old), SC제일
        (3, 3, 6),  # 신한, 케이뱅크
        (4, 3, 6),  # 우리
        (6, 2, 6),  # 국민, 농협, 우체국
        (3, 6, 5),  # 하나
        (3, 4, 4, 2),  # 농협
        (3, 6, 2, 3),  # 기업
        (4, 2, 7),  # 카카오뱅크
    }
)
_CONTEXT_WINDOW: Final = 32
# The letter lookarounds keep "bankrupt", "warning" and our own masks ("[ACCOUNT]", "[ARN]") from counting.
_ACCOUNT_CONTEXT: Final = re.compile(
    r"계좌|통장|입금|송금|이체|출금|예금주|은행|뱅크|농협|우체국|새마을금고|신협"
    r"|(?i:(?<![\[A-Za-z])(?:accounts?|acct|a/c|bank(?:ing)?|deposit|transfer|wire|routing)(?![A-Za-z]))"
)
# Words that say a nearby 13-digit number is a person's id, that it may be one, or that it is a company's
# (법인등록번호 110111-…, 사업자등록번호), which has the same shape.
_PERSON_ID_CONTEXT: Final = re.compile(
    r"주민|외국인|신분증"
    r"|(?i:(?<![\[A-Za-z])(?:resident|alien|rrn|arn|ssn|national id)(?![A-Za-z]))"
)
_REGISTRATION_CONTEXT: Final = re.compile(r"등록\s?번호|(?i:registration)")
_COMPANY_ID_CONTEXT: Final = re.compile(r"법인|사업자|(?i:(?<![A-Za-z])(?:corporate|business|company)(?![A-Za-z]))")
# A bare digit run right before a currency or unit is an amount ("잔고 1500000000원"), not an account.
_AMOUNT_AFTER: Final = re.compile(r" ?(?:원|달러|%|(?i:won|krw|usd)(?![A-Za-z]))")
_AMOUNT_BEFORE: Final = re.compile(r"[$₩€£¥] ?$")

_RRN_WEIGHTS: Final = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
#: Since October 2020 the last six digits of new numbers are random, so their check digit means nothing.
_RANDOM_TAIL_FROM: Final = date(2020, 10, 1)
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_FILLER: Final = "\x00"
# Masks are short, contain no digit and no '@', so a built-in detector can never match one; the pass cap only
# guards against pathological extra patterns.
_MAX_PASSES: Final = 8


# Luhn doubles every second digit from the right and adds the digits of the product: 0→0, 1→2, … 5→1 (10),
# … 9→9 (18). As a translation table the whole check stays in C, which matters on the request thread.
_LUHN_DOUBLED: Final = str.maketrans("0123456789", "0246813579")


def _luhn_ok(digits: str) -> bool:
    rev = digits[::-1]
    return (sum(map(int, rev[0::2])) + sum(map(int, rev[1::2].translate(_LUHN_DOUBLED)))) % 10 == 0


def _id13_check_ok(digits: str, alien: bool) -> bool:
    rem = sum(w * (ord(c) - 48) for w, c in zip(_RRN_WEIGHTS, digits, strict=False)) % 11
    last = ord(digits[12]) - 48
    if last == (11 - rem) % 10:
        return True
    # Published validators disagree on the alien-number rule: some use the resident rule, others add 2.
    return alien and last == (13 - rem) % 10


#: How cards are printed: 4-4-4-4 (most), 4-4-4-4-3 (19 digits), 4-6-5 (Amex), 4-6-4 (Diners). Other
#: groupings of separated numbers are lists of years or prices far more often than cards.
_CARD_GROUPINGS: Final = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})


class Redactor:
    """Finds personal data in query text and replaces each piece with a typed mask such as ``[PHONE]``.

    Immutable after construction and safe to share between threads. See docs/privacy.md for what each
    detector accepts and what it misses.
    """

    __slots__ = (
        "_builtin",
        "_extras",
        "_kinds",
        "_loose",
        "_mask_token",
        "_masks",
        "_numeric",
        "_salt",
        "_this_year",
    )

    def __init__(
        self,
        *,
        extra_patterns: Mapping[str, str] | None = None,
        user_id_salt: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> None:
        """Build a redactor.

        ``extra_patterns`` maps a name (letters, digits, ``_``; masked as ``[NAME]`` upper-cased) to a regular
        expression; every pattern must compile. ``kinds`` limits the built-in detectors (default: all of
        ``BUILTIN_KINDS``); extra patterns always run. ``user_id_salt`` turns on :meth:`pseudonymize_user_id`.
        """
        if kinds is None:
            builtin = frozenset(BUILTIN_KINDS)
        else:
            if isinstance(kinds, str):
                raise ValueError(f"kinds must be a collection of kind names, not the string {kinds!r}")
            unknown = sorted(set(kinds) - set(BUILTIN_KINDS))
            if unknown:
                raise ValueError(f"unknown redaction kind(s) {unknown}; choose from {list(BUILTIN_KINDS)}")
            builtin = frozenset(kinds)
        extras: list[tuple[str, re.Pattern[str]]] = []
        for name, pattern in (extra_patterns or {}).items():
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise ValueError(
                    f"extra pattern name {name!r} is invalid: use a letter then letters, digits or '_' (max 32)"
                )
            kind = name.upper()
            if kind in BUILTIN_KINDS or any(kind == k for k, _ in extras):
                raise ValueError(f"extra pattern {name!r} clashes with the kind {kind!r}; pick another name")
            if not isinstance(pattern, str):
                raise ValueError(f"extra pattern {name!r} must be a regex string, got {type(pattern).__name__}")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"extra pattern {name!r} does not compile: {exc}") from exc
            if compiled.fullmatch(""):
                raise ValueError(f"extra pattern {name!r} matches the empty string; it would mask nothing useful")
            extras.append((kind, compiled))
        if user_id_salt is not None and (not isinstance(user_id_salt, str) or not user_id_salt):
            raise ValueError("user_id_salt must be a non-empty string; pass None to keep user ids as they are")

        self._builtin: frozenset[str] = builtin
        self._numeric: frozenset[str] = builtin - {"EMAIL"}
        self._loose: frozenset[str] = self._numeric & _LOOSE_KINDS  # what `_tightened`'s reading looks for
        self._extras: tuple[tuple[str, re.Pattern[str]], ...] = tuple(extras)
        self._kinds: tuple[str, ...] = tuple(k for k in BUILTIN_KINDS if k in builtin) + tuple(k for k, _ in extras)
        self._masks: dict[str, str] = {k: f"[{k}]" for k in (*BUILTIN_KINDS, *self._kinds)}
        # Extra patterns might match (part of) a mask such as "[PHONE]"; their matches over a mask are ignored,
        # so that redaction terminates and redacting twice changes nothing.
        self._mask_token: re.Pattern[str] | None = (
            re.compile(r"\[(?:" + "|".join(re.escape(k) for k in self._masks) + r")\]") if extras else None
        )
        self._salt: bytes | None = user_id_salt.encode("utf-8") if user_id_salt is not None else None
        # Read once: a "born in 2000s" id dated after this year is not a real id.
        self._this_year: int = date.today().year

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this redactor finds: the enabled built-ins in priority order, then the extra patterns."""
        return self._kinds

    # --- public API ----------------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its mask. Idempotent: redacting the result changes nothing."""
        if not self._extras and _TRIGGER.search(text) is None:
            return text
        # A mask can change what surrounds a number (a digit neighbour gone, a context word now within reach),
        # so a second look may find more; repeat until nothing is found, which is what makes redact idempotent.
        for _ in range(_MAX_PASSES):
            found = self._scan(text)
            if not found:
                return text
            text = self._apply(text, found)
            if not self._extras and _TRIGGER.search(text) is None:
                return text
        return text

    def findings(self, text: str) -> list[Finding]:
        """Every finding in ``text``, ordered by position, with offsets into ``text`` itself."""
        if not self._extras and _TRIGGER.search(text) is None:
            return []
        result = _Taken()
        work = text
        # Later passes see earlier findings blanked out (same length, so offsets stay valid), which mirrors
        # the repeated passes of redact().
        for _ in range(_MAX_PASSES):
            found = self._scan(work)
            if not found:
                break
            for f in found:
                result.add(f.kind, f.start, f.end)
            work = self._fill(work, found)
        return result.findings

    def pseudonymize_user_id(self, user_id: str) -> str:
        """``u_`` + the first 16 hex digits of HMAC-SHA256(salt, user_id in NFC) when a salt is set, else ``user_id``.

        Stable for one salt, so one user's queries still group together (typed composed or decomposed, as macOS
        may send it); without the salt the id cannot be recovered by hashing guessed ids.
        """
        if self._salt is None:
            return user_id
        return self._hashed(unicodedata.normalize("NFC", user_id))

    def pseudonyms(self, user_id: str) -> frozenset[str]:
        """Every id `user_id` may be stored under: `pseudonymize_user_id`'s, and, for an id typed decomposed, the
        one releases before 2026-12-06 gave it (they hashed the id as typed). What an erasure looks for."""
        if self._salt is None:
            return frozenset({user_id})
        return frozenset({self.pseudonymize_user_id(user_id), self._hashed(user_id)})

    def _hashed(self, text: str) -> str:
        assert self._salt is not None
        digest = hmac.new(self._salt, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return "u_" + digest[:16]

    # --- internals ---------------------------------------------------------------------------------------------
    def _apply(self, text: str, found: list[Finding]) -> str:
        parts: list[str] = []
        pos = 0
        for f in found:  # _scan returns them sorted and disjoint
            parts.append(text[pos : f.start])
            parts.append(self._masks[f.kind])
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    @staticmethod
    def _fill(text: str, found: list[Finding]) -> str:
        parts: list[str] = []
        pos = 0
        for f in found:  # _scan returns them sorted and disjoint
            parts.append(text[pos : f.start])
            parts.append(_FILLER * (f.end - f.start))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    def _scan(self, text: str) -> list[Finding]:
        """One pass of every detector over ``text``; overlaps within a reading are settled by kind priority, and
        the readings' findings that overlap are masked as one (the span of both, the first kind's)."""
        # One scan tells most text that it needs neither folding nor a look for hidden characters.
        unusual = "\r" in text if text.isascii() else _UNUSUAL.search(text) is not None
        s = text.translate(_FOLD) if unusual and not text.isascii() and _FOLDABLE.search(text) else text
        detectors: list[tuple[Callable[[str, _Taken], None], str, bool]] = []
        if self._builtin:
            detectors.append((self._builtins, _spaced(s, unusual), True))
        if self._extras:
            detectors.append((self._extra_patterns, s, False))
        readings: list[list[Finding]] = []
        for detect, typed, builtin in detectors:
            taken = _Taken()
            detect(typed, taken)
            readings.append(taken.findings)
            # And as typed too: leaving characters out may join a number to digits beside it.
            for other, detect_other in (
                (_shown(typed) if unusual else None, detect),
                (_tightened(typed) if builtin and self._loose else None, self._loose_numbers),
            ):
                if other is not None:
                    view, before = other
                    taken = _Taken()
                    detect_other(view, taken)
                    readings.append([_mapped(f, before) for f in taken.findings])
        return readings[0] if len(readings) == 1 else _joined(readings, self._kinds)

    def _extra_patterns(self, s: str, taken: _Taken) -> None:
        masks = [(m.start(), m.end()) for m in self._mask_token.finditer(s)] if self._mask_token else []
        for kind, pattern in self._extras:
            for m in pattern.finditer(s):
                start, end = m.span()
                if start == end or any(start < me and ms < end for ms, me in masks):
                    continue
                taken.add(kind, start, end)

    def _builtins(self, s: str, taken: _Taken) -> None:
        """The built-in detectors over `s`, their findings added to `taken`. An address and a number that overlap
        (``4111 1111 1111 1111mínsu@x.com``: the address's name may start inside the card) are masked as one."""
        builtin = self._builtin
        if "EMAIL" in builtin and "@" in s:
            addresses = [Finding("EMAIL", m.start(), m.end()) for m in _EMAIL.finditer(s)]
            if addresses:
                numbers = _Taken()
                self._numbers(s, numbers)
                for f in _joined([addresses, numbers.findings], self._kinds):
                    taken.add(f.kind, f.start, f.end)
                return
        self._numbers(s, taken)

    def _loose_numbers(self, s: str, taken: _Taken) -> None:
        """The phone and id detectors over `s` (`_tightened`'s reading): the shapes typed with spaces around their
        dashes. Cards and accounts are not looked for there: a list of years ("2023 - 2024 - 2025 - 2026") reads
        as a Luhn-valid card, and an amount range beside an account word as an account."""
        self._numbers(s, taken, self._loose, phones=(_KR_PHONE,))

    def _numbers(
        self,
        s: str,
        taken: _Taken,
        numeric: frozenset[str] | None = None,
        phones: tuple[re.Pattern[str], ...] = (_KR_PHONE, _INTL_PHONE, _NANP_PHONE),
    ) -> None:
        """The numeric detectors over `s` (those of `numeric`, by default every one enabled; for phones, the
        patterns `phones`), their findings added to `taken`."""
        numeric = self._numeric if numeric is None else numeric
        if not numeric:
            return
        chains = [chain for chain in _CHAIN.finditer(s) if _may_hold_a_number(chain[0])]
        if any(_touches_a_hex_letter(s, chain) for chain in chains) and _HEX_ID.search(s) is not None:
            s = _HEX_ID.sub(lambda m: _FILLER * len(m[0]), s)  # same length: offsets stay the text's
            chains = [chain for chain in _CHAIN.finditer(s) if _may_hold_a_number(chain[0])]
        n = len(s)
        for chain in chains:
            # Lookbehinds see before `lo`; the chain is maximal, so nothing a detector's lookahead must see lies
            # beyond `hi`.
            lo, hi = max(0, chain.start() - 2), min(n, chain.end() + 3)
            if "RRN" in numeric or "ARN" in numeric:
                self._find_ids(s, lo, hi, taken)
            if "CARD" in numeric:
                _find_cards(s, lo, hi, taken)
            if "PHONE" in numeric:
                for pattern in phones:
                    for m in pattern.finditer(s, lo, hi):
                        taken.add("PHONE", m.start(), m.end())
            if "ACCOUNT" in numeric:
                _find_accounts(s, lo, hi, taken)

    def _find_ids(self, s: str, lo: int, hi: int, taken: _Taken) -> None:
        for m in _ID13.finditer(s, lo, hi):
            g = int(m["g"])
            alien = g >= 5
            kind = "ARN" if alien else "RRN"
            if kind not in self._builtin or not taken.free(m.start(), m.end()):
                continue
            year = (1900 if g in (1, 2, 5, 6) else 2000) + int(m["yy"])
            month, day = int(m["mm"]), int(m["dd"])
            if year > self._this_year or day > calendar.monthrange(year, month)[1]:
                continue
            person = _near(_PERSON_ID_CONTEXT, s, m.start(), m.end())
            if not person and _near(_COMPANY_ID_CONTEXT, s, m.start(), m.end()):
                continue  # a corporate registration number has the same shape and is not personal data
            dashed = m["sep"] == "-"
            if m["tail"].startswith("*"):
                if not dashed:  # "9001011******" is too odd a shape to trust
                    continue
            elif not dashed:
                # Without the dash the shape alone is weak (13-digit order numbers, epoch milliseconds), so ask
                # for a valid check digit, unless the number may be one issued after the rule was dropped, or a
                # word nearby says it is an id. Dashed numbers are masked whatever their check digit says.
                digits = m["yy"] + m["mm"] + m["dd"] + m["g"] + m["tail"]
                if not (
                    person
                    or _id13_check_ok(digits, alien)
                    or date(year, month, day) >= _RANDOM_TAIL_FROM
                    or _near(_REGISTRATION_CONTEXT, s, m.start(), m.end())
                ):
                    continue
            taken.add(kind, m.start(), m.end())


def _find_cards(s: str, lo: int, hi: int, taken: _Taken) -> None:
    # A run is a maximal chain of digit groups joined by single spaces or dashes ("2024-03-15 4111 1111 …");
    # the card is looked for as a window of whole groups, longest first, so a card next to other numbers
    # is still found and never cut out of the middle of a group.
    for run in _CARD_RUN.finditer(s, lo, hi):
        offset = run.start()
        groups = [(g.start() + offset, g.end() + offset) for g in _DIGIT_GROUP.finditer(run[0])]
        lens = [b - a for a, b in groups]
        i = 0
        while i < len(groups):
            # No card layout has more than five groups, which also keeps a long run of numbers linear.
            for j in range(min(len(groups), i + 5) - 1, i - 1, -1):
                shape_ok = 13 <= lens[i] <= 19 if j == i else tuple(lens[i : j + 1]) in _CARD_GROUPINGS
                if shape_ok and _card_window_ok(s, groups[i : j + 1]):
                    taken.add("CARD", groups[i][0], groups[j][1])
                    i = j
                    break
            i += 1


def _find_accounts(s: str, lo: int, hi: int, taken: _Taken) -> None:
    for m in _ACCOUNT.finditer(s, lo, hi):
        if not taken.free(m.start(), m.end()):
            continue  # most candidates are phone numbers already found; skip the context search
        lens = tuple(len(g) for g in m[0].split("-"))
        total = sum(lens)
        if len(lens) == 1:
            if not 10 <= total <= 14 or _AMOUNT_AFTER.match(s, m.end()) or _AMOUNT_BEFORE.search(s, 0, m.start()):
                continue
            if not _near(_ACCOUNT_CONTEXT, s, m.start(), m.end()):
                continue
        else:
            if not 10 <= total <= 16 or lens[0] < 3 or min(lens) < 2:
                continue
            if lens not in _BANK_GROUPINGS and not _near(_ACCOUNT_CONTEXT, s, m.start(), m.end()):
                continue
        taken.add("ACCOUNT", m.start(), m.end())


def _card_window_ok(s: str, window: list[tuple[int, int]]) -> bool:
    """Whether a window of digit groups, already of a card's length or layout, holds a card number."""
    digits = "".join(s[a:b] for a, b in window)
    if len(window) == 1:
        # A bare 16-digit run is masked on Luhn alone; other lengths must also start like a payment card
        # (3 travel/entertainment, 4-5 banking, 6 merchandising), which rules out most ISBNs and epoch ms.
        if len(digits) != 16 and digits[0] not in "3456":
            return False
    elif len({s[b] for (_, b) in window[:-1]}) != 1:
        return False  # "4111 1111-1111 1111" mixes separators: two numbers, not one card
    return _luhn_ok(digits)


def _near(pattern: re.Pattern[str], s: str, start: int, end: int) -> bool:
    return pattern.search(s, max(0, start - _CONTEXT_WINDOW), end + _CONTEXT_WINDOW) is not None


def _spaced(s: str, unusual: bool) -> str:
    """`s` with a tab, a line break and a lone CR as a space (one to one: offsets kept), for the built-in detectors."""
    if unusual and "\r" in s:
        s = _LONE_CR.sub(" ", s)
    return s.replace("\n", " ").replace("\t", " ")


def _shown(text: str) -> tuple[str, list[int]] | None:
    """`text` without the runs of characters that draw nothing where they split something (a letter, a digit or a
    separator on either side), and for each one left out how many characters of the result come before it; None
    when none is left out."""
    gone: list[int] = []
    for m in _HIDDEN.finditer(text):
        start, end = m.span()
        left, right = text[start - 1 : start], text[end : end + 1]
        if left in _SPLITTABLE or right in _SPLITTABLE or left.isalnum() or right.isalnum():
            gone.extend(range(start, end))
    return _reading(text, gone)


def _tightened(text: str) -> tuple[str, list[int]] | None:
    """`text` without the spaces `_LOOSE` says a number's dashes and dots may have beside them, as `_shown` gives
    its reading; None when there are none."""
    if not (" -" in text or "- " in text or " ." in text):  # what every `_LOOSE` holds: most text has none, and
        return None  # these three scans cost a fifth of the pattern's
    gone = [i for m in _LOOSE.finditer(text) for i in range(m.start() + 1, m.end()) if text[i] == " "]
    return _reading(text, gone)


def _reading(text: str, gone: list[int]) -> tuple[str, list[int]] | None:
    """`text` less the characters at the sorted positions `gone`, and for each one how many characters of the
    result come before it (what `_mapped` takes); None when `gone` is empty."""
    if not gone:
        return None
    return "".join(_without(text, gone)), [h - j for j, h in enumerate(gone)]


def _mapped(f: Finding, before: list[int]) -> Finding:
    """`f`, found in a reading (`_shown`, `_tightened`), at the text's offsets: it covers what was left out inside
    it."""
    return Finding(f.kind, f.start + bisect_right(before, f.start), f.end + bisect_right(before, f.end - 1))


def _joined(readings: list[list[Finding]], kinds: tuple[str, ...]) -> list[Finding]:
    """The findings of several readings of one text, those that overlap masked as one: their span, and the kind
    listed first in `kinds` (a card's digits read as an account in one reading are not left for the other)."""
    rank = {kind: i for i, kind in enumerate(kinds)}
    out: list[Finding] = []
    for f in sorted((f for reading in readings for f in reading), key=lambda f: (f.start, -f.end)):
        if out and f.start < out[-1].end:
            last = out[-1]
            kind = last.kind if rank.get(last.kind, 0) <= rank.get(f.kind, 0) else f.kind
            out[-1] = Finding(kind, last.start, max(last.end, f.end))
        else:
            out.append(f)
    return out


def _without(text: str, gone: list[int]) -> Iterator[str]:
    """`text` in pieces, less the characters at the sorted positions `gone`."""
    start = 0
    for i in gone:
        yield text[start:i]
        start = i + 1
    yield text[start:]


class _Taken:
    """The findings kept so far in one pass: disjoint and sorted by start, so an overlap check is a bisection
    (text with thousands of numbers must not cost thousands squared)."""

    __slots__ = ("_ends", "_starts", "findings")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.findings: list[Finding] = []

    def free(self, start: int, end: int) -> bool:
        i = bisect_right(self._starts, start)
        return (i == 0 or self._ends[i - 1] <= start) and (i == len(self._starts) or end <= self._starts[i])

    def add(self, kind: str, start: int, end: int) -> None:
        """Keep the finding unless it overlaps one already kept (which came from a higher-priority kind)."""
        if self.free(start, end):
            i = bisect_right(self._starts, start)
            self._starts.insert(i, start)
            self._ends.insert(i, end)
            self.findings.insert(i, Finding(kind, start, end))


@functools.cache
def default_redactor() -> Redactor:
    """The shared redactor with every built-in kind, no extra patterns and no user-id salt."""
    return Redactor()


def shown_url(url: str) -> str:
    """`url` fit to print or to log: a password in it (``http://user:secret@host``) masked as ``***``, even in a URL
    that does not parse (a password holding ``/`` or ``#``): from the first ``:`` after ``//`` to the last ``@``."""
    head, slashes, rest = url.partition("//")
    if not slashes or "@" not in rest:
        return url
    userinfo, host = rest.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    return f"{head}//{user}{colon}{'***' if colon else ''}@{host}"
