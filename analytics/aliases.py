"""Company names as users type them: an alias file makes each name of a company find every other in search.

People ask about 현대자동차 as 현대차, Hyundai Motor or 005380; about LG에너지솔루션 as 엘지엔솔. An alias file lists,
per company, its canonical name, its aliases and its codes (tickers), as CSV::

    # comments and blank lines are skipped
    canonical,aliases,codes
    현대자동차,현대차|현대 자동차|Hyundai Motor,005380

Names match case-, width- and spacing-insensitively (the search's folding, whitespace removed). Two companies
whose names share a prefix stay apart: 카카오 does not find "카카오뱅크 금리", because 카카오뱅크 is another
company's name (`Aliases.masks`). A name listed under two companies is reported and left out of both; a file
that cannot be read is refused with its line number (`AliasError`), and `AliasFile` then keeps the previous one.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from querylog.analytics._search_text import fold_one

__all__ = ["STARTER", "AliasError", "AliasFile", "Aliases", "Company", "Mention", "load_aliases", "name_key"]

#: The bundled listing: KOSPI/KOSDAQ large caps and the US names Korean investors ask about (see its header).
STARTER: Final = Path(__file__).with_name("aliases_starter.csv")
_HEADER: Final = ("canonical", "aliases", "codes")
_MAX_NAME: Final = 100
_MAX_MENTION_WORDS: Final = 4

_log = structlog.get_logger("querylog.search")


class AliasError(ValueError):
    """An alias file that cannot be used, with where: ``aliases.csv:12: …``."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.line = line


def name_key(name: str) -> str:
    """What two spellings of a name share: folded (NFKC, lower case) with whitespace removed."""
    return "".join(fold_one(name).split())


@dataclass(frozen=True, slots=True)
class Company:
    """One company: its canonical name, every name it answers to (canonical first) and its line in the file."""

    canonical: str
    names: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Mention:
    """Query words [start, end) that name `company` (as `typed`)."""

    start: int
    end: int
    company: Company
    typed: str


@dataclass(frozen=True)
class Aliases:
    """A loaded alias file: the companies, and what was reported but did not stop the load."""

    source: str
    companies: tuple[Company, ...]
    problems: tuple[str, ...] = ()
    _by_key: dict[str, Company] = field(default_factory=dict, repr=False)

    def company(self, name: str) -> Company | None:
        """The company `name` (any spelling) belongs to, if any."""
        return self._by_key.get(name_key(name))

    def company_of_key(self, key: str) -> Company | None:
        """`company` for a name already folded with its whitespace removed (`name_key`)."""
        return self._by_key.get(key)

    def canonical_by_key(self) -> dict[str, str]:
        """Every name key in force → its company's canonical name."""
        return {key: company.canonical for key, company in self._by_key.items()}

    def all_keys(self) -> tuple[str, ...]:
        """Every name key in force."""
        return tuple(self._by_key)

    def keys(self, company: Company) -> tuple[str, ...]:
        """The distinct name keys of `company` that search uses (shared or one-letter names are left out)."""
        return tuple(dict.fromkeys(k for n in company.names if self._by_key.get(k := name_key(n)) is company))

    def masks(self, company: Company, key: str) -> tuple[str, ...]:
        """Names of other companies that contain `key` (카카오뱅크 for 카카오): blanked out before matching, longest
        first, so that a text about them is not taken for a text about `company`."""
        found = {k for k, other in self._by_key.items() if other is not company and key in k and k != key}
        return tuple(sorted(found, key=lambda k: (-len(k), k)))

    def mentions(self, words: Sequence[str]) -> list[Mention]:
        """The companies named by the (folded) query words, longest run of words first, left to right:
        ["현대", "자동차", "실적"] names 현대자동차 with words 0-1."""
        found: list[Mention] = []
        i = 0
        while i < len(words):
            for end in range(min(len(words), i + _MAX_MENTION_WORDS), i, -1):
                typed = "".join(words[i:end])
                company = self._by_key.get(typed)
                if company is None and end == i + 1:  # 네이버는, 삼성전자의: a name, then its particle
                    typed = _without_particle(typed)
                    company = self._by_key.get(typed)
                if company is not None:
                    found.append(Mention(i, end, company, typed))
                    i = end
                    break
            else:
                i += 1
        return found


#: Korean particles a name takes when typed in a question (네이버는, 현대차의, 카카오에서), longest first.
_PARTICLES: Final = (
    "에서는", "에서", "에게", "한테", "으로", "까지", "부터", "보다", "처럼", "하고", "이랑", "이나", "이요",
    "은", "는", "이", "가", "을", "를", "의", "에", "도", "로", "와", "과", "랑", "만", "요",
)  # fmt: skip


def _without_particle(word: str) -> str:
    """`word` less a trailing Korean particle, when what is left is two characters or more and ends in a letter or
    digit (Hangul, or a Latin name or a code: NAVER는, 삼성SDI의, 000660을); else `word`."""
    for particle in _PARTICLES:
        if word.endswith(particle) and len(word) - len(particle) >= 2 and word[-len(particle) - 1].isalnum():
            return word[: -len(particle)]
    return word


def _too_short(key: str) -> bool:
    # One Latin letter or digit (Visa's V) would match any word that starts with it; one syllable is a word.
    return len(key) < 2 and not "가" <= key <= "힣"


def parse_aliases(text: str, source: str) -> Aliases:
    """Read an alias file's text; `source` names it in messages. Raises `AliasError` on the first bad line."""
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            cells = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            raise AliasError(source, number, f"not a CSV line ({exc})") from None
        if any('"' in cell for cell in cells):  # `삼전|"bad`: csv reads a quote inside a field as a character
            raise AliasError(source, number, 'an unbalanced quote (") inside a field: no name holds a quote')
        rows.append((number, [c.strip() for c in cells]))
    if not rows or tuple(c.lower() for c in rows[0][1]) != _HEADER:
        raise AliasError(source, rows[0][0] if rows else 1, f"the first line must be the header {','.join(_HEADER)}")
    companies: list[Company] = []
    canonical_at: dict[str, int] = {}
    for number, cells in rows[1:]:
        if not 1 <= len(cells) <= 3:
            raise AliasError(source, number, f"expected 3 columns ({','.join(_HEADER)}), found {len(cells)}")
        cells += [""] * (3 - len(cells))
        canonical, aliases, codes = cells
        if not canonical:
            raise AliasError(source, number, "the canonical name is empty")
        if (seen := canonical_at.get(name_key(canonical))) is not None:
            raise AliasError(source, number, f"{canonical} is already listed on line {seen}")
        canonical_at[name_key(canonical)] = number
        names = [canonical, *(a.strip() for a in aliases.split("|")), *(c.strip() for c in codes.split("|"))]
        names = [n for n in names if n]
        if any(len(n) > _MAX_NAME for n in names):
            raise AliasError(source, number, f"a name is longer than {_MAX_NAME} characters")
        companies.append(Company(canonical, tuple(dict.fromkeys(names)), number))
    owners: dict[str, list[Company]] = {}
    for company in companies:
        for key in dict.fromkeys(name_key(n) for n in company.names):
            owners.setdefault(key, []).append(company)
    problems: list[str] = []
    by_key: dict[str, Company] = {}
    for key, owning in owners.items():
        if len(owning) > 1:
            where = "; ".join(f"line {c.line}: {c.canonical}" for c in owning)
            problems.append(f"{source}: {key!r} names two companies ({where}); it is left out of both")
        elif _too_short(key):
            problems.append(f"{source}:{owning[0].line}: {key!r} is too short to search by; it is left out")
        elif key:
            by_key[key] = owning[0]
    return Aliases(source, tuple(companies), tuple(problems), by_key)


def load_aliases(path: Path) -> Aliases:
    """Read an alias file (UTF-8 CSV). Raises `AliasError` (with the line) or `OSError`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise AliasError(str(path), line, "not UTF-8 text") from None
    return parse_aliases(text, str(path))


class AliasFile:
    """An alias file read again when it changes: `current` gives the newest version that loaded.

    A change that does not load (a syntax error) is logged once, as ``aliases_refused`` with the line, and the
    previous version stays in force; `error` says why until the file is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._aliases: Aliases | None = None

    def current(self) -> Aliases | None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp = (-1, -1, -1)
            if stamp != self._stamp:
                self._refused(f"{self.path}: {exc.strerror or exc}")
            self._stamp = stamp
            return self._aliases
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._aliases = load_aliases(self.path)
            except (AliasError, OSError) as exc:
                self._refused(str(exc))
            else:
                self.error = None
                _log.info(
                    "aliases_loaded",
                    path=str(self.path),
                    companies=len(self._aliases.companies),
                    problems=list(self._aliases.problems),
                )
        return self._aliases

    def _refused(self, reason: str) -> None:
        self.error = reason
        kept = "the previous version stays in force" if self._aliases is not None else "search runs without aliases"
        _log.warning("aliases_refused", path=str(self.path), reason=reason, kept=kept)
