"""``querylog erase``: every event of a subject (a user, a session, a query) removed from every store.

In order, so that nothing erased can come back:

1. the log: the subject's lines blanked in place (`querylog.logging.erase`), so the projections cannot project
   them again;
2. the lake: each hour that holds a subject's row rewritten without it, by compaction's protocol (readers see the
   hour before or after, never half of it; an interrupted rewrite is finished or undone by the next run);
3. the lake again, once the Parquet projection has committed past the log as it was at step 1 (a batch it had
   read before the blanking may land after step 2);
4. the search index, rebuilt from the lake when it held a subject's query;
5. the metrics snapshot: the subject's open queries forgotten, and the sessions whose latest query was theirs
   (the characters the reformulation count compares; it holds no other per-query state); the queries are also
   listed for the metrics folds running meanwhile (`querylog.logging.forget`), which forget them too;
6. Loki, when configured (or when this data directory has shipped to it: then the requests are kept): delete
   requests over the streams this data directory shipped (the app and env pairs in ``state/loki-labels.json``;
   every app and env for one that shipped before the pairs were noted; none for one that never shipped), through
   the compactor's API (Loki
   applies them after its cancellation period, when deletion is enabled: `loki/`). Requests Loki did not take
   (unreachable, an error) are kept in ``state/loki-deletes-pending.jsonl`` and filed first by the next run,
   whatever its subjects: the log and the lake no longer hold the ids to make them again;
7. an audit entry in ``state/erasures.jsonl``: when, how many subjects of each kind, how many events where —
   never the ids themselves.

The subjects and their queries' ids are kept in ``state/erase-in-progress.json`` from before step 1 until step 7:
a run stopped midway is finished by the next. Idempotent: erasing again finds nothing more. Works while
`querylog serve` runs. With ``QUERYLOG_USER_ID_SALT`` set, user ids are stored hashed; the raw id given here is
hashed the same way before matching.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
import uuid_utils

from querylog.config import Settings
from querylog.logging.erase import FEEDBACK, LogErasure, Subjects, erase_from_log, queries_of
from querylog.logging.events import EVENT_TYPES
from querylog.logging.forget import ForgetList
from querylog.logging.loki.encoding import metadata_forms
from querylog.logging.loki.sink import DEAD_LETTER_LOCK
from querylog.logging.metrics import MetricsProjection
from querylog.logging.metrics_snapshot import load_snapshot, write_snapshot
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import atomic_write, locked, try_lead
from querylog.logging.segments import Checkpoint, LogReader, last_written
from querylog.runtime import make_redactor

__all__ = [
    "AUDIT",
    "IN_PROGRESS",
    "LOKI_PENDING",
    "ErasureError",
    "ErasureReceipt",
    "NoSubjectError",
    "erase",
    "last_blanking",
    "left_undone",
    "written_before",
]

_log = structlog.get_logger("querylog.erase")
_ID_COLUMNS = ["query_id", "user_id", "session_id", "event_id", "event_type"]


@dataclass
class ErasureReceipt:
    """What an erasure removed, where. Holds no ids: it is printed and kept in the audit trail."""

    erasure_id: str
    subjects: dict[str, int]
    queries: int = 0
    log_events: int = 0
    log_segments: int = 0
    lake_events: int = 0
    lake_hours: int = 0
    search_rebuilt: bool = False
    metrics_open_queries: int = 0
    #: Sessions whose latest query the metrics snapshot held (to tell a reformulation), forgotten.
    metrics_sessions: int = 0
    #: Entries taken out of the pushes Loki refused and the sink kept to post again (`state/loki-dead-letter/`).
    dead_letter_entries: int = 0
    #: Delete requests Loki accepted in this run; of them, those an earlier run could not file (`LOKI_PENDING`).
    loki_requests: int = 0
    loki_earlier: int = 0
    #: Delete requests Loki did not take (`loki_error` says why), kept for the next run.
    loki_pending: int = 0
    loki_error: str | None = None
    #: Whether this run finished an erasure a stopped run had begun (`IN_PROGRESS`), its subjects with its own.
    resumed: bool = False
    #: Loki was configured, but this data directory never shipped to it: no delete request was made.
    loki_never_shipped: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _subjects(
    settings: Settings, user_ids: Iterable[str], session_ids: Iterable[str], query_ids: Iterable[str]
) -> tuple[Subjects, frozenset[str]]:
    """The subjects to match in the log and the lake, and the user ids as the stores keep them. With a salt set,
    those are the hashes: the raw id given is matched here too (events written before the salt was set), in memory,
    and never written down (the erase's own records) nor sent anywhere (Loki's delete requests)."""

    def forms(ids: Iterable[str]) -> frozenset[str]:  # as typed, and NFC and NFD: a producer may have sent either
        return frozenset(f for i in ids for f in (i, unicodedata.normalize("NFC", i), unicodedata.normalize("NFD", i)))

    typed = forms(user_ids)
    stored = typed
    if settings.user_id_salt:
        redactor = make_redactor(settings)
        stored = frozenset(hashed for u in typed for hashed in redactor.pseudonyms(u))
    return Subjects(typed | stored, forms(session_ids), forms(query_ids)), stored


#: In the state directory: a fingerprint of each ``QUERYLOG_USER_ID_SALT`` this data directory's user ids were hashed
#: with (the hash of a fixed text under it: it tells salts apart and gives none away). Noted when a runtime with a salt
#: starts; an erasure by a raw user id needs the salt, or it finds none of the hashed ids and says nothing.
USER_ID_SALTS: Final = "user-id-salts.json"
_FINGERPRINTED: Final = "\x00querylog: the salt's fingerprint"
#: A user id as a salt stores it (`Redactor.pseudonymize_user_id`), which an erasure can be given as it is.
_STORED_USER_ID: Final = re.compile(r"u_[0-9a-f]{16}")


def salt_fingerprint(settings: Settings) -> str | None:
    return make_redactor(settings).pseudonymize_user_id(_FINGERPRINTED) if settings.user_id_salt else None


def note_user_id_salt(settings: Settings) -> None:
    """Add the fingerprint of `settings`' user-id salt, if any, to `USER_ID_SALTS`. A damaged file is said and left
    as it is (it may hold an earlier salt's): a server does not stop over it, and an erasure by a raw id is refused
    while it is damaged."""
    if (fingerprint := salt_fingerprint(settings)) is None:
        return
    try:
        noted = _noted_salts(settings)
    except SaltNeededError as exc:
        _log.warning("user_id_salts_unreadable", error=str(exc))
        return
    if fingerprint not in noted:
        path = settings.state_dir / USER_ID_SALTS
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(sorted({*noted, fingerprint})).encode())


def _noted_salts(settings: Settings) -> set[str]:
    path = settings.state_dir / USER_ID_SALTS
    try:
        noted = json.loads(path.read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise SaltNeededError(f"{path} cannot be read ({exc}): move it away") from None
    if not (isinstance(noted, list) and all(isinstance(n, str) for n in noted)):
        raise SaltNeededError(f"{path} is not a list of fingerprints: move it away")
    return set(noted)


def _check_salt(settings: Settings, user_ids: Sequence[str]) -> str | None:
    """Refuse (ValueError) an erasure by raw user ids that would find none of the hashed ones: no salt set, or
    another than the ids were hashed with. A note when some ids were hashed with an earlier salt too."""
    noted = _noted_salts(settings)
    if not noted or all(_STORED_USER_ID.fullmatch(u) for u in user_ids):
        return None
    fingerprint = salt_fingerprint(settings)
    if fingerprint is None:
        raise SaltNeededError(
            "this data directory stores user ids hashed with QUERYLOG_USER_ID_SALT: set the salt they were hashed "
            "with, or give each id as stored (u_…); without it the hashed ids would be found nowhere"
        )
    if fingerprint not in noted:
        raise SaltNeededError(
            "QUERYLOG_USER_ID_SALT is not one this data directory's user ids were hashed with: set the salt the "
            "server has, or give each id as stored (u_…)"
        )
    if len(noted) > 1:
        return (
            "user ids were hashed with another salt too (QUERYLOG_USER_ID_SALT changed): events hashed with it are "
            "found only by the id as stored (u_…); give those too"
        )
    return None


def _hour_files(lake_dir: Path) -> list[Path]:
    return sorted(p for p in (lake_dir / "events").glob("date=*/hour=*/*.parquet") if not p.name.startswith("."))


def _mask(table: pa.Table, subjects: Subjects, event_ids: Collection[str] | None = None) -> pa.Array:
    def hit(column: str, values: Collection[str]) -> pa.Array:
        if column not in table.column_names or not values:
            return pa.array([False] * table.num_rows, pa.bool_())
        return pc.fill_null(pc.is_in(table.column(column), value_set=pa.array(sorted(values), pa.string())), False)

    mask = pc.or_(
        pc.or_(hit("query_id", subjects.query_ids), hit("user_id", subjects.user_ids)),
        hit("session_id", subjects.session_ids),
    )
    return mask if event_ids is None else pc.and_(mask, hit("event_id", event_ids))


@dataclass(slots=True)
class _LakeScan:
    """The subjects' rows in the lake: their query ids and event ids, and the hour directories that hold them."""

    queries: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    hours: set[Path] = field(default_factory=set)


#: Seconds between two progress lines of a lake scan (a file at a time: minutes on a lake of many small files).
_SCAN_PROGRESS_EVERY_S: Final = 5.0


def _lake_scan(
    lake_dir: Path,
    subjects: Subjects,
    event_ids: Collection[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> _LakeScan:
    """The subjects' rows in the lake (only those among `event_ids`, when given); `progress` hears how far the scan
    is, every few seconds."""
    found = _LakeScan()
    files = _hour_files(lake_dir)
    next_report = time.monotonic() + _SCAN_PROGRESS_EVERY_S
    for n, path in enumerate(files):
        if progress is not None and time.monotonic() >= next_report:
            progress(f"lake: scanned {n:,} of {len(files):,} files")
            next_report = time.monotonic() + _SCAN_PROGRESS_EVERY_S
        try:
            table = pq.read_table(path, columns=[c for c in _ID_COLUMNS if c in pq.read_schema(path).names])
        except FileNotFoundError:  # compacted away meanwhile: its rows are in a file listed later or next run
            continue
        mask = _mask(table, subjects, event_ids)
        if pc.any(mask).as_py():
            found.hours.add(path.parent)
            # Their queries, as `Subjects.owned` says in the log: not one a feedback they gave on another's is about.
            owned = pc.and_(mask, pc.invert(pc.fill_null(pc.equal(table.column("event_type"), FEEDBACK), False)))
            if subjects.query_ids:
                asked = pc.is_in(table.column("query_id"), value_set=pa.array(sorted(subjects.query_ids), pa.string()))
                owned = pc.or_(owned, pc.and_(mask, pc.fill_null(asked, False)))
            found.queries.update(q for q in pc.filter(table.column("query_id"), owned).to_pylist() if q is not None)
            found.event_ids.update(e for e in pc.filter(table.column("event_id"), mask).to_pylist() if e is not None)
    return found


def _erase_lake(
    lake_dir: Path, subjects: Subjects, event_ids: Collection[str], progress: Callable[[str], None]
) -> tuple[int, set[Path], int]:
    """Rewrite each hour that holds a subject's row among `event_ids` without it: (rows dropped, hours rewritten,
    hours not). Only those: a subject's event written after the erase began stays in the log, so in the lake too."""
    from querylog.analytics.upkeep import HourPartition, LakeCompactor, when_the_lake_is_free

    # A rewrite a crash interrupted is finished (or undone) first.
    when_the_lake_is_free(LakeCompactor(lake_dir).recover, _lake_said(progress))
    hours = _lake_scan(lake_dir, subjects, event_ids, progress).hours
    if not hours:
        return 0, set(), 0
    partitions = [
        HourPartition(h.parent.name.removeprefix("date="), h.name.removeprefix("hour="), h) for h in sorted(hours)
    ]
    compactor = LakeCompactor(
        lake_dir,
        drop=lambda table: _mask(table, subjects, event_ids),
        progress=lambda done, total, what: progress(f"lake [{done}/{total}] {what}"),
    )
    report = when_the_lake_is_free(lambda: compactor.rewrite(partitions), _lake_said(progress))
    skipped = {p for p in partitions if p.name in report.skipped}
    return compactor.dropped, {p.path for p in partitions if p not in skipped}, len(report.skipped)


def _lake_said(progress: Callable[[str], None]) -> Callable[[str], None]:
    return lambda line: progress(f"lake: {line}")


def _wait_for_parquet(settings: Settings, position: dict[str, int], timeout_s: float) -> bool:
    """Whether the Parquet projection committed past `position` (every segment) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed = ParquetSink.committed_checkpoint(settings.lake_dir) if settings.lake_dir.exists() else {}
        live = {p.name for p in LogReader(settings.log_dir).segments()}
        if all(committed.get(name, 0) >= offset for name, offset in position.items() if name in live):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)  # polling a file another process commits; bounded by the deadline


def _rebuild_search(settings: Settings) -> bool:
    """Each search index built (the questions', the answers'), rebuilt from the erased lake."""
    from querylog.analytics.catalog import Catalog
    from querylog.analytics.upkeep import LakeSearch, built_search_fields

    built = built_search_fields(settings.home)
    for indexed in built:
        with Catalog(settings.lake_dir) as catalog:
            LakeSearch(settings.home, field=indexed).rebuild(catalog)
    return bool(built)


def _forget_in_snapshot(settings: Settings, queries: Iterable[str], sessions: Collection[str]) -> tuple[int, int]:
    """The queries forgotten in the snapshot on disk, and listed for the folds running now (`ForgetList`), which
    would otherwise write them back from memory: those given, and the latest query of each of `sessions` the
    snapshot holds. How many open queries were forgotten, and how many sessions' latest queries (found by their
    query or by their session)."""
    path = settings.metrics_snapshot_path
    snapshot = load_snapshot(path)
    latest = MetricsProjection.latest_queries_of(snapshot.state, sessions) if snapshot is not None else set()
    queries = {*queries, *latest}
    ForgetList(settings.metrics_forget_path).add(queries)
    if snapshot is None:
        return 0, 0
    before = json.dumps(snapshot.state, sort_keys=True)
    asked = len(snapshot.state.get("asked", ()))
    forgotten = MetricsProjection.forget_in_state(snapshot.state, queries)
    if json.dumps(snapshot.state, sort_keys=True) != before:
        write_snapshot(path, snapshot)  # the same position: it replaces the one there
    return forgotten, asked - len(snapshot.state.get("asked", ()))


def _loki_requests(
    subjects: Subjects, queries: Sequence[str], labels: Sequence[tuple[str, str]] | None = None
) -> list[str]:
    """LogQL delete queries: one per user and session (two for an id Loki holds escaped: `metadata_forms`), and the
    queries' ids in groups (ids are structured metadata, so they are filtered with label filters, not line filters),
    for each (``app``, ``env``) pair of `labels`: the streams this data directory shipped (`LOKI_LABELS`), whatever
    settings the erase runs with, and no other deployment's that shares the Loki tenant. Without `labels` (one that
    shipped before they were noted, or whose list is damaged), querylog's streams of every app and env, by their
    ``event``."""
    events = f"event=~{logql_string('|'.join(EVENT_TYPES))}"
    selectors = (
        [f"{{app={logql_string(app)}, env={logql_string(env)}, {events}}}" for app, env in labels]
        if labels
        else [f"{{{events}}}"]
    )
    forms = [form for i in sorted(queries) for form in metadata_forms(i)]
    groups = [
        "|".join(_RE2_SPECIAL.sub(r"\\\g<0>", f) for f in forms[start : start + 50])
        for start in range(0, len(forms), 50)
    ]
    found: list[str] = []
    for selector in selectors:
        found += [
            f"{selector} | {name}={logql_string(form)}"
            for name, ids in (("user_id", subjects.user_ids), ("session_id", subjects.session_ids))
            for i in sorted(ids)
            for form in metadata_forms(i)  # as Loki holds it
        ]
        found += [f"{selector} | query_id=~{logql_string(group)}" for group in groups]
    return found


#: In the state directory: the (app, env) label pairs this data directory's events were shipped to Loki under
#: (`note_loki_labels`), so that an erasure's delete requests select those streams and no other deployment's.
LOKI_LABELS: Final = "loki-labels.json"


#: In the state directory: the Loki tenants (``X-Scope-OrgID``; "" for none) this data directory shipped under. Loki
#: keeps each tenant's lines apart: a delete request filed under another tenant finds none of them.
LOKI_TENANTS: Final = "loki-tenants.json"


def _shipped_tenants(settings: Settings) -> list[str] | None:
    """The tenants noted in `LOKI_TENANTS`: none when nothing was noted (an earlier release, or never shipped), None
    when the file cannot be read (erasures then hold to no tenant)."""
    try:
        return [str(t) for t in json.loads((settings.state_dir / LOKI_TENANTS).read_text(encoding="utf-8"))]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError):
        return None


def _check_loki_tenant(settings: Settings) -> None:
    """`ErasureError` when this data directory shipped to Loki under tenants that do not include the one set here:
    said before the log and the lake are touched, which would leave no way to find the subjects' ids again."""
    tenants = _shipped_tenants(settings) or []
    here = settings.loki_tenant or ""
    if tenants and here not in tenants:
        shipped = ", ".join(repr(t) if t else "none" for t in tenants)
        raise ErasureError(
            f"this data directory shipped to Loki under tenant {shipped} (state/{LOKI_TENANTS}), not "
            f"{repr(here) if here else 'none'}: Loki keeps each tenant's lines apart, so delete requests filed here "
            "would find none of them; nothing erased. Run the erase with QUERYLOG_LOKI_TENANT as the server has it "
            "(or --skip-loki)"
        )


def shipped_loki_labels(settings: Settings) -> list[tuple[str, str]] | None:
    """The label pairs noted in `LOKI_LABELS`; None when there is no such file, or it cannot be read."""
    try:
        pairs = json.loads((settings.state_dir / LOKI_LABELS).read_text(encoding="utf-8"))
        return [(str(app), str(env)) for app, env in pairs]
    except (OSError, ValueError, TypeError):  # missing; damaged: every app and env, rather than miss one
        return None


def note_loki_labels(settings: Settings) -> None:
    """Add the Loki labels of `settings` to `LOKI_LABELS`, which keeps every pair shipped under: an erasure must
    reach what earlier settings shipped too. A damaged file is left as it is (erasures then select every app).
    Notes `LOKI_REACH` too."""
    path = settings.state_dir / LOKI_LABELS
    _note_loki_reach(settings, shipped=path.exists() or settings.loki_checkpoint_path.exists())
    pairs = shipped_loki_labels(settings)
    if pairs is None and path.exists():
        return
    pair = (settings.service, settings.env)
    if pairs is None or pair not in pairs:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(sorted([*(pairs or []), pair])).encode())
    tenants, tenant = _shipped_tenants(settings), settings.loki_tenant or ""
    if tenants is not None and tenant not in tenants:  # a damaged list is left as it is
        atomic_write(
            settings.state_dir / LOKI_TENANTS, json.dumps(sorted([*tenants, tenant]), ensure_ascii=False).encode()
        )


#: In the state directory: the oldest time Loki may hold an event of this data directory at, noted before it first
#: ships (the Loki projection sends nothing older than its `max_age_s` then) and moved back if that age grows.
#: Erasures' delete requests start there: Loki splits a request into one a day (``compactor.delete_max_interval``,
#: 24 h by default), and a window from 2000 made ~9,800 of each, which held a compactor at 22 GB.
LOKI_REACH: Final = "loki-reach.json"
#: Where a delete request's window starts when this data directory shipped before `LOKI_REACH` was noted (an
#: earlier release): the whole of Loki's history. Loki wants RFC 3339 (it refuses "0" and 9-digit Unix seconds).
_LOKI_DELETE_START: Final = "2000-01-01T00:00:00Z"


def _loki_reach(settings: Settings) -> datetime | None:
    try:
        noted = datetime.fromisoformat(
            json.loads((settings.state_dir / LOKI_REACH).read_text(encoding="utf-8"))["from"]
        )
    except (OSError, ValueError, TypeError, KeyError):  # missing or damaged: Loki's whole history
        return None
    return noted if noted.tzinfo is not None else None


def _note_loki_reach(settings: Settings, *, shipped: bool) -> None:
    from querylog.runtime import loki_options

    path = settings.state_dir / LOKI_REACH
    reach = datetime.now(UTC) - timedelta(seconds=loki_options(settings).max_age_s)
    noted = _loki_reach(settings)
    if noted is None and (shipped or path.exists()):
        return  # shipped before anything was noted, or damaged: how far back Loki holds is not known
    if noted is None or reach < noted:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"from": reach.isoformat()}).encode())


def _loki_delete_start(settings: Settings) -> str:
    """Where this data directory's delete requests start: a day before `LOKI_REACH` (clocks differ), whole days."""
    reach = _loki_reach(settings)
    if reach is None:
        return _LOKI_DELETE_START
    return f"{(reach - timedelta(days=1)).astimezone(UTC):%Y-%m-%d}T00:00:00Z"


#: What an RE2 pattern (Loki's ``=~``) would read as syntax outside a character class.
_RE2_SPECIAL: Final = re.compile(r"[\\.+*?()|\[\]{}^$]")


def logql_string(value: str) -> str:
    """`value` as a LogQL string literal: Go's double-quoted syntax, which JSON's escapes are a subset of."""
    return json.dumps(value, ensure_ascii=False)


def _delete_in_loki(settings: Settings, requests: Sequence[str]) -> tuple[int, str | None]:
    """File `requests` in order; how many Loki accepted, and why it stopped short (None if it did not)."""
    import httpx

    from querylog.runtime import loki_options

    assert settings.loki_url is not None
    sent, start = 0, _loki_delete_start(settings)
    try:
        with loki_options(settings).client(settings.loki_url) as client:
            for query in requests:
                resp = client.post("/loki/api/v1/delete", params={"query": query, "start": start})
                if resp.status_code >= 300:
                    return sent, f"Loki answered {resp.status_code} to a delete request: {resp.text.strip()[:300]}"
                sent += 1
    except httpx.HTTPError as exc:
        return sent, f"Loki could not be reached for the delete requests: {exc}"
    return sent, None


#: In the state directory: an erasure under way, its subjects and the queries it found (ids), written before the
#: log is touched and removed once every store is done. A run killed midway (the log or the lake already clean,
#: the search index, the metrics snapshot and Loki not yet) is finished by the next one, whatever its subjects:
#: the log and the lake no longer hold the ids to find them again.
IN_PROGRESS: Final = "erase-in-progress.json"


class ErasureError(Exception):
    """An erasure that cannot start: another runs on this data directory, or a stopped one's record is damaged."""


class NoSubjectError(ValueError):
    """An erasure given no subject, with no stopped run's erasure to finish either."""


class SaltNeededError(ValueError):
    """An erasure by raw user ids that would find none of the hashed ones: the salt they were hashed with is not
    set (`USER_ID_SALTS`)."""


#: The kinds of subject, in `Subjects`' order, as `IN_PROGRESS` lists them.
_SUBJECT_KINDS: Final = ("user_ids", "session_ids", "query_ids")


def left_undone(settings: Settings, *, skip_loki: bool = False) -> bool:
    """Whether an erasure with no subject has work: a stopped run's to finish (`IN_PROGRESS`), or delete requests
    Loki did not take (`LOKI_PENDING`; not with `skip_loki`)."""
    state = settings.state_dir
    return (state / IN_PROGRESS).exists() or (not skip_loki and (state / LOKI_PENDING).exists())


def _resume(settings: Settings) -> tuple[Subjects, dict[str, Any]] | None:
    """The subjects of an erasure a killed run left half done (its users as stored), and what it had done (`_begin`'s
    `done`), or None."""
    path = settings.state_dir / IN_PROGRESS
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        subjects = Subjects(*(frozenset(map(str, earlier[name])) for name in _SUBJECT_KINDS))
        done = earlier.get("done", {})
        if not isinstance(done, dict):
            raise TypeError(f"done is {type(done).__name__}, not an object")
        return subjects, done
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:  # not what _begin wrote: never drop an erasure unfinished
        raise ErasureError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); it lists the subjects of an erasure a stopped run "
            "began: erase them again by hand, then delete the file"
        ) from None


def _begin(settings: Settings, subjects: Subjects, done: dict[str, Any] | None = None) -> None:
    """Record the erasure under way; `done`: what it has done so far (the subjects' count and the log's blanking, no
    id), which a run that finishes it reports and audits with its own."""
    record: dict[str, Any] = {name: sorted(getattr(subjects, name)) for name in _SUBJECT_KINDS}
    if done:
        record["done"] = done
    atomic_write(settings.state_dir / IN_PROGRESS, json.dumps(record, ensure_ascii=False).encode())


#: In the state directory: the Loki delete requests an erasure could not file, one JSON string a line, filed first
#: by the next `querylog erase` (the log and the lake no longer hold the ids to make them again). Holds ids: it is
#: removed as soon as Loki has them all.
LOKI_PENDING: Final = "loki-deletes-pending.jsonl"


def _pending_loki(settings: Settings) -> list[str]:
    """The delete requests earlier erasures could not file (`LOKI_PENDING`); `ErasureError` naming the file when it
    is damaged: its requests are the only record of what Loki still holds of subjects erased elsewhere."""
    path = settings.state_dir / LOKI_PENDING
    requests: list[object] = []
    try:
        requests = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        damaged = not all(isinstance(r, str) for r in requests)
    except FileNotFoundError:
        return []
    except ValueError:  # not JSON, not UTF-8
        damaged = True
    if damaged:
        raise ErasureError(
            f"{path} is damaged: it holds one JSON string a line, the Loki delete requests of earlier erasures that "
            "Loki did not take; file the readable ones by hand (docs/privacy.md says how), delete the file, then "
            "erase again"
        )
    return [str(r) for r in requests]


def _file_in_loki(settings: Settings, requests: Sequence[str], receipt: ErasureReceipt) -> None:
    """File the requests an earlier erasure left, then `requests`; keep what Loki did not take for the next run.
    Without a Loki URL here, keep them all: this home has shipped to Loki (its checkpoint is there), so Loki holds
    the subjects' lines."""
    path = settings.state_dir / LOKI_PENDING
    earlier = _pending_loki(settings)
    todo = list(dict.fromkeys([*earlier, *requests]))  # each once, the oldest first
    if settings.loki_url:
        sent, receipt.loki_error = _delete_in_loki(settings, todo)
    else:
        sent, receipt.loki_error = (
            0,
            (
                "this data directory has shipped events to Loki (state/checkpoints/loki.json or "
                "state/loki-labels.json), but no Loki URL is set here: set QUERYLOG_LOKI_URL (or LOKI_URL) as the "
                "server has it and run the erase again (or, if that Loki is gone or never took any, --skip-loki)"
            ),
        )
    receipt.loki_requests, receipt.loki_pending, receipt.loki_earlier = sent, len(todo) - sent, len(earlier)
    if sent < len(todo):
        atomic_write(path, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in todo[sent:]).encode())
    else:
        path.unlink(missing_ok=True)


def _erase_dead_letters(directory: Path, subjects: Subjects) -> tuple[int, int]:
    """Remove the entries of `subjects` from the dead letters in `directory` (each a push Loki refused, kept whole
    with its events' text and ids to be posted again: docs/loki.md): a push left without an entry goes, one left with
    some keeps them and says how many. Returns the entries removed and the lines that could not be read (kept)."""
    removed = unreadable = 0
    if not directory.is_dir():
        return removed, unreadable
    with locked(directory / DEAD_LETTER_LOCK):  # the sink appends under it: no letter is lost to the rewrite
        for path in sorted(directory.glob("*.jsonl")):
            kept: list[bytes] = []
            here = 0
            for line in path.read_bytes().splitlines():
                try:
                    letter = orjson.loads(line)
                    streams = letter["push"]["streams"]
                    for stream in streams:
                        values = [v for v in stream["values"] if not _names_a_subject(v, subjects)]
                        here += len(stream["values"]) - len(values)
                        stream["values"] = values
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    unreadable += 1
                    kept.append(line)
                    continue
                letter["push"]["streams"] = [stream for stream in streams if stream["values"]]
                if letter["push"]["streams"]:
                    letter["entries"] = sum(len(stream["values"]) for stream in letter["push"]["streams"])
                    kept.append(orjson.dumps(letter))
            if here and kept:
                atomic_write(path, b"".join(line + b"\n" for line in kept))
            elif here:
                path.unlink()
            removed += here
    return removed, unreadable


def _names_a_subject(value: list[Any], subjects: Subjects) -> bool:
    """Whether a pushed entry, ``[ts, line, {structured metadata}]``, is an event of `subjects` (Loki's line holds
    no id: they are its metadata)."""
    ids = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
    return subjects.names(ids.get("query_id"), ids.get("user_id"), ids.get("session_id"))


#: In the state directory: an audit entry per erasure, counts and a time, never an id.
AUDIT: Final = "erasures.jsonl"


def _audit_entries(settings: Settings) -> list[dict[str, Any]]:
    """The audit file's entries, oldest first; a damaged line (not UTF-8, not JSON) says nothing and is passed."""
    try:
        lines = (settings.state_dir / AUDIT).read_bytes().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def last_blanking(settings: Settings) -> dict[str, Any] | None:
    """The audit entry of the newest erasure that was the log's last write when it finished (it holds `log_end`)."""
    return next((entry for entry in reversed(_audit_entries(settings)) if entry.get("log_end")), None)


def erased_from_log(settings: Settings) -> tuple[int, int, str | None]:
    """How many erasures blanked events in the log, how many events they blanked in all, and when the last one ran
    (its ISO time): what the metrics' counters, which never go down, count beyond the log for good."""
    runs = [
        entry
        for entry in _audit_entries(settings)
        if isinstance(entry.get("log_events"), int) and entry["log_events"] > 0
    ]
    last = runs[-1].get("ts") if runs else None
    return len(runs), sum(entry["log_events"] for entry in runs), last if isinstance(last, str) else None


def _traffic_before(settings: Settings, end: Checkpoint) -> datetime | None:
    """When traffic last wrote the log that ends at `end`: the time an erasure that left it so recorded (its own
    blanking is no traffic), else the segments' last write."""
    earlier = last_blanking(settings)
    if earlier is not None and earlier["log_end"] == end:
        return written_before(earlier)
    return last_written(settings.log_dir)


def written_before(entry: dict[str, Any]) -> datetime | None:
    """When the log was last written before the erasure of audit `entry` blanked it; None if unknown."""
    try:
        return datetime.fromisoformat(entry["log_written_before"])
    except (KeyError, TypeError, ValueError):
        return None


def _audit(
    settings: Settings, receipt: ErasureReceipt, log_end: Checkpoint | None, traffic_at: datetime | None
) -> None:
    """An entry in the audit file. When the erasure blanked lines, `log_end` (the log's end once blanked: segment
    names and offsets, no id) and `traffic_at` (when traffic last wrote the log before it) tell `reconcile`
    whether its last write was this erasure, and when traffic wrote last."""
    path = settings.state_dir / AUDIT
    path.parent.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(), **receipt.as_dict()}
    if log_end is not None:
        entry["log_end"] = log_end
        entry["log_written_before"] = traffic_at.isoformat() if traffic_at is not None else None
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


def erase(
    settings: Settings,
    *,
    user_ids: Iterable[str] = (),
    session_ids: Iterable[str] = (),
    query_ids: Iterable[str] = (),
    wait_s: float = 30.0,
    skip_loki: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> ErasureReceipt:
    """Erase the subjects everywhere (see the module docstring); the receipt says what was found where. One at a
    time per data directory (`ErasureError` when another runs). `skip_loki`: leave Loki out, for a data directory
    that shipped to a Loki since retired (its pending requests stay as they are)."""
    lock = try_lead(settings.state_dir / "locks" / "erase.lock")
    if lock is None:
        raise ErasureError("another querylog erase runs on this data directory: wait for it, then run this one")
    try:
        return _erase(settings, user_ids, session_ids, query_ids, wait_s, skip_loki, progress)
    finally:
        lock.close()


def _erase(
    settings: Settings,
    user_ids: Iterable[str],
    session_ids: Iterable[str],
    query_ids: Iterable[str],
    wait_s: float,
    skip_loki: bool,
    progress: Callable[[str], None],
) -> ErasureReceipt:
    user_ids, session_ids, query_ids = tuple(user_ids), tuple(session_ids), tuple(query_ids)
    salt_note = _check_salt(settings, user_ids) if user_ids else None
    subjects, stored_users = _subjects(settings, user_ids, session_ids, query_ids)
    receipt = ErasureReceipt(
        erasure_id=str(uuid_utils.uuid7()),
        subjects={
            "user_ids": len(set(user_ids)),
            "session_ids": len(set(session_ids)),
            "query_ids": len(set(query_ids)),
        },
    )
    earlier, before = _resume(settings) or (None, {})
    for kind, n in before.get("subjects", {}).items():  # a stopped run's subjects, counted as it was given them
        receipt.subjects[kind] = receipt.subjects.get(kind, 0) + n
    if not subjects and earlier is None:  # none given: what a stopped run or Loki left is all there is to do
        if not left_undone(settings, skip_loki=skip_loki):
            raise NoSubjectError("name at least one subject: --user-id, --session-id or --query-id")
        _file_in_loki(settings, [], receipt)  # the requests earlier erasures could not file, alone
        return receipt
    if salt_note is not None:
        receipt.notes.append(salt_note)
    # Read once the log is blanked: damaged, they are said now (exit 2), before the log and the lake are touched.
    if not skip_loki:
        _pending_loki(settings)
        if settings.loki_url:
            _check_loki_tenant(settings)
    if settings.lake_dir.is_dir():
        ParquetSink.committed_checkpoint(settings.lake_dir)
        from querylog.analytics.upkeep import LakeCompactor, when_the_lake_is_free

        # Another upkeep at work holds the lake: waited for, or refused now, before the log is blanked, not after it.
        when_the_lake_is_free(LakeCompactor(settings.lake_dir).recover, _lake_said(progress))
    receipt.resumed = resumed = earlier is not None
    if earlier is not None:
        progress("finishing an erasure a run before this one left half done (it was stopped)")
        stored_users |= earlier.user_ids
        subjects = Subjects(
            subjects.user_ids | earlier.user_ids,
            subjects.session_ids | earlier.session_ids,
            subjects.query_ids | earlier.query_ids,
        )
    # The lake's rows of the subjects now: written before this erase began (with those the log blanks, what the
    # lake loses; a subject's event written later stays in both).
    in_lake = _lake_scan(settings.lake_dir, subjects, progress=progress) if settings.lake_dir.is_dir() else _LakeScan()
    found = set(queries_of(settings.log_dir, subjects)) | in_lake.queries
    queries = found | subjects.query_ids  # one given but not found here may still be in Loki, or come back
    everyone = Subjects(subjects.user_ids, subjects.session_ids, frozenset(queries))
    if found and settings.lake_dir.is_dir():
        # Every event of their queries the lake holds: a stage event need not repeat the user id, and once the log
        # is trimmed the lake alone holds it (erase_from_log finds them in the log, not here).
        in_lake = _lake_scan(settings.lake_dir, everyone, progress=progress)
    # What is written down (the record of this run) and sent (Loki): the user ids as stored, never a raw one.
    kept = Subjects(stored_users, subjects.session_ids, frozenset(queries))
    receipt.queries = len(found)
    progress(f"found {len(found)} {'query' if len(found) == 1 else 'queries'} of these subjects")
    _begin(settings, kept, {**before, "subjects": receipt.subjects})

    end_before = LogReader(settings.log_dir).end_checkpoint()
    traffic_at = _traffic_before(settings, end_before)
    erased: LogErasure = erase_from_log(settings.log_dir, everyone)
    # With what a stopped run blanked before (those lines are blank now: this run finds none of them).
    segments = sorted({*before.get("log_segments", ()), *erased.segments})
    receipt.log_events, receipt.log_segments = erased.events + before.get("log_events", 0), len(segments)
    if began := erased.query_ids - queries:  # a query of theirs began while this erasure listed them
        found |= began
        queries |= began
        receipt.queries = len(found)
        everyone = Subjects(subjects.user_ids, subjects.session_ids, frozenset(queries))
        kept = Subjects(stored_users, subjects.session_ids, frozenset(queries))
    position = LogReader(settings.log_dir).end_checkpoint()
    # The erasure is the log's last write if it blanked lines and nothing was appended while it did (blanking keeps
    # every line's length: the log ends where it ended before); or if a stopped run's was, and none was since.
    if erased.events:
        log_end, traffic = (position if position == end_before else None), traffic_at
    else:
        log_end = before.get("log_end") if before.get("log_end") == position else None
        traffic = datetime.fromisoformat(before["log_written_before"]) if before.get("log_written_before") else None
    # What a run that finishes this one reports and audits with its own; the queries that began meanwhile, whose lake
    # rows it removes too.
    done = {"subjects": receipt.subjects, "log_events": receipt.log_events, "log_segments": segments}
    done |= {"log_end": log_end, "log_written_before": traffic.isoformat() if traffic is not None else None}
    _begin(settings, kept, done)
    progress(f"log: {erased.events} events blanked in {len(erased.segments)} segments")

    if settings.lake_dir.is_dir():
        ids = in_lake.event_ids | erased.event_ids
        events, hours, _ = _erase_lake(settings.lake_dir, everyone, ids, progress)
        # Only a batch the Parquet projection read before the blanking can bring a subject's event back: with
        # nothing blanked in the log there is none to wait for.
        if erased.events and not _wait_for_parquet(settings, position, wait_s):
            receipt.notes.append(
                f"the Parquet projection has not caught up with the log within {wait_s:g} s: run the same erase "
                "again once it has (a batch it read before the log was blanked may still reach the lake). It runs "
                "in `querylog serve` or `querylog project`; if neither runs (QUERYLOG_PROJECTIONS=none), "
                "`querylog project --once` catches it up"
            )
        more, more_hours, left = _erase_lake(settings.lake_dir, everyone, ids, progress)
        receipt.lake_events, receipt.lake_hours = events + more, len(hours | more_hours)
        if left:
            receipt.notes.append(
                f"{left} lake hours changed while they were rewritten and still hold these subjects' rows: run the "
                "same erase again"
            )
        progress(f"lake: {receipt.lake_events} events removed from {receipt.lake_hours} hours")
        if receipt.lake_events or resumed:  # the index is built from the lake: unchanged, it holds none of them
            receipt.search_rebuilt = _rebuild_search(settings)
    receipt.metrics_open_queries, receipt.metrics_sessions = _forget_in_snapshot(
        settings, queries, subjects.session_ids
    )
    receipt.dead_letter_entries, unreadable = _erase_dead_letters(settings.loki_dead_letter_dir, everyone)
    if receipt.dead_letter_entries:
        n = receipt.dead_letter_entries
        progress(f"Loki's dead letters: {n} {'entry' if n == 1 else 'entries'} removed")
    if unreadable:
        receipt.notes.append(
            f"{unreadable} line(s) in {settings.loki_dead_letter_dir} are not dead letters as this release writes "
            "them (damaged, or edited): they were left as they are; read them, and delete those of these subjects"
        )
    # Shipped: by its Loki projection (the checkpoint) or by `replay loki` (which notes its labels too).
    shipped = settings.loki_checkpoint_path.exists() or (settings.state_dir / LOKI_LABELS).exists()
    if not skip_loki and (settings.loki_url or shipped or (settings.state_dir / LOKI_PENDING).exists()):
        # Never shipped: Loki holds no line of this data directory; a request would select another deployment's.
        receipt.loki_never_shipped = not shipped
        requests = _loki_requests(kept, sorted(queries), shipped_loki_labels(settings)) if shipped else []
        _file_in_loki(settings, requests, receipt)
        others = [t or "none" for t in _shipped_tenants(settings) or [] if t != (settings.loki_tenant or "")]
        if others and settings.loki_url:
            receipt.notes.append(
                f"this data directory shipped to Loki under other tenants too ({', '.join(others)}): the delete "
                "requests went to this one only, and the subjects' lines Loki holds under those are not deleted"
            )
    _audit(settings, receipt, log_end, traffic)
    # Every store is done (Loki's part kept, if not, in LOKI_PENDING).
    (settings.state_dir / IN_PROGRESS).unlink(missing_ok=True)
    _log.info("erasure_done", **{k: v for k, v in receipt.as_dict().items() if k != "notes"})
    return receipt
