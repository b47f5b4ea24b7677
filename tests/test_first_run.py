"""What a new user sees from `querylog serve --demo` (what `make run` starts): a terminal gets one readable line
per query and a guide that fits it; a pipe or a container gets JSON lines, one per event, as before."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from querylog.logging.events import QueryCompleted, QueryFailed, QueryReceived, ResponseGenerated
from querylog.logging.projection import Batch
from querylog.logging.sinks import StdoutSink, stdout_style
from querylog.testing import free_port

QUERYLOG = str(Path(sys.executable).with_name("querylog"))
DEMO = 40


def _env() -> dict[str, str]:
    """The environment of a new user: no querylog settings, so the data goes to ./.querylog as in `make run`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QUERYLOG_") and k != "LOKI_URL"}


def _serve_demo_on_a_terminal(cwd: Path) -> str:
    """`querylog serve --demo` with stdout and stderr on a pseudo-terminal, as `make run` in a shell has them."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [QUERYLOG, "serve", "--port", str(free_port()), "--demo", str(DEMO), "--exit-after-demo"],
        stdin=follower, stdout=follower, stderr=follower, env=_env(), cwd=cwd, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                pytest.fail(f"serve --demo printed nothing for 60 s; so far: {out.decode(errors='replace')}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out.decode()


def _plain(line: str) -> str:
    """`line` without its colour codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def _cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_on_a_terminal_serve_demo_prints_a_line_per_query_and_a_guide_to_the_explorer(tmp_path: Path) -> None:
    out = [_plain(line) for line in _serve_demo_on_a_terminal(tmp_path).replace("\r", "").splitlines()]
    assert sum(_is_json(line) for line in out) <= 20
    per_query = [line for line in out if line[:9].count(":") == 2 and ("[info" in line or "[error" in line)]
    assert len(per_query) == DEMO, "\n".join(out)
    failed = [line for line in per_query if "[error" in line]
    assert failed and all("error=" in line and "stage=" in line for line in failed)
    guide = out[next(i for i, line in enumerate(out) if line.startswith("querylog ran the demo on")) :]
    text = "\n".join(guide)
    for command in ("querylog ui", "querylog search", "querylog report", "querylog sql", "LOKI_URL"):
        assert command in text
    assert "curl" not in text and "Ctrl-C" not in text  # --exit-after-demo: the server is gone, no call to it
    too_wide = [line for line in guide if "projection_stopped" not in line and _cells(line) > 80]
    assert not too_wide, too_wide
    # The guide comes after every query's line, not in the middle of them.
    assert out.index(per_query[-1]) < out.index(guide[0])


def test_the_guide_names_the_home_and_the_command_another_terminal_needs(tmp_path: Path) -> None:
    """A demo run with QUERYLOG_HOME elsewhere: the explorer started as the guide says would read ./.querylog, an
    empty home, unless the guide says where the data is; and the command is the one that ran, not a path that
    only exists in the repository."""
    home = tmp_path / "elsewhere home"
    proc = subprocess.run(
        [QUERYLOG, "serve", "--port", str(free_port()), "--demo", "3", "--exit-after-demo"],
        env={**_env(), "QUERYLOG_HOME": str(home)}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"export QUERYLOG_HOME='{home}'" in proc.stderr
    # The venv is not under tmp_path: its directory goes on PATH first, then the commands stay short.
    assert f"export PATH={Path(QUERYLOG).parent}:" in proc.stderr and "\n  querylog ui " in proc.stderr
    default = subprocess.run(
        [QUERYLOG, "serve", "--port", str(free_port()), "--demo", "3", "--exit-after-demo"],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert default.returncode == 0 and "QUERYLOG_HOME" not in default.stderr  # ./.querylog, as another terminal reads


def test_piped_serve_demo_prints_json_lines_one_per_event(tmp_path: Path) -> None:
    proc = subprocess.run(
        [QUERYLOG, "serve", "--port", str(free_port()), "--demo", "10", "--exit-after-demo"],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    events = [line for line in lines if "query_id" in line]
    assert {"query_received", "query_completed", "response_generated"} <= {line["event"] for line in events}
    assert len({line["query_id"] for line in events if line["event"] == "query_received"}) == 10
    assert "querylog ui" in proc.stderr


def test_a_demo_run_whose_every_query_failed_exits_1(tmp_path: Path) -> None:
    """With an LLM endpoint nothing listens on, every demo query failed (502) and `--exit-after-demo` exited 0: a
    script could not tell it from a working service (`querylog demo` exits 1 then)."""
    llm = {"QUERYLOG_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "QUERYLOG_LLM_MODEL": "m"}
    proc = subprocess.run(
        [QUERYLOG, "serve", "--port", str(free_port()), "--demo", "3", "--exit-after-demo"],
        env={**_env(), **llm}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "0 answered" in proc.stderr and "every demo query failed" in proc.stderr
    assert "answered, by intent: -\n" in proc.stderr  # a blank list read as a cut-off line


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_the_console_echo_is_one_line_per_ended_query_with_its_question(tmp_path: Path) -> None:
    out = _Out()
    sink = StdoutSink(tmp_path / "stdout.json", style="console", stream=out).open()  # type: ignore[arg-type]
    long_question = "삼성전자 " * 30
    events = [
        QueryReceived(query_id="q1", query_text="네이버 주가 전망은?"),
        QueryReceived(query_id="q2", query_text=long_question),
        ResponseGenerated(query_id="q1", gen_ai_request_model="m"),
        QueryCompleted(query_id="q1", latency_ms=312.4, intent="stock_analysis"),
        QueryFailed(query_id="q2", error_type="TimeoutError", stage="generate", latency_ms=30_000),
        QueryReceived(query_id="q3", query_text="cached"),
        QueryCompleted(query_id="q3", latency_ms=0.3612),
    ]
    sink.write(Batch(events, {"seg": 5}))
    lines = out.text.splitlines()
    assert len(lines) == 3
    assert "ms=0.36" in lines[2]  # a cache hit's sub-millisecond answer is not "0 ms"
    assert "네이버 주가 전망은?" in lines[0] and "ms=312" in lines[0] and "intent=stock_analysis" in lines[0]
    assert "[error" in lines[1] and "error=TimeoutError" in lines[1] and "stage=generate" in lines[1]
    assert "…" in lines[1] and long_question.strip() not in lines[1]
    assert "\x1b[" not in out.text  # not a terminal: no colour codes


def test_the_json_echo_gives_a_failed_query_the_level_its_loki_line_has(tmp_path: Path) -> None:
    """A collector reading stdout saw `"level": "info"` on `query_failed`, which Loki's line calls an error."""
    import io
    import json

    out = io.BytesIO()  # the JSON echo writes bytes (to stdout's buffer)
    sink = StdoutSink(tmp_path / "stdout.json", style="json", stream=out).open()  # type: ignore[arg-type]
    events = [
        QueryReceived(query_id="q1", query_text="error in my portfolio?"),
        QueryFailed(query_id="q1", error_type="TimeoutError", stage="generate", latency_ms=30_000),
    ]
    sink.write(Batch(events, {"seg": 2}))
    assert [(line["event"], line["level"]) for line in map(json.loads, out.getvalue().splitlines())] == [
        ("query_received", "info"),
        ("query_failed", "error"),
    ]


def test_the_echo_prints_a_batch_once_while_its_checkpoint_cannot_be_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the echo printed its batch again at every retry (each time counted as sent): a collector
    reading stdout stored the same events seven times."""
    import errno
    import io

    from querylog.logging.projection import CheckpointFile, Projector
    from querylog.logging.segments import EventLog, LogReader

    full = [True]
    real_save = CheckpointFile.save

    def save(self: CheckpointFile, checkpoint: dict[str, int]) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, checkpoint)

    with EventLog(tmp_path / "log") as log:
        for i in range(3):
            log.append(QueryReceived(query_id=f"q{i}", query_text=f"질문 {i}"))
        log.flush()
        out = io.BytesIO()
        sink = StdoutSink(tmp_path / "stdout.json", style="json", stream=out).open()  # type: ignore[arg-type]
        projector = Projector(LogReader(tmp_path / "log"), sink)
        monkeypatch.setattr(CheckpointFile, "save", save)
        for _ in range(4):  # the write fails (its checkpoint), and is offered again after each backoff
            projector.attempt(wait=lambda _s: None)
        log.append(QueryReceived(query_id="q3", query_text="질문 3"))
        log.flush()
        full[0] = False  # space again
        projector.catch_up()
    printed = [json.loads(line)["query_id"] for line in out.getvalue().splitlines()]
    assert printed == ["q0", "q1", "q2", "q3"]
    assert sink.telemetry.snapshot().sent == 4
    assert sink.telemetry.snapshot().errors  # the failed saves were counted
    assert json.loads((tmp_path / "stdout.json").read_text()) == LogReader(tmp_path / "log").end_checkpoint()


def test_the_console_echo_shows_what_a_terminal_would_obey_escaped(tmp_path: Path) -> None:
    """A question sent to the open chat API recoloured the operator's terminal, set its title (OSC 0) and, with an
    unclosed U+202E, showed the rest of the line backwards: the echo wrote users' text as it came."""
    out = _Out()
    sink = StdoutSink(tmp_path / "stdout.json", style="console", stream=out).open()  # type: ignore[arg-type]
    events = [
        QueryReceived(query_id="q1", query_text="\x1b[31mRED\x1b[0m 네이버 \x1b]0;pwned\x07 \u202etitle"),
        QueryCompleted(query_id="q1", latency_ms=3.0, intent="\u202eesrever"),
        QueryReceived(query_id="q2", query_text="ok"),
        QueryFailed(query_id="q2", error_type="Boom\x1b[2J", stage="gen\u2066erate", latency_ms=3.0),
    ]
    sink.write(Batch(events, {"seg": 1}))
    assert not any(c in out.text for c in "\x1b\x07\u202e\u2066")
    assert "\\x1b[31mRED" in out.text and "\\u202eesrever" in out.text and "Boom\\x1b[2J" in out.text


@pytest.mark.parametrize(("setting", "tty", "style"), [
    ("auto", True, "console"), ("auto", False, "json"), ("json", True, "json"), ("console", False, "console"),
])  # fmt: skip
def test_the_stdout_format_follows_the_setting_then_the_terminal(setting: str, tty: bool, style: str) -> None:
    out = _Out()
    out.isatty = lambda: tty  # type: ignore[method-assign]
    assert stdout_style(setting, out) == style  # type: ignore[arg-type]


def test_the_guide_counts_the_intents_its_line_has_no_room_for(tmp_path: Path) -> None:
    from collections import Counter
    from types import SimpleNamespace

    from querylog.commands.serve import _guide
    from querylog.config import Settings

    intents = Counter({f"intent_number_{i:02d}": 20 - i for i in range(12)})
    report = SimpleNamespace(ok=5, failures=lambda: "0 failed", feedback=0, elapsed_s=1.0, intents=intents)
    guide = _guide("http://127.0.0.1:8000", report, Settings(home=tmp_path), running=False)
    (line,) = [line for line in guide.splitlines() if "answered, by intent:" in line]
    shown = line.split(": ", 1)[1].split(", ")
    named = [part for part in shown if part.startswith("intent_number_")]
    assert len(line) <= 80 and named == [f"intent_number_{i:02d} {20 - i}" for i in range(len(named))]
    assert shown[-1] == f"{12 - len(named)} more intents"  # not "2 more", read as two more queries


def test_with_projections_elsewhere_the_guide_says_the_lake_waits_for_querylog_project(tmp_path: Path) -> None:
    from collections import Counter
    from types import SimpleNamespace

    from querylog.commands.serve import _guide
    from querylog.config import Settings

    report = SimpleNamespace(ok=1, failures=lambda: "0 failed", feedback=0, elapsed_s=1.0, intents=Counter(a=1))
    guide = _guide("http://127.0.0.1:8000", report, Settings(home=tmp_path, projections="none"), running=False)
    assert "empty until `querylog project` runs" in guide
    assert "querylog project" not in _guide("http://x", report, Settings(home=tmp_path), running=False)


def test_the_guide_says_where_events_ship_when_loki_is_set(tmp_path: Path) -> None:
    """With LOKI_URL set, the guide still said "LOKI_URL=… ships every event to Loki", as if it were not."""
    from collections import Counter
    from types import SimpleNamespace

    from querylog.commands.serve import _guide
    from querylog.config import Settings

    report = SimpleNamespace(ok=5, failures=lambda: "0 failed", feedback=0, elapsed_s=1.0, intents=Counter())
    settings = Settings(home=tmp_path, loki_url="http://loki.internal:3100", service="chat", env="prod")
    guide = _guide("http://127.0.0.1:8000", report, settings, running=False)
    assert "Loki: shipping every event to http://loki.internal:3100 (app=chat, env=prod)" in guide
    assert "LOKI_URL=http://127.0.0.1:3100 ships" not in guide
    assert "LOKI_URL=http://127.0.0.1:3100 ships" in _guide("http://x", report, Settings(home=tmp_path), running=False)


def test_a_second_demo_run_says_its_queries_join_the_earlier_ones(tmp_path: Path) -> None:
    """Each `make run` sent the demo again into the same ./.querylog, and nothing said so: every question's count
    grew from one run to the next."""
    command = [QUERYLOG, "serve", "--demo", "3", "--exit-after-demo", "--port"]
    runs = [
        subprocess.run(
            [*command, str(free_port())], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    assert "added to the queries already here" not in runs[0].stderr
    assert "added to the queries already here" in runs[1].stderr and "DEMO=0" in runs[1].stderr
