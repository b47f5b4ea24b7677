"""``querylog lake push``: copy the local lake's committed Parquet files to S3-compatible storage."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "lake",
        help="the lake on S3-compatible storage: push it to a bucket",
        description="Operate on the Parquet lake's remote copy. Read it back with `querylog sql --lake s3://...`. "
        "Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; endpoint of an S3-compatible "
        "server (MinIO, Ceph): QUERYLOG_S3_ENDPOINT_URL=http://host:9000.",
    )
    actions = p.add_subparsers(dest="lake_action", metavar="ACTION", required=True)
    push = actions.add_parser(
        "push",
        help="upload committed lake files to s3://bucket/prefix (idempotent)",
        description="Upload the lake's committed files (events/date=*/hour=*/*.parquet) to s3://bucket/prefix/events/ "
        "under the same keys. Each file goes up under a name readers skip, then is copied to its key, so readers "
        "never see half a file, even of a push cut short; keys already there with the same size are skipped, so a "
        "push can be repeated or resumed. Nothing remote is deleted unless --delete. Exit 1 when the local lake "
        "does not exist (a mistyped --home), a server cannot be reached, or --delete could not mirror.",
    )
    push.add_argument("uri", help="destination, e.g. s3://querylog-lake/prod")
    push.add_argument(
        "--delete",
        action="store_true",
        help="then delete remote lake files the local lake no longer has (after compaction, retention or "
        "erase); readers may see those events twice between the upload and the delete. Files that left the local "
        "lake during the push (a compaction, erase or rebuild ran) are kept until the next push (exit 1: push again)",
    )
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be uploaded or deleted, change nothing (the bucket is still listed, to compare)",
    )
    push.add_argument("--json", action="store_true", help="print the report as JSON")
    push.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    push.set_defaults(run=run_push, home_use="read")


def run_push(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.analytics.lake_remote import PushError, push_lake
    from querylog.commands import lake_missing

    if not settings.lake_dir.is_dir():  # nothing to push: said, rather than "uploaded 0 files" and a wrong hint
        lake_missing(settings.lake_dir, "lake push")
        return 1
    last = [0.0]

    def say(done: int, total: int, what: str, *, now_anyway: bool = False) -> None:
        """One progress line: the first, the last, and at most one a second between (`now_anyway`: said at once)."""
        now = time.monotonic()
        if done in (0, total - 1) or now_anyway or now - last[0] >= 1.0:
            last[0] = now
            print(f"querylog lake push: {what}", file=sys.stderr, flush=True)

    def progress(done: int, total: int, key: str, size: int) -> None:  # a large file is said before its wait
        verb = "would upload" if args.dry_run else "uploading"
        say(done, total, f"{verb} [{done + 1}/{total}] {key} ({_mb(size)})", now_anyway=size >= _SAID_BYTES)

    def deleting(done: int, total: int, key: str) -> None:  # a mirror of a compaction deletes thousands
        doing = "would delete" if args.dry_run else "deleting"
        say(done, total, f"{doing} [{done + 1}/{total}] {key} (no longer local)")

    try:
        report = push_lake(
            settings.lake_dir,
            args.uri,
            delete=args.delete,
            dry_run=args.dry_run,
            progress=None if args.quiet else progress,
            deleting=None if args.quiet else deleting,
        )
    except ValueError as exc:  # the URI or an option (not s3://bucket/prefix)
        print(f"querylog lake push: {exc}", file=sys.stderr)
        return 2
    except (PushError, OSError) as exc:
        print(f"querylog lake push: {exc}", file=sys.stderr)
        return 1
    code = 1 if report.behind or report.vanished else 0  # the bucket is behind the lake: push again
    verb = "would upload" if args.dry_run else "uploaded"
    line = (
        f"{report.uri}: {verb} {report.uploaded} files ({_mb(report.uploaded_bytes)}), "
        f"skipped {report.skipped} already there ({_mb(report.skipped_bytes)})"
    )
    if report.deleted:
        line += f", {'would delete' if args.dry_run else 'deleted'} {report.deleted} no longer local"
    # The report on stdout, and why, when it is not all done, on stderr: with --json too (an exit 1 said nothing).
    print(json.dumps(report.as_dict()) if args.json else line)
    if report.vanished:
        print(
            f"querylog lake push: {report.vanished} local files were replaced during the push (a compaction or an "
            "erase): the next push copies what replaced them",
            file=sys.stderr,
        )
    if report.staging_removed:
        print(
            f"querylog lake push: {'would remove' if args.dry_run else 'removed'} {report.staging_removed} partial "
            "uploads earlier pushes cut short had left",
            file=sys.stderr,
        )
    if report.behind:
        print(
            f"querylog lake push: {report.behind} remote files kept for now: the local lake changed during the push "
            "(a compaction, an erase, a rebuild), and what replaced them may not be in the bucket yet (they may "
            "hold the only copy there of their events); push again",
            file=sys.stderr,
        )
    elif report.stale:
        print(
            f"querylog lake push: {report.stale} remote files are no longer in the local lake (compacted, expired or "
            "erased there): readers of the bucket see their events twice, or events an erase removed, until you "
            "push with --delete",
            file=sys.stderr,
        )
    return code


#: A file this large is said before it goes up, whatever the last progress line: its upload takes a while.
_SAID_BYTES = 8 << 20


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"
