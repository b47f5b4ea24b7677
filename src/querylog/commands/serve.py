"""``querylog serve``: the chat API with the embedded pipeline (and, with --demo, a workload to look at)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from querylog.commands import count, port_hint, port_unavailable
from querylog.config import Settings

if TYPE_CHECKING:
    from querylog.service.demo import DemoReport


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the chat API (/v1/chat, /v1/feedback; producers' /v1/events and /v1/traces; /healthz, /metrics)",
        description="Run the FastAPI chat API with the embedded pipeline. Events go to the log under QUERYLOG_HOME; "
        "the Parquet lake (and Loki, when LOKI_URL is set) follow in the background. SIGTERM or Ctrl-C drains "
        "the projections and exits.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--demo", type=count(0), default=0, metavar="N", help="once up, send N demo queries so there is data"
    )
    p.add_argument("--exit-after-demo", action="store_true", help="stop the server after the demo (for scripts)")
    p.set_defaults(run=run, home_use="create")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from querylog.service.app import create_app

    if not 0 < args.port < 65536:
        print(f"querylog serve: --port must be 1-65535, got {args.port}", file=sys.stderr)
        return 2
    if args.exit_after_demo and args.demo < 1:
        print(
            "querylog serve: --exit-after-demo needs --demo N (N >= 1): without a demo it would serve until stopped",
            file=sys.stderr,
        )
        return 2
    busy = port_unavailable(args.host, args.port)
    if busy is not None:
        why, code = busy
        hint = port_hint(args.host, args.port, code)
        print(f"querylog serve: cannot listen on {args.host}:{args.port}: {why} ({hint})", file=sys.stderr)
        return code
    blocked = _blocked(settings)
    if blocked is not None:
        print(
            f"querylog serve: {blocked}: move it away (it is made again), or choose another data directory with "
            "--home or QUERYLOG_HOME",
            file=sys.stderr,
        )
        return 2
    from querylog.runtime import REBUILD_RUNNING, rebuild_running

    if rebuild_running(settings):
        print(f"querylog serve: {REBUILD_RUNNING}", file=sys.stderr)
        return 2
    from querylog.rebuild import LakeAsideError, settle_interrupted_swap

    try:  # before anything opens the lake: a rebuild stopped midway left it aside
        settled = settle_interrupted_swap(settings)
    except LakeAsideError as exc:
        print(f"querylog serve: {exc}", file=sys.stderr)
        return 2
    if settled is not None:
        print(f"querylog serve: {settled}", file=sys.stderr)
    settings.company_names(strict=True)  # an alias file that does not load stops the start (ConfigError), named
    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    demo: list[DemoReport] = []  # the demo's report, once it ran
    if args.demo > 0:
        threading.Thread(target=_demo_then_guide, args=(server, args, settings, demo), daemon=True).start()
    else:
        print(f"querylog: serving on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    # uvicorn drains on SIGTERM, restores the previous handler and raises the signal again. With this no-op
    # handler in place, that re-raise lands here and a drained shutdown exits 0 instead of dying by signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn's exit when the app fails to start (a 3, as a taken port's): say which
        if server.started or exc.code != STARTUP_FAILURE:
            raise
        print("querylog serve: the service did not start (the error above says why)", file=sys.stderr)
        return 1
    if args.exit_after_demo and demo and demo[0].sent and demo[0].failed == demo[0].sent:
        print("querylog serve: every demo query failed (the summary above says how)", file=sys.stderr)
        return 1  # as `querylog demo` says it: a script must not read this run as a working service
    return 0 if server.started or args.exit_after_demo else 1


def _blocked(settings: Settings) -> str | None:
    """What in the data directory stands where start-up makes a directory or takes its lock file (a failure there
    would be a traceback in uvicorn's log); None if nothing does. The lake is checked with the projections."""
    lock = settings.service_lock_path
    if lock.is_dir():
        return f"{lock} cannot be used as its lock file (a directory)"
    for directory in (settings.log_dir, settings.state_dir, lock.parent, settings.loki_checkpoint_path.parent):
        if os.path.lexists(directory) and not directory.is_dir():
            return f"{directory} must be a directory and is not"
    return None


def _demo_then_guide(server: Any, args: argparse.Namespace, settings: Settings, done: list[DemoReport]) -> None:
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import CheckpointFile
    from querylog.logging.sinks import stdout_style
    from querylog.service.demo import run_demo

    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for uvicorn's startup flag; there is no event to wait on
    if not server.started:
        return
    url = f"http://{args.host if args.host != '0.0.0.0' else '127.0.0.1'}:{args.port}"
    print(f"querylog: serving on {url}; sending {args.demo} demo queries", file=sys.stderr)
    echo = settings.stdout_events and stdout_style(settings.stdout_format) == "console"
    runtime = server.config.app.state.querylog
    # Queries from before this demo (an earlier `make run`): the views show them with it, the same questions again.
    earlier = any(runtime.reader.end_checkpoint().values()) or bool(ParquetSink.committed_checkpoint(settings.lake_dir))
    # A console echo prints a line per query: a progress bar drawn between them would only garble both.
    report = run_demo(url, queries=args.demo, progress=None if echo else sys.stderr)
    done.append(report)
    runtime.log.flush()
    runtime.wake_projections()
    # The guide comes last: once the lake holds the demo (read from its commit file, the Parquet projection may
    # run in a child) and the stdout echo has printed it.
    end = runtime.reader.end_checkpoint()
    echoed = CheckpointFile(settings.stdout_checkpoint_path)
    deadline = time.monotonic() + 30
    elsewhere = settings.projections == "none"  # `querylog project` fills the lake, if it runs at all
    while (
        time.monotonic() < deadline
        and not elsewhere
        and (
            ParquetSink.committed_checkpoint(settings.lake_dir) != end
            or (settings.stdout_events and echoed.load() != end)
        )
    ):
        time.sleep(0.1)  # another thread or process writes the lake: there is nothing here to wait on
    sys.stdout.flush()
    sys.stderr.write(_guide(url, report, settings, running=not args.exit_after_demo, earlier=earlier))
    sys.stderr.flush()
    if args.exit_after_demo:
        server.should_exit = True


def _shown(path: Path) -> str:
    """`path` as a user would type it here: relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _command() -> tuple[str, str]:
    """How to run querylog again from here, and the line that sets it up if any: by name when it is the one on
    PATH; by its path when that is short (make run's ``.venv/bin/querylog``); else by name, its directory put on
    PATH first; through the interpreter when it was run as a module."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "__main__.py":
        return "", f"{_shown(Path(sys.executable))} -m querylog"
    on_path = shutil.which("querylog")
    if on_path is not None and Path(on_path).resolve() == argv0.resolve():
        return "", "querylog"
    shown = _shown(argv0)
    if len(shown) <= len(".venv/bin/querylog"):
        return "", shown
    return f'export PATH={shlex.quote(str(argv0.resolve().parent))}:"$PATH"', "querylog"


def _guide(url: str, report: Any, settings: Settings, *, running: bool = True, earlier: bool = False) -> str:
    """What to do next, in lines that fit an 80-column terminal (a long command is continued with a backslash).
    Not `running` (``--exit-after-demo``): what needs the server is left out. `earlier`: the data directory held
    queries before this demo, which the views count with it."""
    ranked = report.intents.most_common()
    parts: list[str] = []
    for name, n in ranked:  # as many as fit on the line, most asked first; how many did not is said
        rest = len(ranked) - len(parts) - 1
        line = ", ".join([*parts, f"{name} {n}"]) + (f", {rest} more intents" if rest else "")
        if len("  answered, by intent: ") + len(line) > 80:
            break
        parts.append(f"{name} {n}")
    left = len(ranked) - len(parts)
    intents = ", ".join(parts) + ((", " if parts else "") + f"{left} more intents" if left else "") or "-"
    from querylog.logging.redaction import shown_url

    path, q = _command()
    setup = f"\n  {path}" if path else ""
    # Another terminal reads ./.querylog unless told otherwise: say so when this demo wrote elsewhere.
    home = (
        ""
        if settings.home.resolve() == Path(".querylog").resolve()
        else f"""
  export QUERYLOG_HOME={shlex.quote(str(settings.home.resolve()))}  # where this demo's data is"""
    )
    served = f"querylog is running on {url}  (Ctrl-C to stop)" if running else f"querylog ran the demo on {url}"
    lake_note = (
        "\n    (QUERYLOG_PROJECTIONS=none: empty until `querylog project` runs beside the server)"
        if settings.projections == "none"
        else ""
    )
    api = (
        f"""
  curl -s {url}/metrics | grep querylog_queries_total
  curl -s {url}/v1/chat -H 'content-type: application/json' \\
       -d '{{"query": "네이버 주가 전망은?"}}'
  {url}/docs   the API, to try in a browser"""
        if running
        else ""
    )
    loki = (
        f"Loki: shipping every event to {shown_url(settings.loki_url)} (app={settings.service}, env={settings.env});"
        if settings.loki_url
        else "Loki and Grafana: LOKI_URL=http://127.0.0.1:3100 ships every event to Loki;"
    )
    again = (
        """
  (added to the queries already here: each run sends the demo again;
   `make run DEMO=0`, or serve without --demo, starts without it)"""
        if earlier
        else ""
    )
    return f"""
{served}
  demo: {report.ok} answered, {report.failures()}, {report.feedback} rated, \
in {report.elapsed_s:.1f}s{again}
  answered, by intent: {intents}
  event log: {_shown(settings.log_dir)}
  Parquet lake: {_shown(settings.lake_dir)}{lake_note}

Next, in another terminal:{setup}{home}
  {q} ui                # the explorer: trends, latency, search
  {q} search 하이닉스    # what users asked, one row per question
  {q} report            # this week against the last, in Markdown
  {q} sql "select intent, count(*) from queries group by 1"{api}

{loki}
  compose/docker-compose.dev.yml runs Loki, Grafana, Prometheus: docs/deploy.md
"""
