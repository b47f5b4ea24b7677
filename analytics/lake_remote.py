"""The lake on S3-compatible storage: push the local lake's committed files to a bucket, and read them back.

The projection keeps writing the local lake (``<home>/lake``); `push_lake` copies its committed files,
``events/date=*/hour=*/*.parquet``, to ``s3://bucket/prefix/events/...`` under the same relative keys, and
`lake_dataset` opens such a prefix as a `pyarrow.dataset.Dataset` that `Catalog` registers in DuckDB, so the
``events``/``queries``/``sessions`` views work unchanged over the bucket. Only pyarrow's built-in
`pyarrow.fs.S3FileSystem` is used: no boto3, no s3fs, no DuckDB extension (httpfs downloads at runtime).

What is atomic: each object. A file goes up under a name readers skip, then is copied to its key, where it
appears whole (`_upload`: an upload cut short by Ctrl-C or a read error would otherwise complete with the parts
sent so far), so a reader never sees half a file. What is not: a push as a whole (a reader listing mid-push sees
some of the new files), and a mirror (``delete=True``) after local compaction uploads the merged file before it
deletes the small ones it replaced, so a reader in between sees those events twice (never zero times: the order
is chosen so, and files that left the local lake during the push stay in the bucket until the next push:
`PushReport.behind`).

Idempotent: local files are immutable once renamed into place (named ``part-<uuid7>`` or
``compacted-<uuid7>``), so a key that already exists with the same size holds the same bytes and is skipped.

Credentials and endpoint come from the standard environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), and ``QUERYLOG_S3_ENDPOINT_URL`` for
S3-compatible servers (MinIO, Ceph, moto): e.g. ``http://minio:9000``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from querylog.logging.parquet import LAKE_SCHEMA

__all__ = [
    "ENDPOINT_ENV",
    "LakeLocation",
    "PushError",
    "PushReport",
    "is_remote_lake",
    "lake_dataset",
    "parse_lake_uri",
    "push_lake",
    "remote_lake_files",
    "s3_filesystem",
]

ENDPOINT_ENV: Final = "QUERYLOG_S3_ENDPOINT_URL"
#: A committed lake file, relative to ``events/``: what readers see and what a push copies.
_COMMITTED: Final = re.compile(r"date=[^/]+/hour=[^/]+/[^/.][^/]*\.parquet")
_CHUNK: Final = 8 << 20
#: An upload's staging object (`_upload`): a dot first and no ``.parquet`` at the end, so readers skip it.
_STAGING: Final = re.compile(r"date=[^/]+/hour=[^/]+/\.[^/]+\.parquet\.uploading")
#: A staging object older than this is what an upload cut short left (a second Ctrl-C, kill -9, a delete the
#: bucket refused), not another push's upload under way: the next push removes it.
_STAGING_LEFT_S: Final = 3600.0

Progress = Callable[[int, int, str, int], None]


class PushError(Exception):
    """A push that was refused or failed; the message says why, on one line."""


@dataclass(frozen=True, slots=True)
class LakeLocation:
    """``s3://bucket/prefix`` split up; `events` is the pyarrow path (``bucket/prefix/events``) of the files."""

    bucket: str
    prefix: str

    @property
    def root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def uri(self) -> str:
        return f"s3://{self.root}"


def is_remote_lake(lake: Path | str) -> bool:
    return isinstance(lake, str) and lake.startswith("s3://")


def parse_lake_uri(uri: str) -> LakeLocation:
    if not uri.startswith("s3://"):
        raise ValueError(f"a remote lake is an s3://bucket/prefix URI; got {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not bucket or "//" in prefix:
        raise ValueError(f"not a valid s3://bucket/prefix URI: {uri!r}")
    return LakeLocation(bucket, prefix)


def s3_filesystem(env: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    """An `S3FileSystem` from the standard AWS variables plus ``QUERYLOG_S3_ENDPOINT_URL``."""
    env = os.environ if env is None else env
    kwargs: dict[str, Any] = {}
    endpoint = env.get(ENDPOINT_ENV, "").strip()
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        if not sep or scheme not in ("http", "https") or not rest.strip("/"):
            raise ValueError(f"{ENDPOINT_ENV} must be an http:// or https:// URL; got {endpoint!r}")
        kwargs["scheme"] = scheme
        kwargs["endpoint_override"] = rest.rstrip("/")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):  # one alone was silently ignored, and the default chain's identity used instead
        given, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if key else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise ValueError(f"{given} is set without {missing}: set both, or neither for the AWS default credentials")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        if env.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = env["AWS_SESSION_TOKEN"]
    # Without keys, the AWS SDK's default chain (profile, instance role). `allow_delayed_open` lets a file smaller
    # than one part go up in a single PutObject instead of a three-request multipart upload.
    return pafs.S3FileSystem(allow_delayed_open=True, **kwargs)


def remote_lake_files(location: LakeLocation, filesystem: pafs.FileSystem) -> dict[str, int]:
    """The committed lake files under a location: key relative to ``events/`` -> size in bytes. A missing
    prefix is an empty lake; a missing bucket is an error (FileNotFoundError), not silently no data."""
    return _remote_listing(location, filesystem)[0]


def _remote_listing(
    location: LakeLocation, filesystem: pafs.FileSystem
) -> tuple[dict[str, int], dict[str, tuple[str, datetime | None]]]:
    """One listing of ``events/``: the committed files (relative key -> size), and the staging objects an upload
    cut short left behind (`_upload`; full key -> the relative key of the file it stages, when written)."""
    if filesystem.get_file_info(location.bucket).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"bucket {location.bucket!r} not found")
    selector = pafs.FileSelector(location.events, recursive=True, allow_not_found=True)
    committed: dict[str, int] = {}
    staging: dict[str, tuple[str, datetime | None]] = {}
    base = location.events + "/"
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.path.startswith(base):
            continue
        rel = info.path[len(base) :]
        if _COMMITTED.fullmatch(rel):
            committed[rel] = int(info.size or 0)
        elif _STAGING.fullmatch(rel):
            folder, _, name = rel.rpartition("/")
            staging[info.path] = (f"{folder}/{name[1:].removesuffix('.uploading')}", info.mtime)
    return committed, staging


def _local_lake_files(lake_dir: Path) -> dict[str, Path]:
    events = lake_dir / "events"
    out: dict[str, Path] = {}
    for path in sorted(events.glob("date=*/hour=*/*.parquet")):
        rel = path.relative_to(events).as_posix()
        if _COMMITTED.fullmatch(rel):
            out[rel] = path
    return out


@dataclass(slots=True)
class PushReport:
    """What a push did. `stale` are remote files no longer in the local lake (compacted or expired there) that
    were left in place (no ``delete``): readers of the bucket see their events twice until they are deleted."""

    uri: str
    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    deleted: int = 0
    stale: int = 0
    vanished: int = 0  # local files compacted away between listing and upload: the next push copies the result
    #: With ``delete``: remote files kept although the local lake no longer has them, because the lake changed
    #: during the push (a compaction, an erase, a rebuild): what replaced them may not be in the bucket yet, so they
    #: may hold the only copy there of their events. The next push deletes them.
    behind: int = 0
    #: Staging objects that uploads cut short had left (`_upload`), removed.
    staging_removed: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def push_lake(
    lake_dir: Path | str,
    uri: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    delete: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    deleting: Callable[[int, int, str], None] | None = None,
) -> PushReport:
    """Upload the local lake's committed files to ``uri`` (``s3://bucket/prefix``); skip keys already there
    with the same size. With ``delete``, afterwards delete remote lake files the local lake no longer has
    (mirroring local compaction and retention). Never touches ``_querylog/`` or anything outside ``events/``.
    `progress` is told of each upload (done, total, key, size), `deleting` of each deletion (done, total, key)."""
    lake_dir = Path(lake_dir)
    location = parse_lake_uri(uri)
    fs = filesystem if filesystem is not None else s3_filesystem()
    report = PushReport(uri=location.uri, dry_run=dry_run)
    local = _local_lake_files(lake_dir)
    try:
        remote, staging = _remote_listing(location, fs)
    except OSError as exc:
        raise PushError(f"cannot list {location.uri}: {_one_line(exc)}") from exc
    todo: list[tuple[str, Path, int]] = []
    for rel, path in local.items():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report.vanished += 1
            continue
        if remote.get(rel) == size:
            report.skipped += 1
            report.skipped_bytes += size
        else:
            todo.append((rel, path, size))
    there = set(remote)  # what the bucket holds whole once the uploads are done
    for done, (rel, path, size) in enumerate(todo):
        if progress is not None:
            progress(done, len(todo), rel, size)
        if not dry_run:
            try:
                _upload(fs, path, f"{location.events}/{rel}", size)
            except FileNotFoundError:
                report.vanished += 1
                continue
            except OSError as exc:
                raise PushError(f"uploading {rel} to {location.uri}: {_one_line(exc)}") from exc
        there.add(rel)
        report.uploaded += 1
        report.uploaded_bytes += size
    # Listed again: a compaction, an erase or a rebuild that ran meanwhile replaced files with ones not uploaded.
    listed = set(local)
    local = _local_lake_files(lake_dir) if report.vanished or delete else local
    # Mirroring, a staging object of a file the lake no longer has goes however young: no later push uploads that
    # file, and it may hold events an erase removed (a push that read the file before it went is cut short).
    _remove_left_staging(fs, staging, report, dry_run=dry_run, gone_from=set(local) if delete and local else None)
    extra = sorted(there - set(local))
    if extra and delete:
        if not local:
            raise PushError(
                f"refusing to delete all {len(extra)} files under {location.uri}: the local lake {lake_dir} is empty"
            )
        # The lake changed during this push (a compaction, an erase, a rebuild: a file it listed is gone): what
        # replaced the files no longer local, before the push or during it, may not be in the bucket yet, so each may
        # hold the only copy there of its events. None is deleted; the next push, on a still lake, deletes them.
        # New files the running service writes change nothing here.
        if report.vanished or not listed <= set(local):
            report.behind, extra = len(extra), []
        for done, rel in enumerate(extra):
            if deleting is not None:
                deleting(done, len(extra), rel)
            if not dry_run:
                try:
                    fs.delete_file(f"{location.events}/{rel}")
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise PushError(f"deleting {rel} from {location.uri}: {_one_line(exc)}") from exc
            report.deleted += 1
        report.stale = report.behind
    elif extra:
        report.stale = len(extra)
    return report


def _remove_left_staging(
    fs: pafs.FileSystem,
    staging: dict[str, tuple[str, datetime | None]],
    report: PushReport,
    *,
    dry_run: bool,
    gone_from: set[str] | None = None,
) -> None:
    """Remove the staging objects uploads cut short left behind (older than `_STAGING_LEFT_S`: a younger one may
    be another push's upload under way), and, given the local lake's files (`gone_from`), those of files it no
    longer has. A copy readers never see, but a copy: of erased events too."""
    cutoff = datetime.now(UTC) - timedelta(seconds=_STAGING_LEFT_S)
    for key, (staged, written) in staging.items():
        gone = gone_from is not None and staged not in gone_from
        if written is not None and written > cutoff and not gone:
            continue
        if not dry_run:
            try:
                fs.delete_file(key)
            except FileNotFoundError:  # moved into place meanwhile by the push that made it
                continue
            except OSError as exc:
                raise PushError(f"deleting {key} (left by an upload cut short): {_one_line(exc)}") from exc
        report.staging_removed += 1


#: S3's CopyObject limit (5 GiB): a larger file is uploaded straight to its key.
_COPY_MAX: Final = 5 << 30


def _upload(fs: pafs.FileSystem, path: Path, key: str, size: int) -> None:
    """Upload `path` to `key` so that readers never see part of it. An output stream closed by an error (Ctrl-C, a
    read error) completes its upload with the parts sent so far, and Arrow has no abort: the file goes up under a
    name readers skip (a dot first, not ``.parquet``), then is copied to `key`, where the copy appears whole (S3
    has no rename), and the staging object is removed; whatever an error leaves is removed too, or, if that fails
    (a second Ctrl-C, kill -9, a delete the bucket refuses), by a later push (`_remove_left_staging`)."""
    folder, _, name = key.rpartition("/")
    staging = key if size > _COPY_MAX else f"{folder}/.{name}.uploading"
    try:
        with path.open("rb") as src, fs.open_output_stream(staging) as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        if staging != key:
            fs.move(staging, key)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(staging)
        raise


def lake_dataset(uri: str, *, filesystem: pafs.FileSystem | None = None) -> ds.Dataset | None:
    """The remote lake's committed files as one hive-partitioned dataset (columns: the lake's, unified by name
    with the first file's, plus string ``date`` and ``hour``), or None if it has none yet. The file list is
    taken now: files pushed later are seen after `Catalog.refresh()`."""
    location = parse_lake_uri(uri)
    fs = filesystem if filesystem is not None else s3_filesystem()
    files = [f"{location.events}/{rel}" for rel in sorted(remote_lake_files(location, fs))]
    if not files:
        return None
    partitioning = ds.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
    options: dict[str, Any] = {
        "filesystem": fs,
        "format": "parquet",
        "partitioning": partitioning,
        "partition_base_dir": location.events,
    }
    dataset = ds.dataset(files, **options)
    try:
        schema = pa.unify_schemas([dataset.schema, LAKE_SCHEMA])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return dataset
    return dataset if schema.equals(dataset.schema) else ds.dataset(files, schema=schema, **options)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
