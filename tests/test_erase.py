"""`querylog erase`: a subject's events gone from the log, the lake, the search index and the snapshot; everyone
else's untouched; idempotent; safe while serving; an interrupted run finished by the next."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from querylog.analytics.catalog import Catalog
from querylog.analytics.upkeep import LakeCompactor, LakeSearch
from querylog.cli import main
from querylog.config import Settings
from querylog.erase import erase
from querylog.logging.events import EVENT_TYPES
from querylog.logging.segments import LogReader
from querylog.runtime import Runtime
from querylog.testing import free_port, running_server

_SECRET = "앨리스비밀"


def _home(tmp_path: Path, *, queries: int = 6, **settings: object) -> Settings:
    s = Settings(home=tmp_path / "home", stdout_events=False, **settings)  # type: ignore[arg-type]
    with Runtime(s) as runtime:
        for i in range(queries):
            for user in ("alice", "bob"):
                text = f"{_SECRET} 삼성전자 {i}" if user == "alice" else f"bob 하이닉스 {i}"
                with runtime.tracker.query(text, user_id=user, session_id=f"s-{user}-{i % 2}") as q:
                    q.classified("stock_analysis", 0.9)
                    q.responded(model="m", input_tokens=1, output_tokens=1, answer=f"answer for {user} {i}")
    with Catalog(s.lake_dir) as catalog:
        LakeSearch(s.home).sync(catalog)
    return s


def _shipped(s: Settings) -> Settings:
    """`s`, as a data directory that has shipped to Loki (its labels noted, as the Loki projection notes them)."""
    from querylog.runtime import loki_sink

    loki_sink(dataclasses.replace(s, loki_url="http://127.0.0.1:9")).close()
    return s


def _rows(s: Settings, where: str) -> int:
    with Catalog(s.lake_dir) as catalog:
        return int(catalog.query(f"select count(*) from events where {where}")[1][0][0])


def _plain_files_with(home: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_users_events_are_gone_from_every_store_and_everyone_elses_stay(tmp_path: Path) -> None:
    s = _home(tmp_path)
    bob_before = _rows(s, "user_id = 'bob' or query_id in (select query_id from events where user_id = 'bob')")
    assert _rows(s, "user_id = 'alice'") > 0 and _plain_files_with(s.home, _SECRET.encode())  # there before
    receipt = erase(s, user_ids=["alice"])
    assert receipt.queries == 6 and receipt.log_events == receipt.lake_events == 6 * 4
    assert receipt.search_rebuilt
    assert _rows(s, "user_id = 'alice' or session_id like 's-alice%' or query_text like '%앨리스%'") == 0
    assert _rows(s, "user_id = 'bob' or query_id in (select query_id from events where user_id = 'bob')") == bob_before
    assert _plain_files_with(s.home, _SECRET.encode()) == []
    assert _plain_files_with(s.home, b"alice") == []  # not even the id, nor in the audit entry
    assert [h.query_text for h in LakeSearch(s.home).search("삼성전자")] == []
    assert len(LakeSearch(s.home).search("하이닉스")) == 6
    audit = [json.loads(line) for line in (s.state_dir / "erasures.jsonl").read_text().splitlines()]
    assert audit[-1]["subjects"] == {"user_ids": 1, "session_ids": 0, "query_ids": 0}


@pytest.mark.parametrize("trimmed", [False, True], ids=["log and lake", "lake alone"])
def test_a_feedback_given_on_someone_elses_query_is_erased_alone(tmp_path: Path, trimmed: bool) -> None:
    """`/v1/feedback` takes anyone's verdict on any query: erasing who gave it erased the query asked by another."""
    s = _home(tmp_path, queries=2)
    with Catalog(s.lake_dir) as catalog:
        [(asked,)] = catalog.query("select query_id from queries where user_id = 'alice' limit 1")[1]
    with Runtime(s) as runtime:
        runtime.tracker.feedback(asked, -1, comment="carol's verdict", user_id="carol", session_id="s-carol")
    alices = _rows(s, f"query_id = '{asked}' and event_type <> 'feedback_received'")
    assert alices == 4 and _rows(s, "user_id = 'carol'") == 1
    if trimmed:  # the log's segments gone (trimmed), the lake alone holds the query
        for segment in s.log_dir.glob("*.jsonl"):
            segment.unlink()
    receipt = erase(s, user_ids=["carol"]) if trimmed else erase(s, session_ids=["s-carol"])
    assert receipt.queries == 0 and receipt.lake_events == 1 and receipt.log_events == (0 if trimmed else 1)
    assert _rows(s, f"query_id = '{asked}'") == alices and _rows(s, "user_id = 'carol'") == 0
    assert _plain_files_with(s.home, b"carol's verdict") == []
    if not trimmed:
        ids = {json.loads(line)["event_id"] for batch in LogReader(s.log_dir).iter_all() for line in batch.lines}
        assert len(ids) == 2 * 2 * 4  # every query's four events, the one alice asked among them; no feedback
    with Catalog(s.lake_dir) as catalog:
        assert catalog.query(f"select user_id, feedback_score from queries where query_id = '{asked}'")[1] == [
            ("alice", None)
        ]


def test_the_lake_scans_say_how_far_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.erase as erase_module

    s = _home(tmp_path)
    files = len(list(s.lake_dir.glob("events/date=*/hour=*/*.parquet")))
    monkeypatch.setattr(erase_module, "_SCAN_PROGRESS_EVERY_S", 0.0)  # a line at every file, as minutes would give
    lines: list[str] = []
    erase(s, user_ids=["alice"], progress=lines.append)
    scanned = [line for line in lines if line.startswith("lake: scanned")]
    assert f"lake: scanned 0 of {files:,} files" in scanned  # the first scan, before it reads a file
    assert len(scanned) >= 2 * files  # the scans of the subjects, of their queries, and before the rewrite


def test_an_erase_that_meets_the_lakes_upkeep_waits_for_it_then_erases(tmp_path: Path) -> None:
    """The running service merges the hours that closed: an erasure at that moment stopped, "run it again"."""
    import fcntl
    import threading

    s = _home(tmp_path)
    waiting, said, done = threading.Event(), [], []

    def progress(line: str) -> None:
        said.append(line)
        if "waiting for another upkeep" in line:
            waiting.set()

    with (s.lake_dir / "_querylog" / "upkeep.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as the service's hour merging holds it
        worker = threading.Thread(target=lambda: done.append(erase(s, user_ids=["alice"], progress=progress)))
        worker.start()
        assert waiting.wait(timeout=60), said
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
        worker.join(timeout=120)
    assert done and done[0].log_events == 6 * 4 and done[0].lake_events > 0


def test_an_erase_while_a_compaction_holds_the_lake_is_refused_before_the_log_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It blanked the log, then found the lake busy and stopped: the log and the lake disagreed until it was run
    again, and the next `compact` knew nothing of the erasure left half done."""
    import fcntl

    import querylog.analytics.upkeep as upkeep
    from querylog.analytics.upkeep import UpkeepError

    monkeypatch.setattr(upkeep, "LAKE_BUSY_WAIT_S", 0.0)  # a compaction longer than an erasure waits for
    s = _home(tmp_path)
    log_before = {p.name: p.read_bytes() for p in s.log_dir.glob("*.jsonl")}
    with (s.lake_dir / "_querylog" / "upkeep.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a running `querylog compact` holds it
        with pytest.raises(UpkeepError, match="compact"):
            erase(s, user_ids=["alice"])
    assert {p.name: p.read_bytes() for p in s.log_dir.glob("*.jsonl")} == log_before
    assert not (s.state_dir / "erase-in-progress.json").exists()
    assert erase(s, user_ids=["alice"]).log_events == 6 * 4  # once the lake is free


def test_a_query_that_begins_while_the_erasure_lists_the_users_queries_leaves_no_event_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `POST /v1/events` traffic, erase blanked every event of a query that began after it listed the user's
    queries, but took out of the lake only its first event (the one naming the user): its answer stayed there, no
    longer tied to anyone, and no later erase could find it."""
    import querylog.erase as erasing
    from querylog.logging.events import QueryCompleted, QueryReceived, ResponseGenerated
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog

    s = _home(tmp_path, queries=2)
    listed = erasing.queries_of

    def listed_then_a_query_begins(directory: Path, subjects: erasing.Subjects) -> frozenset[str]:
        queries = listed(directory, subjects)
        with EventLog(s.log_dir) as log:  # the service, writing meanwhile; the stage events name no user
            log.append(QueryReceived(query_id="q-late", query_text=f"{_SECRET} 늦은 질문", user_id="alice"))
            log.append(ResponseGenerated(query_id="q-late", answer_text="LATE-ANSWER"))
            log.append(QueryCompleted(query_id="q-late", latency_ms=5.0))
        with ParquetSink(s.lake_dir) as sink:
            Projector(LogReader(s.log_dir), sink).catch_up()
        assert _rows(s, "query_id = 'q-late'") == 3
        return queries

    monkeypatch.setattr(erasing, "queries_of", listed_then_a_query_begins)
    receipt = erase(s, user_ids=["alice"])
    assert receipt.queries == 3 and receipt.log_events == receipt.lake_events == 2 * 4 + 3
    assert _rows(s, "query_id = 'q-late'") == 0
    assert _plain_files_with(s.home, b"LATE-ANSWER") == []


def test_the_log_scan_follows_a_query_it_meets_first_into_the_segments_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query that began after the scan listed the subject's queries: its first event names the user, the next
    ones (written later, into a later segment) do not, and must be blanked too."""
    import querylog.logging.erase as log_erasure
    from querylog.logging.events import QueryCompleted, QueryReceived, ResponseGenerated
    from querylog.logging.segments import EventLog

    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        log.append(QueryReceived(query_id="q-1", query_text="내 질문", user_id="alice"))
        log.append(QueryReceived(query_id="q-2", query_text="남의 질문", user_id="bob"))
    with EventLog(log_dir) as log:  # a second segment
        log.append(ResponseGenerated(query_id="q-1", answer_text="LATE-ANSWER"))
        log.append(QueryCompleted(query_id="q-1", latency_ms=5.0))
        log.append(QueryCompleted(query_id="q-2", latency_ms=5.0))
    assert len(list(log_dir.glob("*.jsonl"))) == 2
    monkeypatch.setattr(log_erasure, "queries_of", lambda directory, subjects: frozenset())  # listed before q-1 began
    erased = log_erasure.erase_from_log(log_dir, log_erasure.Subjects(user_ids=frozenset({"alice"})))
    assert erased.events == 3 and erased.query_ids == {"q-1"}
    assert not any(b"LATE-ANSWER" in p.read_bytes() for p in log_dir.glob("*.jsonl"))
    assert sum(p.read_bytes().count(b'"q-2"') for p in log_dir.glob("*.jsonl")) == 2


def test_the_log_scan_goes_back_for_a_query_whose_later_events_sort_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers on one home: a query that began while erasing had its answer in the other writer's segment,
    which sorts before the one its first event (the one naming the user) went to. One pass met the answer before
    it knew the query, and left it in the log."""
    import querylog.logging.erase as log_erasure
    from querylog.logging.events import QueryCompleted, QueryReceived, ResponseGenerated
    from querylog.logging.segments import EventLog

    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:  # the segment that sorts first
        log.append(ResponseGenerated(query_id="q-1", answer_text="EARLY-SEGMENT-ANSWER"))
        log.append(QueryCompleted(query_id="q-2", latency_ms=5.0))
    with EventLog(log_dir) as log:
        log.append(QueryReceived(query_id="q-1", query_text="내 질문", user_id="alice"))
        log.append(QueryReceived(query_id="q-2", query_text="남의 질문", user_id="bob"))
    monkeypatch.setattr(log_erasure, "queries_of", lambda directory, subjects: frozenset())  # listed before q-1 began
    erased = log_erasure.erase_from_log(log_dir, log_erasure.Subjects(user_ids=frozenset({"alice"})))
    assert erased.events == 2 and erased.query_ids == {"q-1"} and sum(erased.segments.values()) == 2
    assert not any(b"EARLY-SEGMENT-ANSWER" in p.read_bytes() for p in log_dir.glob("*.jsonl"))
    assert sum(p.read_bytes().count(b'"q-2"') for p in log_dir.glob("*.jsonl")) == 2


def test_erasing_again_or_an_unknown_subject_erases_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _home(tmp_path, queries=2)
    assert main(["--home", str(s.home), "erase", "--session-id", "s-bob-0"]) == 0
    assert "events removed" in capsys.readouterr().out
    assert main(["--home", str(s.home), "erase", "--session-id", "s-bob-0", "--user-id", "nobody"]) == 0
    assert "nothing erased" in capsys.readouterr().out
    index = LakeSearch(s.home).directory
    built = {p: p.stat().st_mtime_ns for p in index.rglob("*")}
    receipt = erase(s, query_ids=["q-never-sent"])  # a query id is kept for Loki, found here or not
    assert not receipt.search_rebuilt and {p: p.stat().st_mtime_ns for p in index.rglob("*")} == built
    assert main(["--home", str(s.home), "erase"]) == 2
    assert "name at least one subject" in capsys.readouterr().err
    for wait in ("-1", "nan"):
        assert main(["--home", str(s.home), "erase", "--user-id", "bob", "--wait", wait]) == 2
        assert "--wait must be a number of seconds >= 0" in capsys.readouterr().err


def test_with_a_salt_the_raw_user_id_erases_the_hashed_one(tmp_path: Path) -> None:
    s = _home(tmp_path, queries=2, user_id_salt="pepper")
    assert _rows(s, "user_id = 'alice'") == 0  # stored hashed
    assert erase(s, user_ids=["alice"]).lake_events == 2 * 4
    assert _rows(s, "query_text like '%앨리스%'") == 0 and _rows(s, "query_text like 'bob%'") == 2


def test_a_user_id_sent_decomposed_is_erased_under_the_pseudonym_an_earlier_release_gave_it(tmp_path: Path) -> None:
    """Releases before 2026-12-06 hashed a user id as typed, so one sent decomposed (NFD, from macOS) was stored under
    a pseudonym of its own. Ids are now composed before hashing; an erasure by the raw id must still find those."""
    import hashlib
    import hmac

    from querylog.logging.events import QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog

    s = _home(tmp_path, queries=1, user_id_salt="pepper")
    typed = unicodedata.normalize("NFD", "홍길동-42")
    earlier = "u_" + hmac.new(b"pepper", typed.encode(), hashlib.sha256).hexdigest()[:16]  # as those releases did
    with EventLog(s.log_dir) as log:
        log.append(QueryReceived(query_id="q-nfd", query_text=f"{_SECRET} 예전 질문", user_id=earlier))
    with ParquetSink(s.lake_dir) as sink:
        Projector(LogReader(s.log_dir), sink).catch_up()
    receipt = erase(s, user_ids=["홍길동-42"])
    assert receipt.queries == 1 and receipt.lake_events == 1
    assert _rows(s, f"user_id = '{earlier}'") == 0


def test_a_raw_user_id_without_the_salt_the_ids_were_hashed_with_is_refused_not_found_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run without the server's salt, `erase --user-id alice` found none of alice's hashed events and exited 0: the
    operator believed her erased. Now it says what it needs; given as stored (u_…), the id needs no salt."""
    s = _home(tmp_path, queries=2, user_id_salt="pepper")
    for other in (None, "salt"):
        unsalted = dataclasses.replace(s, user_id_salt=other)
        with pytest.raises(ValueError, match="QUERYLOG_USER_ID_SALT"):
            erase(unsalted, user_ids=["alice"])
    assert _rows(s, "query_text like '%앨리스%'") == 2 * 1  # nothing touched
    assert main(["--home", str(s.home), "erase", "--user-id", "alice"]) == 2
    assert "set the salt they were hashed with" in capsys.readouterr().err
    from querylog.runtime import make_redactor

    stored = make_redactor(s).pseudonymize_user_id("alice")
    assert erase(dataclasses.replace(s, user_id_salt=None), user_ids=[stored]).lake_events == 2 * 4
    assert _rows(s, "query_text like '%앨리스%'") == 0
    # A damaged note stops no server: it is said and left as it is (it may hold an earlier salt's), and an erase by
    # a raw id is refused while it is damaged.
    noted = s.state_dir / "user-id-salts.json"
    for damaged in ("{not json", "[1, 2]", '"abc"'):
        noted.write_text(damaged)
        with Runtime(s):
            pass
        assert noted.read_text() == damaged
        with pytest.raises(ValueError, match="move it away"):
            erase(s, user_ids=["bob"])


def test_with_a_salt_the_raw_user_id_is_never_written_down_nor_sent_to_loki(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erase's own record and its Loki delete requests carried the raw id, which querylog otherwise never
    stores when a salt is set; Loki keeps its delete requests, queries included."""
    from urllib.parse import parse_qs

    import querylog.erase as erasure
    from querylog.runtime import make_redactor
    from querylog.testing import RecordedLoki

    s = _shipped(_home(tmp_path, queries=1, user_id_salt="pepper"))
    hashed = make_redactor(s).pseudonymize_user_id("alice")

    def killed(settings: Settings) -> bool:
        raise KeyboardInterrupt

    rebuild = erasure._rebuild_search
    monkeypatch.setattr(erasure, "_rebuild_search", killed)
    with pytest.raises(KeyboardInterrupt):
        erase(s, user_ids=["alice"])
    record = (s.state_dir / erasure.IN_PROGRESS).read_text()
    assert hashed in record and '"alice"' not in record
    monkeypatch.setattr(erasure, "_rebuild_search", rebuild)
    loki = RecordedLoki()
    with loki.serve() as url:
        loki.fail_next(204, 204)
        receipt = erase(dataclasses.replace(s, loki_url=url), user_ids=["alice"])
        filed = [parse_qs(r.url.query.decode())["query"][0] for r in loki.requests if r.url.path.endswith("/delete")]
    assert receipt.loki_error is None and any(f'user_id="{hashed}"' in q for q in filed)
    assert not any('"alice"' in q for q in filed)


def test_a_rewrite_interrupted_after_the_swap_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _home(tmp_path, queries=3)
    total = _rows(s, "true")

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt  # the process dies between the swap and putting late files back

    monkeypatch.setattr(LakeCompactor, "_return_late_files", staticmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        erase(s, user_ids=["alice"])
    assert _rows(s, "true") in (total, total - 3 * 4)  # an hour whole before or after, never half
    monkeypatch.undo()
    erase(s, user_ids=["alice"])
    assert _rows(s, "user_id = 'alice'") == 0 and _rows(s, "true") == total - 3 * 4
    assert not any((s.lake_dir / "_querylog" / "compact").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.3, 0.8, 1.5])
def test_killed_midway_then_run_again_the_erasure_is_complete(tmp_path: Path, after_s: float) -> None:
    s = _home(tmp_path, queries=40)
    total = _rows(s, "true")
    env = {**os.environ, "QUERYLOG_HOME": str(s.home)}
    command = [sys.executable, "-m", "querylog", "erase", "--user-id", "alice", "--wait", "1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after_s)  # the kill's moment is the test's input, not a wait for a result
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _rows(s, "true") in range(total - 40 * 4, total + 1)
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 0
    assert _rows(s, "user_id = 'alice' or query_text like '%앨리스%'") == 0
    assert _rows(s, "true") == total - 40 * 4


@pytest.mark.slow
def test_erasing_while_the_service_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(home, {"QUERYLOG_PARQUET_INTERVAL_S": "0.1"}) as server:
        for i in range(4):
            for user in ("carol", "dave"):
                body = {"query": f"{user} 네이버 {i}", "user_id": user, "session_id": f"s-{user}"}
                assert httpx.post(f"{server.url}/v1/chat", json=body, timeout=30).status_code == 200
        done = subprocess.run(
            [sys.executable, "-m", "querylog", "erase", "--user-id", "carol", "--format", "json"],
            env={**os.environ, "QUERYLOG_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["log_events"] == 4 * 5
        assert httpx.post(f"{server.url}/v1/chat", json={"query": "after", "user_id": "erin"}, timeout=30)
    s = dataclasses.replace(Settings(), home=home)
    assert _rows(s, "user_id = 'carol' or query_text like 'carol%'") == 0
    assert _rows(s, "query_text like 'dave%'") == 4 and _rows(s, "user_id = 'erin'") > 0
    # The metrics fold that ran meanwhile forgot carol's session too: it wrote it back into the snapshot it
    # saved at shutdown, after the erase had cleaned the one on disk.
    assert b"s-dave" in s.metrics_snapshot_path.read_bytes()
    assert _plain_files_with(home, b"s-carol") == []


@pytest.mark.parametrize(
    ("odd", "held"),
    [
        ('o"brien\\x', ('o"brien\\x', 'o\\"brien\\\\x')),
        ("탈퇴\n회원", ("탈퇴\n회원", "탈퇴\\n회원")),
        ("\x1b[31m", ("\x1b[31m", "\\u001b[31m")),
        (unicodedata.normalize("NFD", "하이닉스"), ("하이닉스",)),
        ("q.1+(2)|[3]*", ("q.1+(2)|[3]*",)),
        ("plain-id", ("plain-id",)),
    ],
)
def test_delete_requests_select_an_id_however_loki_holds_it(odd: str, held: tuple[str, ...]) -> None:
    """Ids go into LogQL string literals escaped, and as Loki 3.4 holds them: NFC, and a JSON push's metadata with
    its JSON escapes kept (``o"brien`` is held as ``o\\"brien``; tests/loki_live checks it against a real Loki)."""
    from tests.support.loki_logql import LogSelector, _compare_text, parse

    from querylog.erase import _loki_requests
    from querylog.logging.erase import Subjects
    from querylog.logging.loki.encoding import metadata_forms

    assert metadata_forms(odd) == held
    subjects = Subjects(user_ids=frozenset([odd]), session_ids=frozenset([odd]))
    requests = _loki_requests(subjects, [odd, "other"])
    assert len(requests) == 2 * len(held) + 1
    selected: dict[str, set[str]] = {"user_id": set(), "session_id": set(), "query_id": set()}
    for request in requests:
        selector = parse(request)
        assert isinstance(selector, LogSelector)
        # Every querylog stream, whatever app and env shipped it: the erase may run with other settings than the server.
        assert selector.selects({"app": "chat-api", "env": "walk1x", "event": "query_received"})
        assert selector.selects({"app": "querylog", "env": "prod", "event": "feedback_received"})
        assert not selector.selects({"app": "querylog", "env": "prod"})
        (stage,) = selector.stages
        for value in (*held, "other", held[0] + "x", "x" + held[0]):
            if _compare_text(value, stage.op, str(stage.value)):  # type: ignore[union-attr]
                selected[stage.name].add(value)  # type: ignore[union-attr]
    assert selected == {"user_id": set(held), "session_id": set(held), "query_id": {*held, "other"}}


def test_once_the_log_is_trimmed_the_lake_loses_every_event_of_the_users_queries_not_only_those_naming_them(
    tmp_path: Path,
) -> None:
    """A producer's stage events need not repeat the user id (`POST /v1/events`). With the log trimmed, the erase
    removed only the lake's rows naming the user: the answer and the feedback comment of their query stayed."""
    from querylog.logging.events import FeedbackReceived, IntentClassified, QueryReceived, ResponseGenerated

    s = Settings(home=tmp_path / "home", stdout_events=False)
    with Runtime(s) as runtime:
        for query_id, user in (("q-carol", "carol"), ("q-dave", "dave")):
            runtime.log.append(QueryReceived(query_id=query_id, user_id=user, query_text=f"{user} 하이닉스 전망"))
            runtime.log.append(IntentClassified(query_id=query_id, intent="stock_analysis", confidence=0.9))
            runtime.log.append(ResponseGenerated(query_id=query_id, answer_text=f"answer for {user} KEEPME"))
            runtime.log.append(FeedbackReceived(query_id=query_id, score=1, comment=f"feedback of {user} KEEPME"))
            runtime.log.flush()
    assert _rows(s, "query_id = 'q-carol'") == 4
    for segment in LogReader(s.log_dir).segments():  # trimmed: the lake alone holds the events now
        segment.unlink()
    receipt = erase(s, user_ids=["carol"])
    assert receipt.queries == 1 and receipt.lake_events == 4
    assert _rows(s, "query_id = 'q-carol'") == 0 and _rows(s, "query_id = 'q-dave'") == 4
    assert _plain_files_with(s.home, b"answer for carol") == []


def test_with_loki_configured_a_delete_request_is_filed_per_subject_and_a_refusal_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from urllib.parse import parse_qs

    from querylog.runtime import loki_sink
    from querylog.testing import RecordedLoki

    s = _home(tmp_path, queries=2)
    loki = RecordedLoki()
    with loki.serve() as url:
        with_loki = dataclasses.replace(s, loki_url=url, env="prod")
        # Never shipped to Loki (`make run`, then LOKI_URL set): Loki holds no line of this home, and a request
        # selected every app's and env's streams, deleting other deployments' lines of the same user id.
        receipt = erase(with_loki, user_ids=["carol"])
        assert receipt.loki_never_shipped and receipt.loki_requests == 0 and receipt.loki_error is None
        assert not [r for r in loki.requests if r.url.path == "/loki/api/v1/delete"]
        loki_sink(with_loki).close()  # it ships from now on (its labels are noted)
        loki.fail_next(204, 204)  # what a Loki with deletion enabled answers (the double has no compactor)
        receipt = erase(with_loki, user_ids=["alice"])
        assert receipt.loki_error is None and receipt.loki_requests == 2 and not receipt.loki_never_shipped
        deletes = [r for r in loki.requests if r.url.path == "/loki/api/v1/delete"]
        queries = [parse_qs(r.url.query.decode())["query"][0] for r in deletes]
        # From a day before the oldest event the Loki projection could send (7 days back when it first shipped):
        # Loki splits a request into one a day, and a window from 2000 made ~9,800 of each.
        (start,) = {parse_qs(r.url.query.decode())["start"][0] for r in deletes}
        first_shipped = datetime.now(UTC) - timedelta(days=7)
        assert start in {f"{first_shipped - timedelta(days=d):%Y-%m-%d}T00:00:00Z" for d in (1, 2)}  # at midnight
        own_streams = '{app="querylog", env="prod", event=~"' + "|".join(EVENT_TYPES) + '"}'
        assert queries[0] == own_streams + ' | user_id="alice"'
        assert queries[1].startswith(own_streams + ' | query_id=~"')
        assert all(r.method == "POST" for r in deletes)
        receipt = erase(with_loki, user_ids=["bob"])  # this Loki has no compactor API: 404
        assert receipt.loki_error is not None and "404" in receipt.loki_error


def test_an_erase_stopped_midway_says_the_next_one_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import querylog.erase as erasure

    s = _home(tmp_path, queries=1)

    def interrupted(settings: Settings) -> bool:
        raise KeyboardInterrupt  # Ctrl-C after the log and the lake

    monkeypatch.setattr(erasure, "_rebuild_search", interrupted)
    monkeypatch.setenv("QUERYLOG_HOME", str(s.home))
    assert main(["erase", "--user-id", "alice", "--skip-loki"]) == 130
    assert "the next `querylog erase` (any subjects, or none) finishes this one" in capsys.readouterr().err
    assert (s.state_dir / erasure.IN_PROGRESS).exists()
    assert main(["erase", "--user-id", "bob", "--skip-loki"]) == 130  # finishing alice's, then stopped again
    capsys.readouterr()
    monkeypatch.setattr(erasure, "_rebuild_search", lambda settings: True)
    assert main(["erase", "--skip-loki", "--format", "json"]) == 0  # no subject: finishing theirs is the work
    receipt = json.loads(capsys.readouterr().out.splitlines()[-1])  # the receipt is the last line
    # The stopped runs' subjects and blanked lines are the finishing run's: it found the log blank already, and its
    # receipt and audit entry said 0 and 0, so that `reconcile` could not tell the erased events from lost ones.
    assert receipt["resumed"] and receipt["subjects"] == {"user_ids": 2, "session_ids": 0, "query_ids": 0}
    assert receipt["log_events"] == 2 * 4  # alice's query and bob's: received, classified, responded, completed
    audit = [json.loads(line) for line in (s.state_dir / "erasures.jsonl").read_text().splitlines()]
    assert audit[-1]["log_events"] == 8 and audit[-1]["log_end"] == LogReader(s.log_dir).end_checkpoint()
    assert not (s.state_dir / erasure.IN_PROGRESS).exists()
    assert _rows(s, "user_id in ('alice', 'bob')") == 0
    assert main(["erase", "--skip-loki"]) == 2  # nothing left to finish: a subject is needed again
    assert "name at least one subject" in capsys.readouterr().err

    def searching(*args: object) -> list[str]:
        raise KeyboardInterrupt  # Ctrl-C while the log is searched: nothing recorded, nothing erased

    monkeypatch.setattr(erasure, "queries_of", searching)
    assert main(["erase", "--user-id", "carol", "--skip-loki"]) == 130
    assert "stopped before anything was erased; run it again" in capsys.readouterr().err
    assert not (s.state_dir / erasure.IN_PROGRESS).exists()


def test_delete_requests_start_where_this_home_first_shipped_or_reach_back_to_2000_when_that_is_unknown(
    tmp_path: Path,
) -> None:
    from querylog.erase import LOKI_LABELS, LOKI_REACH, _loki_delete_start
    from querylog.runtime import loki_sink

    fresh = dataclasses.replace(_home(tmp_path / "fresh", queries=1), loki_url="http://127.0.0.1:9")
    loki_sink(fresh).close()
    noted = (fresh.state_dir / LOKI_REACH).read_text()
    week_ago = datetime.now(UTC) - timedelta(days=7)
    assert _loki_delete_start(fresh) in {f"{week_ago - timedelta(days=d):%Y-%m-%d}T00:00:00Z" for d in (1, 2)}
    loki_sink(fresh).close()  # started again: Loki may hold what it shipped since the first start, still
    assert (fresh.state_dir / LOKI_REACH).read_text() == noted

    # Shipped by a release that noted no reach (its labels are there): how far back Loki holds is not known.
    older = dataclasses.replace(_home(tmp_path / "older", queries=1), loki_url="http://127.0.0.1:9")
    older.state_dir.mkdir(parents=True, exist_ok=True)
    (older.state_dir / LOKI_LABELS).write_text('[["querylog", "dev"]]')
    loki_sink(older).close()
    assert not (older.state_dir / LOKI_REACH).exists()
    assert _loki_delete_start(older) == "2000-01-01T00:00:00Z"
    for damaged in ("{", '{"from": "2026-11-28T00:00:00"}', '{"from": 3}'):  # not JSON, no zone, not a time
        (fresh.state_dir / LOKI_REACH).write_text(damaged)
        assert _loki_delete_start(fresh) == "2000-01-01T00:00:00Z"
        loki_sink(fresh).close()
        assert (fresh.state_dir / LOKI_REACH).read_text() == damaged  # left as it is


def test_delete_requests_select_the_streams_this_home_shipped_and_no_other_deployments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requests selected querylog's streams of every app and env: erasing a user in staging deleted production's
    Loki lines of the same user id (its log and lake kept them, and reconcile then failed there)."""
    from tests.support.loki_logql import LogSelector, parse

    from querylog.erase import LOKI_LABELS, _loki_requests, shipped_loki_labels
    from querylog.logging.erase import Subjects
    from querylog.runtime import loki_sink

    s = dataclasses.replace(_home(tmp_path, queries=1), loki_url="http://127.0.0.1:9", env="stage")
    assert shipped_loki_labels(s) is None  # shipped nothing yet: every app and env, as before
    loki_sink(s).close()
    loki_sink(dataclasses.replace(s, env="stage-2")).close()  # shipped under another env since: both are kept
    loki_sink(s).close()
    assert shipped_loki_labels(s) == [("querylog", "stage"), ("querylog", "stage-2")]
    requests = _loki_requests(Subjects(user_ids=frozenset(["alice"])), ["q-1"], shipped_loki_labels(s))
    assert len(requests) == 2 * 2
    selectors = [parse(r) for r in requests]
    assert all(isinstance(x, LogSelector) for x in selectors)
    for labels, selected in (
        ({"app": "querylog", "env": "stage", "event": "query_received"}, 2),
        ({"app": "querylog", "env": "stage-2", "event": "feedback_received"}, 2),
        ({"app": "querylog", "env": "prod", "event": "query_received"}, 0),  # another deployment's
        ({"app": "chat-api", "env": "stage", "event": "query_received"}, 0),
    ):
        assert sum(x.selects(labels) for x in selectors) == selected, labels  # type: ignore[union-attr]
    (s.state_dir / LOKI_LABELS).write_text("[[")  # damaged: every app and env rather than miss one
    assert shipped_loki_labels(s) is None
    loki_sink(s).close()
    assert (s.state_dir / LOKI_LABELS).read_text() == "[["  # left as it is


def test_delete_requests_loki_did_not_take_are_kept_and_filed_first_by_the_next_erase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the log and the lake are erased, nothing can make a subject's Loki requests again: those Loki did not
    take are kept (state/loki-deletes-pending.jsonl) and filed by the next run, even one that finds nothing."""
    from urllib.parse import parse_qs

    from querylog.erase import LOKI_PENDING
    from querylog.testing import RecordedLoki

    s = _shipped(_home(tmp_path, queries=2))
    loki = RecordedLoki()
    with loki.serve() as url:
        monkeypatch.setenv("QUERYLOG_HOME", str(s.home))
        monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
        loki.fail_next(204, 503)  # the user's request is taken, then Loki fails on the queries' one
        assert main(["erase", "--user-id", "alice"]) == 1
        out = capsys.readouterr().out
        assert "1 delete request accepted; 1 not filed, kept in state/loki-deletes-pending.jsonl" in out
        assert "503" in out
        pending = (s.state_dir / LOKI_PENDING).read_text(encoding="utf-8").splitlines()
        assert len(pending) == 1 and "| query_id=~" in json.loads(pending[0])

        loki.fail_next(204, 204)
        assert main(["erase", "--user-id", "alice"]) == 0  # nothing left here, but Loki's part was not done
        out = capsys.readouterr().out
        assert "nothing erased" in out and "2 delete requests accepted (1 left by an earlier erasure)" in out
        filed = [parse_qs(r.url.query.decode())["query"][0] for r in loki.requests if r.url.path.endswith("/delete")]
        assert filed[2] == json.loads(pending[0])  # the kept one first
        assert filed[3] == filed[0]  # then this run's own (the user's, filed again: harmless to Loki)
        assert not (s.state_dir / LOKI_PENDING).exists()


def test_a_home_that_shipped_to_loki_keeps_the_requests_when_the_erase_runs_without_a_loki_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from a shell without the server's LOKI_URL, the erase exited 0 and Loki kept every line of the user."""
    from querylog.erase import LOKI_PENDING
    from querylog.logging.projection import CheckpointFile
    from querylog.testing import RecordedLoki

    s = _home(tmp_path, queries=1)
    CheckpointFile(s.loki_checkpoint_path).save({"segment": 100})  # as the server's Loki projection left it
    monkeypatch.setenv("QUERYLOG_HOME", str(s.home))
    monkeypatch.delenv("QUERYLOG_LOKI_URL", raising=False)
    monkeypatch.delenv("LOKI_URL", raising=False)
    assert main(["erase", "--user-id", "alice"]) == 1
    out = capsys.readouterr().out
    assert "2 not filed, kept in state/loki-deletes-pending.jsonl" in out and "no Loki URL is set here" in out
    loki = RecordedLoki()
    with loki.serve() as url:
        monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
        loki.fail_next(204, 204)
        assert main(["erase", "--user-id", "alice"]) == 0
        assert "2 delete requests accepted (2 left by an earlier erasure)" in capsys.readouterr().out
    assert not (s.state_dir / LOKI_PENDING).exists()


def test_the_requests_loki_did_not_take_are_filed_by_an_erase_that_names_no_subject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The receipt says the requests are kept "for the next `querylog erase`", and that one, run as said, answered
    "name at least one subject" (exit 2): they were filed only by an erase of some subject."""
    from querylog.erase import LOKI_PENDING
    from querylog.testing import RecordedLoki

    s = _shipped(_home(tmp_path, queries=1))
    monkeypatch.setenv("QUERYLOG_HOME", str(s.home))
    assert main(["erase"]) == 2  # nothing kept: a subject is needed
    assert "name at least one subject" in capsys.readouterr().err
    monkeypatch.setenv("QUERYLOG_LOKI_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["erase", "--user-id", "alice"]) == 1
    assert "kept in state/loki-deletes-pending.jsonl for the next `querylog erase`" in capsys.readouterr().out
    loki = RecordedLoki()
    with loki.serve() as url:
        monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
        loki.fail_next(204, 204)  # Loki's answers to the two deletes
        assert main(["erase"]) == 0
        out = capsys.readouterr().out
    assert "filing the Loki delete requests earlier erasures left" in out and "(2 left by an earlier erasure)" in out
    assert not (s.state_dir / LOKI_PENDING).exists()
    assert main(["erase", "--skip-loki"]) == 2  # nothing left to do


def test_an_erase_stopped_after_the_lake_is_finished_by_the_next_run_whatever_its_subjects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the lake and the search index, the next run found nothing in the log or the lake and left
    the index holding the text, the Loki lines unrequested, and no audit entry."""
    from urllib.parse import parse_qs

    import querylog.erase as erasure
    from querylog.testing import RecordedLoki

    s = _shipped(_home(tmp_path, queries=2))
    rebuild = erasure._rebuild_search

    def killed(settings: Settings) -> bool:
        raise KeyboardInterrupt  # as a kill -9 would stop it, after the log and the lake

    monkeypatch.setattr(erasure, "_rebuild_search", killed)
    with pytest.raises(KeyboardInterrupt):
        erase(s, user_ids=["alice"])
    assert _plain_files_with(s.home, _SECRET.encode())  # the search index still has the text
    assert (s.state_dir / erasure.IN_PROGRESS).exists()
    monkeypatch.setattr(erasure, "_rebuild_search", rebuild)
    loki = RecordedLoki()
    with loki.serve() as url:
        loki.fail_next(204, 204, 204)
        receipt = erase(dataclasses.replace(s, loki_url=url), user_ids=["someone-else"])
        filed = [parse_qs(r.url.query.decode())["query"][0] for r in loki.requests if r.url.path.endswith("/delete")]
    assert receipt.resumed and receipt.search_rebuilt and receipt.loki_error is None
    assert any('user_id="alice"' in q for q in filed) and any("query_id=~" in q for q in filed)
    assert _plain_files_with(s.home, _SECRET.encode()) == []
    assert not (s.state_dir / erasure.IN_PROGRESS).exists()
    assert len((s.state_dir / "erasures.jsonl").read_text().splitlines()) == 1


def test_one_erase_at_a_time_a_damaged_record_is_named_and_a_retired_loki_can_be_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs at once shared the in-progress record (one deleted the other's); a damaged one was a traceback on
    every erase after; a data directory that once shipped to Loki could never erase with exit 0 again."""
    from querylog.erase import IN_PROGRESS
    from querylog.logging.projection import CheckpointFile, try_lead

    s = _home(tmp_path, queries=1)
    monkeypatch.setenv("QUERYLOG_HOME", str(s.home))
    monkeypatch.delenv("QUERYLOG_LOKI_URL", raising=False)
    monkeypatch.delenv("LOKI_URL", raising=False)
    running = try_lead(s.state_dir / "locks" / "erase.lock")  # another erase, mid-run
    assert running is not None
    assert main(["erase", "--user-id", "alice"]) == 1
    assert "another querylog erase runs on this data directory" in capsys.readouterr().err
    running.close()
    (s.state_dir / IN_PROGRESS).write_text('{"user_ids": ["ali')  # cut short by a full disk, say
    assert main(["erase", "--user-id", "alice"]) == 1
    err = capsys.readouterr().err
    assert f"{s.state_dir / IN_PROGRESS} is damaged" in err and "erase them again by hand" in err
    (s.state_dir / IN_PROGRESS).unlink()
    # A damaged list of Loki requests left to file was a traceback after the log and the lake were erased.
    pending = s.state_dir / "loki-deletes-pending.jsonl"
    pending.write_text('"{event=~\\"query_.*\\"} | user_id=\\"bob\\""\ngarbage\n')
    logged = b"".join(p.read_bytes() for p in s.log_dir.glob("*.jsonl"))
    assert main(["erase", "--user-id", "alice"]) == 1
    err = capsys.readouterr().err
    assert f"{pending} is damaged" in err and "docs/privacy.md" in err and "Traceback" not in err
    assert b"".join(p.read_bytes() for p in s.log_dir.glob("*.jsonl")) == logged  # nothing touched yet
    assert not (s.state_dir / IN_PROGRESS).exists()
    pending.unlink()
    CheckpointFile(s.loki_checkpoint_path).save({"segment": 1})  # it shipped to a Loki, since retired
    assert main(["erase", "--user-id", "alice", "--skip-loki"]) == 0
    out = capsys.readouterr().out
    assert "loki:" not in out and "events blanked" in out
    assert not (s.state_dir / "loki-deletes-pending.jsonl").exists()


def test_the_receipt_counts_the_queries_found_and_an_id_sent_decomposed_is_found_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = Settings(home=tmp_path / "home", stdout_events=False)
    nfd_user = unicodedata.normalize("NFD", "김민수")  # typed on macOS
    with Runtime(s) as runtime, runtime.tracker.query("지울 질문", user_id=nfd_user) as q:
        q.classified("stock_analysis", 0.9)
    receipt = erase(s, user_ids=["김민수"], query_ids=["never-seen-1", "never-seen-2"])
    assert (receipt.queries, receipt.log_events) == (1, 3)  # found: one query; the two unknown ids count nothing
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "hmoe"))
    assert main(["erase", "--user-id", "someone"]) == 1
    assert "no log or lake in" in capsys.readouterr().err
    assert not (tmp_path / "hmoe").exists()


def test_a_subjects_query_written_while_the_erase_runs_stays_in_the_log_and_the_lake_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events written after the erase began stay in the log (docs/privacy.md), but the lake's second pass, matching
    on the user id, removed those the projection had brought in meanwhile: reconcile differed for days, and `replay
    parquet` brought them back. The receipt also counted an hour rewritten by both passes twice."""
    import querylog.erase as erasure
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    s = _home(tmp_path, queries=2)
    real_wait = erasure._wait_for_parquet

    def a_query_arrives_meanwhile(settings: Settings, position: dict[str, int], timeout_s: float) -> bool:
        # alice asks again, after the log was blanked
        with EventLog(settings.log_dir) as log, QueryTracker(log).query("앨리스의 새 질문", user_id="alice") as q:
            q.classified("news_inquiry", 0.9)
        with ParquetSink(settings.lake_dir) as sink:  # and the projection brings it to the lake
            Projector(LogReader(settings.log_dir), sink).catch_up()
        return real_wait(settings, position, timeout_s)

    monkeypatch.setattr(erasure, "_wait_for_parquet", a_query_arrives_meanwhile)
    receipt = erase(s, user_ids=["alice"])
    assert receipt.lake_events == receipt.log_events == 2 * 4
    assert receipt.lake_hours == len({p.parent for p in (s.lake_dir / "events").rglob("*.parquet")})
    in_log = sum(b'"user_id":"alice"' in line for batch in LogReader(s.log_dir).iter_all() for line in batch.lines)
    assert in_log == 3 == _rows(s, "user_id = 'alice'")  # the new query's three events, in both


def test_an_erase_under_another_loki_tenant_than_the_one_shipped_to_is_refused_before_anything_is_erased(
    tmp_path: Path,
) -> None:
    """Run with QUERYLOG_LOKI_TENANT=team-b on a data directory that shipped under team-a, erase said "2 delete
    requests accepted", exit 0: filed in team-b, they found nothing, and the log and lake no longer held the ids."""
    from querylog.erase import LOKI_TENANTS, ErasureError
    from querylog.runtime import loki_sink

    s = dataclasses.replace(_home(tmp_path, queries=1), loki_url="http://127.0.0.1:9", loki_tenant="team-a")
    loki_sink(s).close()  # the Loki projection notes its labels and tenant when it starts
    assert json.loads((s.state_dir / LOKI_TENANTS).read_text()) == ["team-a"]
    log_before = sorted((p.name, p.read_bytes()) for p in s.log_dir.glob("*.jsonl"))
    for other in ("team-b", None):
        with pytest.raises(ErasureError, match=r"shipped to Loki under tenant 'team-a'.*nothing erased"):
            erase(dataclasses.replace(s, loki_tenant=other), user_ids=["alice"], wait_s=0)
    assert sorted((p.name, p.read_bytes()) for p in s.log_dir.glob("*.jsonl")) == log_before
    # --skip-loki leaves Loki out, and so its tenant.
    receipt = erase(dataclasses.replace(s, loki_tenant="team-b"), user_ids=["alice"], wait_s=0, skip_loki=True)
    assert receipt.log_events > 0
    # Shipped under team-b since: an erase under team-a files there only, and says team-b's lines stay.
    loki_sink(dataclasses.replace(s, loki_tenant="team-b")).close()
    receipt = erase(s, user_ids=["bob"], wait_s=0)
    assert any("other tenants too (team-b)" in note for note in receipt.notes), receipt.notes


def test_an_erase_leaves_the_segments_times_so_retention_trims_them_when_it_would_have(tmp_path: Path) -> None:
    """Blanking a line reset the segment's time to the erase: trimming and QUERYLOG_RETENTION go by it, so one erase
    kept everyone's lines a whole retention longer than promised."""
    s = _home(tmp_path)
    segments = sorted((s.home / "log").glob("*.jsonl"))
    long_ago = time.time_ns() - 3 * 86_400 * 10**9
    for path in segments:
        os.utime(path, ns=(long_ago, long_ago))
    erase(s, user_ids=["alice"])
    assert [p.stat().st_mtime_ns for p in segments] == [long_ago] * len(segments)
    assert not any(_SECRET.encode() in p.read_bytes() for p in segments)  # and the lines were blanked


def test_a_subjects_entries_leave_the_loki_dead_letters_and_everyone_elses_stay_to_be_posted_again(
    tmp_path: Path,
) -> None:
    """A push Loki refused for a reason the sink cannot fix is kept whole, with its events' text and ids, to be
    posted again (docs/loki.md): an erasure left the subject's questions and answers there, and a repost after it
    would have put them back into Loki."""
    from querylog.logging.projection import Projector
    from querylog.runtime import loki_sink
    from querylog.testing import Fault, RecordedLoki

    s = _home(tmp_path, queries=2)
    loki = RecordedLoki()
    with loki.serve() as url:
        loki.fail_next(Fault.answer(400, "unexpected validation failure\n"))  # one push: every event of both
        with loki_sink(dataclasses.replace(s, loki_url=url)) as sink:
            Projector(LogReader(s.log_dir), sink).catch_up()
        assert loki.pending_faults == 0
    letters = list(s.loki_dead_letter_dir.glob("*.jsonl"))
    before = [json.loads(line) for path in letters for line in path.read_text().splitlines()]
    assert sum(letter["entries"] for letter in before) == 2 * 2 * 4  # every event of both users' queries
    assert str(letters[0].relative_to(s.home)) in _plain_files_with(s.home, _SECRET.encode())

    receipt = erase(s, user_ids=["alice"], skip_loki=True)
    assert receipt.dead_letter_entries == 2 * 4 and receipt.notes == []
    assert _plain_files_with(s.home, _SECRET.encode()) == [] and _plain_files_with(s.home, b"alice") == []
    after = [json.loads(line) for path in letters for line in path.read_text().splitlines()]
    values = [v for letter in after for stream in letter["push"]["streams"] for v in stream["values"]]
    assert len(values) == sum(letter["entries"] for letter in after) == 2 * 4
    assert {v[2]["user_id"] for v in values if "user_id" in v[2]} == {"bob"}
    repost = loki.handle(httpx.Request("POST", f"{url}/loki/api/v1/push", json=after[0]["push"]))
    assert repost.status_code == 204
    assert erase(s, user_ids=["alice"], skip_loki=True).dead_letter_entries == 0  # idempotent


def test_an_erased_sessions_latest_question_leaves_the_metrics_snapshot_when_the_log_and_lake_no_longer_hold_it(
    tmp_path: Path,
) -> None:
    """Retention had taken a session's events from the lake (the log trimmed): `erase --session-id` said "nothing
    erased", and the metrics snapshot kept the session's latest query id and the characters of its question."""
    import shutil

    s = _home(tmp_path, queries=2)
    shutil.rmtree(s.lake_dir)
    shutil.rmtree(s.log_dir)
    s.log_dir.mkdir()
    held = s.metrics_snapshot_path.read_bytes()
    assert b"s-bob-1" in held and b"s-alice-0" in held
    receipt = erase(s, session_ids=["s-bob-1"])
    assert (receipt.queries, receipt.metrics_sessions) == (0, 1)
    held = s.metrics_snapshot_path.read_bytes()
    assert b"s-bob-1" not in held and b"s-alice-0" in held
    out = subprocess.run(
        [sys.executable, "-m", "querylog", "erase", "--session-id", "s-bob-0"],
        env={**os.environ, "QUERYLOG_HOME": str(s.home)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "nothing erased" not in out.stdout and "the latest question of 1 session forgotten" in out.stdout
    from querylog.logging.metrics_snapshot import load_snapshot

    snapshot = load_snapshot(s.metrics_snapshot_path)
    assert snapshot is not None
    (latest,) = [entry[1] for entry in snapshot.state["asked"] if entry[0] == "s-alice-0"]
    assert erase(s, query_ids=[latest]).metrics_sessions == 1  # found by its query: counted as well
