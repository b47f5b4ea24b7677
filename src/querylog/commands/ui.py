"""``querylog ui``: the Streamlit explorer over the lake, in a headless Streamlit server."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from querylog.commands import lake_missing, port_hint, port_unavailable
from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="open the Streamlit explorer (intent trends, latency, stages, search, query timelines)",
        description="Serve the Streamlit explorer over the lake: intent trends, latency percentiles, the stage "
        "funnel, full-text search, each query's events as a timeline, top and no-result queries, with filters by "
        "date, intent, service, env, release and prompt version. Reads the lake under QUERYLOG_HOME; set "
        "LANGFUSE_HOST to link trace ids.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p.set_defaults(run=run, home_use="read")


def explorer_path() -> Path:
    """The explorer script, found without importing it (importing would run the app)."""
    spec = importlib.util.find_spec("querylog.analytics.explorer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("querylog.analytics.explorer is missing from this installation")
    return Path(spec.origin)


#: Streamlit's settings for a local, private, read-only app.
_STREAMLIT_FLAGS: Final = {
    "server.headless": "true",
    "server.runOnSave": "false",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",
    "global.developmentMode": "false",
    "theme.base": "light",
}


def streamlit_command(host: str, port: int) -> list[str]:
    flags = {"server.address": host, "server.port": str(port), **_STREAMLIT_FLAGS}
    return [
        sys.executable, "-m", "streamlit", "run", str(explorer_path()),
        *(arg for name, value in flags.items() for arg in (f"--{name}", value)),
    ]  # fmt: skip


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 < args.port < 65536:
        print(f"querylog ui: --port must be 1-65535, got {args.port}", file=sys.stderr)
        return 2
    busy = port_unavailable(args.host, args.port)
    if busy is not None:
        why, code = busy
        hint = port_hint(args.host, args.port, code)
        print(f"querylog ui: cannot listen on {args.host}:{args.port}: {why} ({hint})", file=sys.stderr)
        return code
    lake_missing(settings.lake_dir, "ui")  # it starts all the same: the page shows the lake once it fills
    env = dict(os.environ)
    # The app reads its settings from the environment; --home must reach it as QUERYLOG_HOME.
    env["QUERYLOG_HOME"] = str(settings.home.expanduser().resolve())
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"querylog: explorer on http://{shown}:{args.port} over {settings.lake_dir} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.Popen(streamlit_command(args.host, args.port), env=env)
    # Forward SIGTERM so that stopping `querylog ui` stops Streamlit too (Ctrl-C reaches both already).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    interrupted = False
    try:
        while True:
            try:
                code = _exit_code(proc.wait())
                return 130 if interrupted and code == 0 else code  # Ctrl-C: 130, as every command answers it
            except KeyboardInterrupt:
                interrupted = True
                proc.terminate()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_code(code: int) -> int:
    # Streamlit stopped by our SIGTERM/SIGINT is a normal stop, not a failure.
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
