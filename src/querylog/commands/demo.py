"""``querylog demo``: drive a running chat API with a realistic workload."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from querylog.commands import count
from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="send a realistic workload to a running chat API",
        description="Korean/English questions on stocks and news, in sessions with follow-ups, with repeats "
        "(cache hits) and a few deliberate failures. Shows a progress bar.",
    )
    p.add_argument("--queries", "-n", type=count(1), default=200, help="how many queries (default: 200)")
    p.add_argument("--rate", type=_rate, default=None, help="requests per second (default: as fast as possible)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the API's base URL (default: http://127.0.0.1:8000)")
    p.add_argument("--seed", type=int, default=7, help="random seed: the same seed sends the same workload")
    p.set_defaults(run=run)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of requests per second: {text!r}") from None
    from querylog.service.demo import MIN_RATE

    if not (MIN_RATE <= rate < math.inf):  # nan too
        raise argparse.ArgumentTypeError(
            f"must be a number of requests per second, at least 1/3600 (one an hour), got {text!r}"
        )
    return rate


def run(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from querylog.service.demo import run_demo

    try:
        report = run_demo(args.url, queries=args.queries, rate=args.rate, concurrency=args.concurrency, seed=args.seed)
    except ValueError as exc:
        print(f"querylog demo: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"querylog demo: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    intents = ", ".join(f"{name} {n}" for name, n in report.intents.most_common())
    print(f"{report.ok} answered, {report.failures()} in {report.elapsed_s:.1f}s; intents: {intents or '-'}")
    if report.sent and report.failed == report.sent:
        print(
            f"querylog demo: every request failed — is the API running at {args.url}? (--url names another)",
            file=sys.stderr,
        )
        return 1
    return 0
