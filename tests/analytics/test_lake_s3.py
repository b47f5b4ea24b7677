"""The lake on S3-compatible storage, against moto's S3 server on 127.0.0.1: push, idempotence, mirror, reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

moto_server = pytest.importorskip(
    "moto.server", reason="needs moto's server mode: pip install 'moto[server]' (a dev dependency)"
)

from querylog.analytics.catalog import Catalog  # noqa: E402
from querylog.analytics.lake_remote import (  # noqa: E402
    ENDPOINT_ENV,
    PushError,
    lake_dataset,
    parse_lake_uri,
    push_lake,
    remote_lake_files,
    s3_filesystem,
)
from querylog.cli import main  # noqa: E402
from querylog.logging.events import QueryReceived  # noqa: E402
from querylog.logging.parquet import ParquetSink  # noqa: E402
from querylog.logging.projection import Batch, Projector  # noqa: E402
from querylog.logging.segments import EventLog, LogReader  # noqa: E402
from querylog.logging.tracker import QueryTracker  # noqa: E402

COUNT_SQL = "select count(*), count(distinct event_id) from events"
QUERIES_SQL = (
    "select query_id, query_text, intent, status, session_id, started_at, ended_at, latency_ms "
    "from queries order by query_id"
)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENDPOINT_ENV, endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return endpoint


@pytest.fixture
def bucket(s3_env: str) -> str:
    """A fresh bucket per test (moto's state is shared by the module's server)."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    pafs.S3FileSystem(
        endpoint_override=s3_env.removeprefix("http://"),
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir(name)
    return name


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small lake made the real way: tracker -> event log -> projector -> Parquet sink; two hours of data."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        tracker = QueryTracker(log, env="test")
        for i, (text, intent) in enumerate(
            [("네이버 주가", "stock_analysis"), ("카카오 뉴스", "news_inquiry"), ("KOSPI today", "market_overview")]
        ):
            with tracker.query(text, session_id=f"s{i % 2}") as q:
                q.classified(intent, 0.9)
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
        # and one batch in an earlier hour, so the lake has more than one partition
        old = datetime.now(UTC) - timedelta(hours=3)
        events = [QueryReceived(query_text="old one", ts=old, query_id=f"old-{n}", env="test") for n in range(2)]
        sink.write(Batch(events=events, checkpoint=sink.checkpoint()))
    return home


def _local_keys(lake: Path) -> set[str]:
    return {p.relative_to(lake).as_posix() for p in (lake / "events").glob("date=*/hour=*/*.parquet")}


def _remote_keys(bucket: str, prefix: str) -> set[str]:
    found = remote_lake_files(parse_lake_uri(f"s3://{bucket}/{prefix}"), s3_filesystem())
    return {f"events/{rel}" for rel in found}


def test_parse_lake_uri() -> None:
    loc = parse_lake_uri("s3://b/some/prefix/")
    assert (loc.bucket, loc.prefix, loc.events, loc.uri) == (
        "b",
        "some/prefix",
        "b/some/prefix/events",
        "s3://b/some/prefix",
    )
    assert parse_lake_uri("s3://b").events == "b/events"
    with pytest.raises(ValueError, match="s3://"):
        parse_lake_uri("/local/lake")


def test_push_uploads_committed_files_under_the_same_keys_and_is_idempotent(home: Path, bucket: str) -> None:
    lake = home / "lake"
    (lake / "_querylog" / "tmp").mkdir(parents=True, exist_ok=True)
    (lake / "_querylog" / "tmp" / "leftover.parquet.tmp").write_bytes(b"not committed")
    local = _local_keys(lake)
    assert len({k.split("/")[2] for k in local}) >= 2  # at least two hour partitions
    uri = f"s3://{bucket}/prod/lake"
    size = sum((lake / k).stat().st_size for k in local)

    seen: list[tuple[int, int, str, int]] = []
    first = push_lake(lake, uri, progress=lambda d, t, k, n: seen.append((d, t, k, n)))
    assert (first.uploaded, first.skipped, first.uploaded_bytes) == (len(local), 0, size)
    assert [d for d, _, _, _ in seen] == list(range(len(local)))  # said before each file, with its size
    assert {(f"events/{k}", n) for _, _, k, n in seen} == {(k, (lake / k).stat().st_size) for k in local}
    assert _remote_keys(bucket, "prod/lake") == local
    fs = s3_filesystem()
    everything = fs.get_file_info(pafs.FileSelector(bucket, recursive=True))
    assert not any("_querylog" in i.path for i in everything)  # never the commit file or tmp
    for key in local:  # byte-for-byte
        with fs.open_input_stream(f"{bucket}/prod/lake/{key}") as f:
            assert f.read() == (lake / key).read_bytes()

    again = push_lake(lake, uri)
    assert (again.uploaded, again.skipped, again.skipped_bytes, again.deleted, again.stale) == (
        0,
        len(local),
        size,
        0,
        0,
    )


def test_catalog_over_s3_matches_the_local_catalog(home: Path, bucket: str) -> None:
    lake = home / "lake"
    uri = f"s3://{bucket}/lake"
    with Catalog(uri) as empty:  # nothing pushed yet: empty views, as for an empty local lake
        assert not empty.has_data()
        assert empty.query(COUNT_SQL)[1] == [(0, 0)]
        assert empty.query("select count(*) from queries")[1] == [(0,)]
    push_lake(lake, uri)
    with Catalog(lake) as local, Catalog(uri) as remote:
        assert remote.has_data()
        counts = local.query(COUNT_SQL)[1]
        assert counts == remote.query(COUNT_SQL)[1]
        assert counts[0][0] > 5 and counts[0][0] == counts[0][1]
        local_queries = local.query(QUERIES_SQL)
        assert local_queries == remote.query(QUERIES_SQL)
        assert len(local_queries[1]) == 5
        assert local.query("select * from sessions order by 1") == remote.query("select * from sessions order by 1")
        assert set(local.query("select * from events")[0]) == set(remote.query("select * from events")[0])
        # a time filter (pushed down into the pyarrow scan) gives the same answer too
        recent = "select count(*) from events where ts > now() - interval 1 hour"
        assert local.query(recent) == remote.query(recent)


def test_catalog_refresh_sees_newly_pushed_files(home: Path, bucket: str) -> None:
    lake = home / "lake"
    uri = f"s3://{bucket}/lake"
    push_lake(lake, uri)
    with Catalog(uri) as remote:
        before = remote.query("select count(*) from events")[1][0][0]
        with ParquetSink(lake) as sink:
            extra = [QueryReceived(query_text="later", query_id="later-1", env="test")]
            sink.write(Batch(events=extra, checkpoint=sink.checkpoint()))
        assert push_lake(lake, uri).uploaded == 1
        remote.refresh()
        assert remote.query("select count(*) from events")[1][0][0] == before + 1


def test_delete_mirrors_local_compaction(home: Path, bucket: str) -> None:
    lake = home / "lake"
    uri = f"s3://{bucket}/lake"
    push_lake(lake, uri)
    # stand-in for compaction: one hour's files replaced locally by a merged file with a new name
    import pyarrow as pa
    import pyarrow.parquet as pq

    hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]
    files = sorted(hour.glob("*.parquet"))
    merged = pa.concat_tables([pq.ParquetFile(f).read() for f in files])
    pq.write_table(merged, hour / "compacted-0000.parquet")
    for f in files:
        f.unlink()

    report = push_lake(lake, uri)
    assert (report.uploaded, report.stale, report.deleted) == (1, len(files), 0)
    with Catalog(lake) as local, Catalog(uri) as remote:  # without --delete: the compacted events twice
        local_n = local.query("select count(*) from events")[1][0][0]
        assert remote.query("select count(*) from events")[1][0][0] == local_n + merged.num_rows

    dry = push_lake(lake, uri, delete=True, dry_run=True)
    assert dry.deleted == len(files)
    assert len(_remote_keys(bucket, "lake")) == len(_local_keys(lake)) + len(files)
    mirrored = push_lake(lake, uri, delete=True)
    assert (mirrored.uploaded, mirrored.deleted, mirrored.stale) == (0, len(files), 0)
    assert _remote_keys(bucket, "lake") == _local_keys(lake)
    with Catalog(lake) as local, Catalog(uri) as remote:
        assert local.query(COUNT_SQL) == remote.query(COUNT_SQL)


def test_a_remote_catalog_open_while_another_host_mirrors_a_compaction_reads_on(home: Path, bucket: str) -> None:
    """A long-lived Catalog("s3://…") failed with "Path does not exist" after another host's push --delete, until
    refresh(): the local catalog runs a query again after a compaction; the remote one did not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake, uri = home / "lake", f"s3://{bucket}/mirrored"
    push_lake(lake, uri)
    with Catalog(uri) as remote:
        before = remote.query(COUNT_SQL)
        hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]
        files = sorted(hour.glob("*.parquet"))
        pq.write_table(pa.concat_tables([pq.ParquetFile(f).read() for f in files]), hour / "compacted-0001.parquet")
        for f in files:
            f.unlink()
        assert push_lake(lake, uri, delete=True).deleted == len(files)  # "another host": the bucket changed
        assert remote.query(COUNT_SQL) == before


def test_a_mirror_shows_its_deletions_as_it_goes(home: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Mirroring a compaction deleted 7,054 objects in 77 s with nothing on stderr: progress covered uploads only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake, uri = home / "lake", f"s3://{bucket}/shown"
    push_lake(lake, uri)
    hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]
    files = sorted(hour.glob("*.parquet"))
    pq.write_table(pa.concat_tables([pq.ParquetFile(f).read() for f in files]), hour / "compacted-0002.parquet")
    for f in files:
        f.unlink()
    assert main(["--home", str(home), "lake", "push", uri, "--delete"]) == 0
    err = capsys.readouterr().err
    assert f"deleting [1/{len(files)}]" in err and f"deleting [{len(files)}/{len(files)}]" in err


def test_delete_refuses_to_empty_the_bucket_from_an_empty_local_lake(home: Path, bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/lake"
    push_lake(home / "lake", uri)
    with pytest.raises(PushError, match="refusing"):
        push_lake(tmp_path / "nowhere", uri, delete=True)
    assert _remote_keys(bucket, "lake") == _local_keys(home / "lake")


def test_lake_dataset_is_none_for_an_empty_prefix(s3_env: str, bucket: str) -> None:
    assert lake_dataset(f"s3://{bucket}/nothing-here") is None


def test_cli_lake_push_and_sql_over_s3(home: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"s3://{bucket}/cli"
    n = len(_local_keys(home / "lake"))
    assert main(["lake", "push", uri]) == 0
    out, err = capsys.readouterr()
    assert f"uploaded {n} files" in out and "skipped 0" in out
    assert f"[{n}/{n}]" in err
    assert main(["lake", "push", uri, "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["uploaded"], report["skipped"], report["uri"]) == (0, n, uri)

    sql = "select intent, count(*) as n from queries where intent is not null group by 1 order by 1"
    assert main(["sql", sql, "--format", "json"]) == 0
    local_rows = json.loads(capsys.readouterr().out)
    assert main(["sql", sql, "--format", "json", "--lake", uri]) == 0
    assert (
        json.loads(capsys.readouterr().out)
        == local_rows
        == [
            {"intent": "market_overview", "n": 1},
            {"intent": "news_inquiry", "n": 1},
            {"intent": "stock_analysis", "n": 1},
        ]
    )


def test_cli_errors_are_one_line_exit_1_and_2_for_a_bad_uri(
    home: Path, s3_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lake", "push", "s3://no-such-bucket-here/x"]) == 1
    assert "querylog lake push:" in capsys.readouterr().err
    assert main(["lake", "push", "/not/a/uri"]) == 2  # not a remote lake: a usage error
    assert "s3://" in capsys.readouterr().err
    assert main(["sql", "select 1", "--lake", "s3://no-such-bucket-here/x"]) == 1
    assert "querylog sql:" in capsys.readouterr().err


def _all_keys(bucket: str, endpoint: str) -> dict[str, int]:
    """Every object under the bucket, staging names included: what a reader listing it could find."""
    fs = pafs.S3FileSystem(
        endpoint_override=endpoint.removeprefix("http://"), scheme="http", access_key="testing",
        secret_key="testing", region="us-east-1",
    )  # fmt: skip
    infos = fs.get_file_info(pafs.FileSelector(bucket, recursive=True))
    return {i.path: int(i.size or 0) for i in infos if i.type == pafs.FileType.File}


def test_a_push_cut_short_leaves_no_part_of_a_file_at_its_key(
    home: Path, bucket: str, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload stream closed by Ctrl-C (or a read error) completes with the parts sent so far: a push interrupted
    mid-file left a cut Parquet file at the final key, and every read of the bucket failed on it."""
    import querylog.analytics.lake_remote as lake_remote

    victim = sorted((home / "lake" / "events").rglob("*.parquet"))[-1]
    real_open = Path.open

    class _CutShort:
        def __init__(self, fh: Any) -> None:
            self.fh, self.reads = fh, 0

        def __enter__(self) -> _CutShort:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise KeyboardInterrupt  # Ctrl-C after the first chunk went up
            return bytes(self.fh.read(n))

    def open_cut_short(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, mode, *args, **kwargs)
        return _CutShort(fh) if path == victim and mode == "rb" else fh

    monkeypatch.setattr(lake_remote, "_CHUNK", 256)
    monkeypatch.setattr(Path, "open", open_cut_short)
    uri = f"s3://{bucket}/cut"
    with pytest.raises(KeyboardInterrupt):
        push_lake(home / "lake", uri)
    assert not any(key.endswith(victim.name) or victim.name in key for key in _all_keys(bucket, s3_env))
    monkeypatch.setattr(Path, "open", real_open)
    push_lake(home / "lake", uri)  # pushed again: whole, and readable
    with Catalog(uri) as remote, Catalog(home / "lake") as local:
        assert remote.query(COUNT_SQL)[1] == local.query(COUNT_SQL)[1]
    assert not any(".uploading" in key for key in _all_keys(bucket, s3_env))


def test_a_mirror_keeps_the_files_a_compaction_replaced_during_the_push(
    home: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`push --delete` while a compaction ran: the small files were deleted from the bucket although the merged file
    that replaced them was never uploaded, and the push said so with exit 0: events missing until the next push."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import querylog.analytics.lake_remote as lake_remote

    lake, uri = home / "lake", f"s3://{bucket}/race"
    assert main(["lake", "push", uri, "-q"]) == 0
    real_upload = lake_remote._upload
    compacted: list[Path] = []

    def upload_then_compact(*args: Any) -> None:  # a compaction runs while the push uploads (as in the test above)
        real_upload(*args)
        if not compacted:
            hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]
            files = sorted(hour.glob("*.parquet"))
            pq.write_table(pa.concat_tables([pq.ParquetFile(f).read() for f in files]), hour / "compacted-1.parquet")
            for f in files:
                f.unlink()
            compacted.extend(files)

    # Something new to upload, so that the push is under way when the compaction runs.
    with ParquetSink(lake) as sink:
        sink.write(Batch(events=[QueryReceived(query_id="late", query_text="늦은 질문")], checkpoint=sink.checkpoint()))
    monkeypatch.setattr(lake_remote, "_upload", upload_then_compact)
    capsys.readouterr()
    assert main(["lake", "push", uri, "--delete", "-q"]) == 1
    assert compacted
    err = capsys.readouterr().err
    assert f"{len(compacted)} remote files kept for now: the local lake changed during the push" in err
    assert "push again" in err
    with Catalog(uri) as remote, Catalog(home / "lake") as local:  # every event still in the bucket
        assert (
            remote.query("select count(distinct event_id) from events")[1]
            == local.query("select count(distinct event_id) from events")[1]
        )
    monkeypatch.setattr(lake_remote, "_upload", real_upload)
    assert main(["lake", "push", uri, "--delete", "-q"]) == 0  # pushed again: the mirror is done
    with Catalog(uri) as remote, Catalog(home / "lake") as local:
        assert remote.query(COUNT_SQL)[1] == local.query(COUNT_SQL)[1]


def test_a_mirror_deletes_nothing_when_what_replaced_the_files_before_the_push_is_replaced_during_it(
    home: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hours compacted before `push --delete`, then merged again (a day compaction) while it ran: the small files of
    those hours were deleted from the bucket although neither merged file ever reached it (9,000 events → 3,201)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import querylog.analytics.lake_remote as lake_remote

    lake, uri = home / "lake", f"s3://{bucket}/merged-twice"
    assert main(["lake", "push", uri, "-q"]) == 0
    hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]
    small = sorted(hour.glob("*.parquet"))
    merged = hour / "compacted-1.parquet"
    pq.write_table(pa.concat_tables([pq.ParquetFile(f).read() for f in small]), merged)
    for f in small:
        f.unlink()  # compacted before the push: the bucket still holds the small files
    real_upload = lake_remote._upload

    def merge_again_then_upload(fs: Any, path: Path, key: str, size: int) -> None:
        if merged.exists():  # merged again while the push runs: its first merged file never reaches the bucket
            merged.rename(hour / "compacted-2.parquet")
        real_upload(fs, path, key, size)

    monkeypatch.setattr(lake_remote, "_upload", merge_again_then_upload)
    capsys.readouterr()
    assert main(["lake", "push", uri, "--delete", "-q"]) == 1
    assert "the local lake changed during the push" in capsys.readouterr().err
    with Catalog(uri) as remote, Catalog(lake) as local:  # every event still in the bucket
        assert (
            remote.query("select count(distinct event_id) from events")[1]
            == local.query("select count(distinct event_id) from events")[1]
        )
    monkeypatch.setattr(lake_remote, "_upload", real_upload)
    assert main(["lake", "push", uri, "--delete", "-q"]) == 0  # on a still lake: the mirror is done
    with Catalog(uri) as remote, Catalog(lake) as local:
        assert remote.query(COUNT_SQL)[1] == local.query(COUNT_SQL)[1]


def test_a_mistyped_home_or_prefix_is_said(
    home: Path, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lake push` from a home that does not exist said "uploaded 0 files", exit 0, and advised --delete; `sql
    --lake s3://bucket/<typo>` answered 0 without a word; a bad endpoint in `sql` exited 1, not 2 as `lake push`."""
    typo = tmp_path / "hmoe"
    assert main(["--home", str(typo), "lake", "push", f"s3://{bucket}/x"]) == 1
    assert f"{typo} does not exist: is --home" in capsys.readouterr().err
    assert not typo.exists()
    assert main(["sql", "select count(*) from events", "--lake", f"s3://{bucket}/prdo"]) == 0
    assert f"no events in the lake at s3://{bucket}/prdo yet: is --lake right?" in capsys.readouterr().err
    assert main(["sql", "select 1", "--lake", f"s3://{bucket}/a//b"]) == 2
    assert "not a valid s3://bucket/prefix URI" in capsys.readouterr().err


def test_new_parts_written_during_a_mirror_do_not_hold_it_back(
    home: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live projection adds a part file every second: a mirror that waited for a still lake never deleted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import querylog.analytics.lake_remote as lake_remote

    lake, uri = home / "lake", f"s3://{bucket}/busy"
    push_lake(lake, uri)
    hour = sorted({(lake / k).parent for k in _local_keys(lake)})[0]  # compacted before this push
    files = sorted(hour.glob("*.parquet"))
    pq.write_table(pa.concat_tables([pq.ParquetFile(f).read() for f in files]), hour / "compacted-2.parquet")
    for f in files:
        f.unlink()
    real_upload, real_args = lake_remote._upload, []

    def upload_while_serving(*args: Any) -> None:
        real_upload(*args)
        real_args.append(args)
        with ParquetSink(lake) as sink:  # a batch of the running service lands meanwhile
            sink.write(
                Batch(
                    events=[QueryReceived(query_id=f"new-{len(real_args)}", query_text="새 질문")],
                    checkpoint=sink.checkpoint(),
                )
            )

    monkeypatch.setattr(lake_remote, "_upload", upload_while_serving)
    report = push_lake(lake, uri, delete=True)
    assert (report.uploaded, report.deleted, report.behind, report.stale) == (1, len(files), 0, 0)


def test_a_partial_upload_left_behind_is_removed_by_the_next_push(
    home: Path, bucket: str, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging object an upload cut short could not remove (a second Ctrl-C, kill -9) stayed for good: readers
    skip it, `--delete` did not see it, and it could hold events an erase removed since."""
    import querylog.analytics.lake_remote as lake_remote

    uri = f"s3://{bucket}/left"
    fs = s3_filesystem()
    left = f"{bucket}/left/events/date=2026-01-01/hour=00/.part-x.parquet.uploading"
    with fs.open_output_stream(left) as out:
        out.write(b"half a file")
    young = push_lake(home / "lake", uri)  # written just now: maybe another push's upload under way
    assert young.staging_removed == 0 and left in _all_keys(bucket, s3_env)
    monkeypatch.setattr(lake_remote, "_STAGING_LEFT_S", 0.0)
    assert push_lake(home / "lake", uri, dry_run=True).staging_removed == 1 and left in _all_keys(bucket, s3_env)
    assert push_lake(home / "lake", uri).staging_removed == 1
    assert left not in _all_keys(bucket, s3_env)


def test_a_mirror_removes_a_young_staging_object_of_a_file_the_lake_no_longer_has(
    home: Path, bucket: str, s3_env: str
) -> None:
    """A push killed mid-upload, then `erase`, then `push --delete`: the staging object kept 87 of the erased
    user's rows, question text included, for the hour a staging object may be another push's upload."""
    uri = f"s3://{bucket}/young"
    fs = s3_filesystem()
    [kept_rel, *_] = sorted(
        str(p.relative_to(home / "lake" / "events")) for p in (home / "lake" / "events").rglob("*.parquet")
    )
    folder, _, name = kept_rel.rpartition("/")
    gone = f"{bucket}/young/events/date=2026-01-01/hour=00/.part-erased.parquet.uploading"
    live = f"{bucket}/young/events/{folder}/.{name}.uploading"  # a file the lake has: maybe being uploaded now
    with fs.open_output_stream(gone) as out:
        out.write(b"half a file")
    assert push_lake(home / "lake", uri).staging_removed == 0  # not mirroring: left for the hour
    with fs.open_output_stream(live) as out:  # after that push, which uploaded the file through this very name
        out.write(b"half a file")
    report = push_lake(home / "lake", uri, delete=True)
    assert report.staging_removed == 1
    keys = _all_keys(bucket, s3_env)
    assert gone not in keys and live in keys


def test_a_rebuild_during_a_mirror_deletes_nothing(home: Path, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`replay parquet` writes the whole lake again as new part files: a mirror that ran meanwhile took every old
    remote file for one no longer local, and emptied the bucket of them, exit 0."""
    import querylog.analytics.lake_remote as lake_remote

    lake, uri = home / "lake", f"s3://{bucket}/rebuilt"
    push_lake(lake, uri)
    before = _remote_keys(bucket, "rebuilt")
    real_listing = lake_remote._remote_listing

    def listing_then_rebuild(*args: Any) -> Any:
        found = real_listing(*args)
        for path in sorted((lake / "events").rglob("*.parquet")):  # every file replaced by a new part
            path.rename(path.with_name(f"part-rebuilt-{path.name}"))
        return found

    monkeypatch.setattr(lake_remote, "_remote_listing", listing_then_rebuild)
    report = push_lake(lake, uri, delete=True)
    assert (report.deleted, report.behind) == (0, len(before))
    assert before <= _remote_keys(bucket, "rebuilt")


def test_a_push_that_is_not_all_done_says_why_with_json_too(
    home: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lake push --json` exited 1 with nothing on stderr: the reason was only in the JSON's fields."""
    import querylog.analytics.lake_remote as lake_remote

    lake, uri = home / "lake", f"s3://{bucket}/said"
    real_listing = lake_remote._remote_listing

    def listing_then_compaction(*args: Any) -> Any:
        found = real_listing(*args)
        for path in sorted((lake / "events").rglob("*.parquet")):
            path.rename(path.with_name(f"compacted-{path.name}"))
        return found

    monkeypatch.setattr(lake_remote, "_remote_listing", listing_then_compaction)
    assert main(["--home", str(home), "lake", "push", uri, "--json", "-q"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["vanished"] > 0
    assert "were replaced during the push" in err


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKIA-only"}, "AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "secret-only"}, "AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID"),
    ],
)
def test_half_a_pair_of_keys_is_refused_not_swapped_for_the_default_credentials(env: dict[str, str], said: str) -> None:
    """A key without its secret was ignored without a word, and the push went out as whoever the default chain is."""
    with pytest.raises(ValueError, match=said):
        s3_filesystem(env)
