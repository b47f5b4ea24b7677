"""The command line: `querylog sql` formats and errors, configuration errors, help."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from querylog.cli import main
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.tracker import QueryTracker
from querylog.testing import free_port


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        tracker = QueryTracker(log)
        for text, intent in [
            ("네이버 주가", "stock_analysis"),
            ("네이버웹툰 뉴스", "news_inquiry"),
            ("KOSPI", "market_overview"),
        ]:
            with tracker.query(text) as q:
                q.classified(intent, 0.9)
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    return home


def test_sql_json_is_an_array_of_row_objects(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "select intent, count(*) as n from queries group by 1 order by 1", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"intent": "market_overview", "n": 1},
        {"intent": "news_inquiry", "n": 1},
        {"intent": "stock_analysis", "n": 1},
    ]


def test_an_unknown_table_is_answered_with_the_lakes_tables_not_duckdbs_catalog(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DuckDB suggested its own catalog's "pg_enum" for a table that is nowhere near one of the lake's."""
    assert main(["sql", "select * from nope"]) == 1
    err = capsys.readouterr().err
    assert "pg_enum" not in err and "The lake's tables: queries, events, sessions." in err
    assert main(["sql", "select * from querie"]) == 1
    assert 'Did you mean "queries"?' in capsys.readouterr().err  # a near miss of one of them is still named


def test_sql_csv_has_a_header_and_korean(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "select query_text, intent from queries order by started_at", "-f", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["query_text", "intent"]
    assert rows[1] == ["네이버 주가", "stock_analysis"]


def test_sql_csv_writes_nested_values_as_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A list or a struct came out as Python's repr (single quotes), which nothing reads back."""
    assert main(["sql", "select [1, 2] as xs, {'doc_id': '네이버-1', 'rank': 1} as src", "-f", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert json.loads(rows[1][0]) == [1, 2] and json.loads(rows[1][1]) == {"doc_id": "네이버-1", "rank": 1}


def test_sql_table_aligns_wide_characters(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "select query_text from queries order by started_at"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("|")]
    widths = {sum(2 if "가" <= ch <= "힣" else 1 for ch in line) for line in lines}
    assert len(widths) == 1  # every row is as wide on screen as the header


def test_sql_table_aligns_decomposed_hangul_as_a_terminal_draws_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id typed on macOS (NFD: 하 is ᄒ + ᅡ) was counted a column wider per vowel and final consonant."""
    nfd = unicodedata.normalize("NFD", "하이닉스")
    assert main(["sql", f"select '{nfd}' as id union all select '하이닉스' union all select 'abc'"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("|")]
    # On screen, as a terminal composes NFD Hangul: the syllables NFC would make, two columns each.
    drawn = {sum(2 if "가" <= ch <= "힣" else 1 for ch in unicodedata.normalize("NFC", line)) for line in lines}
    assert len(drawn) == 1


def test_a_question_cannot_drive_the_terminal_from_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's question holding ESC sequences or a right-to-left override is shown escaped in `sql` and
    `search` tables (JSON escapes it anyway): it cannot recolour, move or reverse the operator's screen."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log, QueryTracker(log).query("네이버\x00\x07\x1b[31m 주가\u202e 전망\x9b") as q:
        q.classified("stock_analysis", 0.9)
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    for argv in (["sql", "select query_text from queries"], ["search", "네이버 주가", "--no-group"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "네이버\\x00\\x07\\x1b[31m 주가\\u202e 전망\\x9b" in out, out
        assert not any(ch in out for ch in "\x00\x07\x1b\u202e\x9b")


def test_line_breaks_of_any_system_show_as_spaces_in_a_table_cell() -> None:
    from querylog._format import visible

    # A question pasted from Windows (\r\n) or an old Mac (\r) reads as the same words as one with \n.
    assert visible("네이버\r\n주가\r전망\n뉴스\t요약") == "네이버 주가 전망 뉴스 요약"
    assert visible("a\x1b[2Jb\u202e") == "a\\x1b[2Jb\\u202e"


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("copy (select 1) to '{out}'", "COPY statements are refused"),
        ("attach '{out}' as x", "ATTACH statements are refused"),
        ("drop view queries", "DROP statements are refused"),
        ("select 1; select 2", "one statement at a time: got 2"),
    ],
)
def test_sql_is_read_only_and_one_statement(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, says: str
) -> None:
    """`--help` says read-only: a COPY wrote files, an ATTACH made a database, two statements showed the last."""
    out = tmp_path / "written"
    assert main(["sql", statement.format(out=out)]) == 1
    assert says in capsys.readouterr().err
    assert not out.exists()
    assert main(["sql", "describe queries"]) == 0  # what reads stays open


def test_bad_sql_is_one_line_on_stderr_and_exit_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "selec broken"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("querylog sql: ") and err.count("\n") == 1


@pytest.mark.parametrize("statement", ["", "   ", "-- only a comment"])
def test_sql_without_a_statement_says_so_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], statement: str
) -> None:
    assert main(["sql", statement]) == 1
    err = capsys.readouterr().err
    assert err.startswith("querylog sql: no SQL statement") and err.count("\n") == 1


def test_a_bad_setting_is_named_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUERYLOG_FSYNC", "sometimes")
    assert main(["sql", "select 1"]) == 2
    assert "QUERYLOG_FSYNC must be always, interval or never" in capsys.readouterr().err


def test_help_lists_the_commands_and_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("serve", "sql", "demo", "QUERYLOG_HOME", "QUERYLOG_ENV", "LOKI_URL"):
        assert word in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["report", "--sinse", "7d"], "querylog report: error: unrecognized arguments: --sinse 7d"),
        (["replay", "parquet", "--form", "lake"], "querylog replay parquet: error: unrecognized arguments: --form"),
    ],
)
def test_an_unknown_flag_is_named_by_the_command_it_was_given_to(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The top-level parser said "querylog: error" with `querylog`'s usage: not which command took no such flag."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert f"usage: querylog {' '.join(argv[: 2 if argv[0] == 'replay' else 1])} [-h]" in err


def test_querylog_alone_prints_its_help_and_a_mistyped_command_its_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    """`querylog` alone said "the following arguments are required: COMMAND"; `querylog serach` listed every
    command but did not say which was meant."""
    assert main([]) == 2
    assert "usage: querylog" in capsys.readouterr().err
    assert main(["--home", "/nonexistent", "serach", "x"]) == 2
    assert "no command 'serach'; did you mean `querylog search`?" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "no command 'frobnicate' (`querylog --help` lists them)" in err and "did you mean" not in err


def test_a_home_without_a_lake_is_named_not_read_as_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --home gave "0", "no queries match" and a report of zeros without a word, and search made an
    index there."""
    typo = tmp_path / "hmoe"
    monkeypatch.setenv("QUERYLOG_HOME", str(typo))
    assert main(["sql", "select count(*) from queries"]) == 0  # an empty lake is a lake: its answer stands
    assert f"{typo} does not exist: is --home (QUERYLOG_HOME) right?" in capsys.readouterr().err
    assert main(["search", "네이버"]) == 1
    assert f"{typo} does not exist: is --home (QUERYLOG_HOME) right?" in capsys.readouterr().err
    assert not typo.exists()  # nothing made in a directory that may be a typo
    assert main(["report"]) == 0
    assert f"{typo} does not exist" in capsys.readouterr().err
    typo.mkdir()  # a home that exists and holds no event yet (a server just started) is told apart
    assert main(["report"]) == 0
    assert f"no events in the lake at {typo / 'lake'} yet: is --home (QUERYLOG_HOME) right?" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("LANGFUSE_HOST", "http://127.0.0.1:9", "LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY not set"),
        ("QUERYLOG_LLM_BASE_URL", "http://127.0.0.1:9", "QUERYLOG_LLM_MODEL must name the model"),
        ("QUERYLOG_LLM_BASE_URL", "ftp://x", "QUERYLOG_LLM_BASE_URL must be an http(s) URL"),
        ("LANGFUSE_HOST", "nohost", "LANGFUSE_HOST must be an http(s) URL"),  # with both keys set, below
        # serve logged `aliases_refused` and ran on, its reformulation counts by company gone without a word.
        ("QUERYLOG_ALIASES", "/nonexistent/aliases.csv", "QUERYLOG_ALIASES: the alias file cannot be used"),
    ],
)
def test_a_bad_llm_or_langfuse_setting_is_a_configuration_error_not_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(variable, value)
    if value == "nohost":
        monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
        monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-1")
    assert main(["serve", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("querylog: configuration error: ") and named in err and "Traceback" not in err
    # `config` checks the settings in force: it said nothing of these (exit 0) where serve refused them.
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("querylog config: configuration error: ") and named in err


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["reconcile"], 2),
        (["compact"], 0),
        (["erase", "--user-id", "u-1"], 1),
        (["replay", "parquet"], 2),
        (["replay", "metrics"], 0),
        (["replay", "metrics", "--from", "log"], 0),
    ],
)
def test_a_mistyped_home_is_said_not_read_as_agreement_or_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], code: int
) -> None:
    """reconcile printed an empty table and exit 0 (nothing disagrees with nothing); compact made the lake;
    `replay metrics` printed zeros without a word. The exit codes are the README's."""
    home = tmp_path / "typo"
    assert main(["--home", str(home), *command]) == code
    assert "is --home (QUERYLOG_HOME) right?" in capsys.readouterr().err
    assert not home.exists()


@pytest.mark.parametrize("source", ["lake", "log"])
def test_replay_loki_into_a_mistyped_home_makes_nothing_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    """It noted the labels it would ship under (what an erasure's delete requests select) in the typo's state."""
    monkeypatch.setenv("QUERYLOG_LOKI_URL", "http://127.0.0.1:9")
    home = tmp_path / "typo"
    assert main(["--home", str(home), "replay", "loki", "--from", source]) == 0
    err = capsys.readouterr().err
    assert "is --home (QUERYLOG_HOME) right?" in err and "0 lines sent" in err
    assert not home.exists()


@pytest.mark.parametrize(("command", "started"), [("serve", "serving on"), ("ui", "explorer on")])
def test_a_server_on_a_port_in_use_says_so_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, started: str
) -> None:
    """serve printed "serving on …" and started its projections' child, then uvicorn failed to bind; ui printed
    "explorer on …", then Streamlit said the port was taken."""
    import socket

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    with socket.socket() as taken, socket.socket() as next_one:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:  # the port after it is taken too (by us, or already by another): the one suggested is free
            next_one.bind(("127.0.0.1", port + 1))
            next_one.listen()
        except OSError:
            pass
        assert main([command, "--port", str(port)]) == 3
        err = capsys.readouterr().err
        suggested = int(err.split("choose another --port: ")[1].split(" is free")[0])
        assert suggested > port + 1
        with socket.socket() as check:
            check.bind(("127.0.0.1", suggested))  # free indeed
    assert f"querylog {command}: cannot listen on 127.0.0.1:{port}" in err and started not in err
    assert not (tmp_path / "home").exists()


def test_output_cut_short_by_the_reader_ends_without_a_traceback(tmp_path: Path) -> None:
    """`querylog aliases … | head` ended in a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "QUERYLOG_HOME": str(tmp_path / "home")}
    with subprocess.Popen(
        [sys.executable, "-m", "querylog", "aliases", *["현대차"] * 20_000],  # a line each, many writes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err


def test_one_large_write_cut_short_by_the_reader_exits_141(tmp_path: Path) -> None:
    """`querylog sql … --format csv | head -1` exited 0: Python's stdout took the write the closed pipe cut short
    for done and dropped the rest without an error, so a script could not tell the output was cut."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "QUERYLOG_HOME": str(tmp_path / "home")}
    sql = "select range from range(2000000)"  # one write of 14 MB: far more than a pipe holds
    with subprocess.Popen(
        [sys.executable, "-m", "querylog", "sql", sql, "--format", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"range\n"
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "0"],
        ["project", "--once"],
        ["search", "네이버"],
        ["compact"],
        # The readers: a NotADirectoryError traceback before.
        ["sql", "SELECT count(*) FROM events"],
        ["report"],
        ["replay", "metrics"],
        ["reconcile"],
    ],
)
def test_a_data_directory_that_cannot_be_written_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A home that is a file (or read-only) ended serve in a Starlette traceback, exit 3 (which `make run` reads as
    "port taken"), and search, compact and erase in a PermissionError traceback."""
    home = tmp_path / "home"
    home.write_text("not a directory")
    assert main(["--home", str(home), *command]) == 2
    err = capsys.readouterr().err
    assert f"the data directory {home} cannot be used: it exists and is not a directory" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_server_home_that_cannot_be_made_is_named_and_a_typo_leaves_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    under_a_file = tmp_path / "file"
    under_a_file.write_text("")
    assert main(["--home", str(under_a_file / "home"), "serve", "--port", "0"]) == 2
    assert "cannot be used: Not a directory" in capsys.readouterr().err
    # serve makes a missing home once it has started; checking that it could does not leave one behind.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["--home", str(tmp_path / "a" / "b"), "serve", "--port", str(taken.getsockname()[1])]) == 3
    assert not (tmp_path / "a").exists()


def test_catching_up_a_home_without_a_log_says_so_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`project --once --home <typo>` made the directory, a lake and state in it, and said "0 events projected"."""
    assert main(["--home", str(tmp_path / "typo"), "project", "--once"]) == 2
    assert f"no event log under {tmp_path / 'typo'}: is --home" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_a_catch_up_says_what_each_projection_sent_not_their_sum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "stopped; 86267 events projected" was the lake's and Loki's sum, for a log of 61,965 events."""
    monkeypatch.delenv("LOKI_URL", raising=False)
    with EventLog(tmp_path / "log") as log, QueryTracker(log).query("삼성전자 주가") as q:
        q.classified("stock_analysis", 0.9)
    assert main(["--home", str(tmp_path), "project", "--once", "--metrics"]) == 0
    said = capsys.readouterr().err
    assert "stopped; events projected: parquet 3, " in said and said.rstrip().endswith(", metrics 3")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_project_stopped_by_ctrl_c_answers_130_as_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, code: int
) -> None:
    """README: 130 on Ctrl-C. `querylog project` drained and said 0 (`serve` said 130); SIGTERM, a service
    manager's stop, stays a clean 0."""
    monkeypatch.delenv("LOKI_URL", raising=False)
    monkeypatch.delenv("QUERYLOG_LOKI_URL", raising=False)
    with EventLog(tmp_path / "log") as log, QueryTracker(log).query("삼성전자 주가"):
        pass
    with subprocess.Popen(
        [sys.executable, "-m", "querylog", "--home", str(tmp_path), "project"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        said = [proc.stderr.readline()]
        assert "(SIGTERM or Ctrl-C to stop)" in said[0], said
        proc.send_signal(signum)
        said.append(proc.stderr.read())
        assert proc.wait(timeout=60) == code, said
    assert "stopped; events projected: parquet 2" in said[-1]


def test_home_is_taken_after_the_command_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/explorer.md: `querylog ui --home X`; argparse refused it (only `querylog --home X ui` worked)."""
    assert main(["search", "네이버", "--home", str(tmp_path / "typo")]) == 1
    assert f"{tmp_path / 'typo'} does not exist: is --home" in capsys.readouterr().err


def test_an_address_that_is_not_this_machines_is_a_usage_error_not_a_taken_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`serve --host 999.1.1.1` exited 3, which `make run` reported as "port 8000 is taken"."""
    assert main(["serve", "--host", "999.1.1.1", "--port", "8011"]) == 2
    assert "no such address" in capsys.readouterr().err


def test_a_service_that_fails_to_start_is_not_reported_as_a_taken_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "log" / "x.jsonl").mkdir(parents=True)  # the home is fine; the log cannot be opened
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--home", str(tmp_path), "serve", "--port", str(port)]) == 1
    assert "the service did not start" in capsys.readouterr().err


def test_search_filters_on_unclassified_as_the_report_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --intent unclassified` counted the query the app never classified; `search --intent unclassified`
    found nothing, and showed its intent blank."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        tracker = QueryTracker(log)
        with tracker.query("네이버 주가") as q:
            q.classified("stock_analysis", 0.9)
        with tracker.query("네이버 실적"):
            pass  # never classified
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    assert main(["search", "네이버", "--intent", "unclassified", "--no-group", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["query_text"], r["intent"]) for r in rows] == [("네이버 실적", "unclassified")]
    assert main(["search", "네이버", "--intent", "unclassified", "--format", "json"]) == 0
    assert [(g["query_text"], g["intents"]) for g in json.loads(capsys.readouterr().out)] == [
        ("네이버 실적", ["unclassified"])
    ]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--demo", "-5"], "argument --demo: must be at least 0, got -5"),
        (["demo", "--queries", "0"], "argument --queries/-n: must be at least 1, got 0"),
        (["demo", "--rate", "nan"], "argument --rate: must be a number of requests per second, at least 1/3600"),
        (["demo", "--rate", "inf"], "argument --rate: must be a number of requests per second, at least 1/3600"),
        (["demo", "--rate", "1e-320"], "(one an hour), got '1e-320'"),
        (["demo", "--rate", "fast"], "argument --rate: not a number of requests per second: 'fast'"),
    ],
)
def test_a_count_out_of_range_is_refused(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --demo -5` started a server with no demo, and `demo --queries 0` sent nothing, both without a word."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:18601", "localhost:8000", "ftp://127.0.0.1:8000", "http://", "http://[::1", "http://127.0.0.1:99999"],
)
def test_demo_against_a_url_that_is_no_http_url_says_so(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --url 127.0.0.1:18601` with the API up blamed the server: "every request failed — is the API running"."""
    assert main(["demo", "--url", url, "--queries", "1"]) == 2
    assert f"--url must be an http(s) URL such as http://127.0.0.1:8000; got {url!r}" in capsys.readouterr().err


def test_sql_on_a_lake_path_with_no_events_names_the_lake_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sql --lake <the home, not its lake>` answered 0 rows and asked whether --home was right."""
    assert main(["sql", "select count(*) as n from queries", "--lake", str(tmp_path), "-f", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [{"n": 0}]
    assert f"no events in the lake at {tmp_path} yet: is --lake right?" in err


def test_a_home_that_links_to_nothing_is_named_and_replay_metrics_reads_a_read_only_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dangling = tmp_path / "home"
    dangling.symlink_to(tmp_path / "gone")
    assert main(["--home", str(dangling), "project", "--once"]) == 2  # it ended in a FileExistsError traceback
    assert f"is a symbolic link to {tmp_path / 'gone'}, which does not exist" in capsys.readouterr().err
    # `replay metrics` only reads (a backup, a read-only mount): no write check stops it.
    monkeypatch.setattr("querylog.cli.os.access", lambda path, mode: False)
    assert main(["--home", str(tmp_path / "empty"), "replay", "metrics"]) == 0
    assert main(["--home", str(tmp_path), "search", "네이버"]) == 2


def test_a_quoted_search_is_explained_as_the_words_it_found(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", '"네이버 주가"', "--explain", "--no-group", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["query_text"] == "네이버 주가" and "not found" not in row["why"], row


@pytest.mark.parametrize("command", [["sql", "select 1"], ["report"], ["compact"], ["reconcile"], ["search", "x"]])
def test_a_lake_that_is_a_file_is_named_with_exit_2_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`<home>/lake` a file, or `sql --lake` pointed at a Parquet file: NotADirectoryError's traceback, exit 1."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "lake").write_bytes(b"PAR1")
    assert main(["--home", str(home), *command]) == 2
    err = capsys.readouterr().err
    assert f"the lake {home / 'lake'} is not a directory" in err and "Traceback" not in err
    assert main(["--home", str(tmp_path / "other"), "sql", "--lake", str(home / "lake"), "select 1"]) == 2
    assert f"--lake {home / 'lake'} is not a directory" in capsys.readouterr().err


def test_sql_json_writes_an_integer_past_64_bits_exactly_as_text(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A HUGEINT (`sum(hash(...))`) made `--format json` fail with orjson's TypeError; table and csv printed it."""
    big = 2**127 - 1
    assert main(["sql", f"select {big}::hugeint as v, 1 as n", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"v": str(big), "n": 1}]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_sql_writes_nested_wide_integers_and_map_keys_as_json(
    home: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """A HUGEINT inside a list or struct, and a MAP keyed by a number, failed `--format json` and `csv` (orjson
    takes neither); the integer is written exactly as text, the key as text, as JSON keys are."""
    big = 2**100
    sql = f"select [{big}::hugeint] as l, {{'a': {big}::hugeint}} as s, map([1], [2]) as m"
    assert main(["sql", sql, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        assert json.loads(out) == [{"l": [str(big)], "s": {"a": str(big)}, "m": {"1": 2}}]
    else:
        row = next(csv.DictReader(io.StringIO(out)))
        assert {k: json.loads(v) for k, v in row.items()} == {"l": [str(big)], "s": {"a": str(big)}, "m": {"1": 2}}


def test_a_damaged_lake_file_is_named_not_a_traceback(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Parquet file cut short (a disk, a copy gone wrong) ended `sql`, `reconcile` and `erase` in a traceback of
    DuckDB's or Arrow's, which did not always say which file."""
    (part,) = (home / "lake" / "events").rglob("*.parquet")
    part.write_bytes(part.read_bytes()[:500])
    for command in (
        ["sql", "select count(*) from events"],
        ["reconcile"],
        ["erase", "--user-id", "u-1", "--wait", "0"],
        # These told DuckDB's message with a piece of the lake's SQL, exit 1.
        ["report"],
        ["search", "네이버"],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"a lake file cannot be read ({part})" in err and "querylog replay parquet" in err, command
        assert "Traceback" not in err


_COMMIT = "lake/_querylog/parquet-commit.json"


@pytest.mark.parametrize(
    ("damage", "command", "said"),
    [
        # A record that says nothing was projected, with the lake full: the whole log went into it a second time.
        (lambda h: (h / _COMMIT).write_text("{}"), ["project", "--once"], "is unreadable"),
        (lambda h: (h / _COMMIT).unlink(), ["project", "--once"], "holds files but no commit record"),
        (lambda h: (h / _COMMIT).write_text('{"checkpoint": {"x.jsonl": -5}}'), ["project", "--once"], ">= 0"),
        # Files where directories belong, and the reverse: tracebacks (exit 1, which reconcile uses for "differs").
        (lambda h: _replace_with_dir(h / _COMMIT), ["project", "--once"], "Is a directory"),
        (lambda h: _replace_with_dir(h / "lake/_querylog/generation"), ["reconcile"], "is not what querylog keeps"),
        (lambda h: (h / "state").mkdir() or (h / "state/locks").write_text("x"), ["project", "--once"], "keeps there"),
        (lambda h: (h / "lake/_querylog/retained-from.json").write_text("x"), ["reconcile"], "is damaged"),
        (lambda h: _replace_with_dir(h / "state/locks/service.lock"), ["serve", "--port", "PORT"], "lock file"),
        # `serve` made these at start-up, inside uvicorn: a traceback and exit 1.
        (lambda h: _replace_with_file(h / "state"), ["serve", "--port", "PORT"], "state must be a directory"),
        (lambda h: _replace_with_file(h / "state/locks"), ["serve", "--port", "PORT"], "locks must be a directory"),
        (lambda h: _replace_with_file(h / "log"), ["serve", "--port", "PORT"], "log must be a directory"),
    ],
)
def test_a_damaged_record_or_a_file_out_of_place_is_named_exit_2_and_nothing_is_written(
    home: Path, capsys: pytest.CaptureFixture[str], damage: Any, command: list[str], said: str
) -> None:
    (home / "lake" / "_querylog" / "generation").touch()
    damage(home)
    lake_before = sorted(p.name for p in (home / "lake" / "events").rglob("*.parquet"))
    command = [str(free_port()) if word == "PORT" else word for word in command]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err
    assert sorted(p.name for p in (home / "lake" / "events").rglob("*.parquet")) == lake_before


def _replace_with_file(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")


def _replace_with_dir(path: Path) -> None:
    if path.is_file():
        path.unlink()
    path.mkdir(parents=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["sql", "select \udcff"],
        ["search", "\udcff\udcfe"],
        ["aliases", "\udcff"],
        ["erase", "--user-id", "x\udcff", "--skip-loki"],
        ["--home", "/tmp/x\udcff", "serve"],
        ["report", "--intent", "\udcff"],
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line_and_exit_2(
    home: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes the shell passed that are not UTF-8 (Python keeps them as lone surrogates) ended in tracebacks deep in
    DuckDB, the search folding or the log's encoder, one after erase had started."""
    before = sorted((p.name, p.stat().st_size) for p in (home / "log").iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not UTF-8 text" in err and "\\xff" in err
    assert sorted((p.name, p.stat().st_size) for p in (home / "log").iterdir()) == before


def test_a_command_given_non_utf8_bytes_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "querylog", "--home", str(tmp_path), "sql", b"select \xff"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2 and b"is not UTF-8 text" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("demo", [[], ["--demo", "0"]])
def test_exit_after_demo_without_a_demo_is_refused_rather_than_serving_on(
    tmp_path: Path, demo: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --exit-after-demo` without `--demo N` served until killed: a script waiting on it hung."""
    assert (
        main(["--home", str(tmp_path / "home"), "serve", "--port", str(free_port()), *demo, "--exit-after-demo"]) == 2
    )
    assert "--exit-after-demo needs --demo N" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_home_is_refused_not_taken_for_the_default(
    given: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--home ""` (an unset shell variable) ran the command on QUERYLOG_HOME, or ./.querylog, without a word."""
    assert main(["--home", given, "sql", "select 1"]) == 2
    assert "--home is empty" in capsys.readouterr().err


def test_a_path_this_user_may_not_read_is_a_sentence_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log directory of another user (mode 700) ended `reconcile` and `project --once` in a PermissionError
    traceback, exit 1. (Root reads everything, so the refusal is raised where the log is read.)"""
    import querylog.reconcile

    home = tmp_path / "home"
    (home / "log").mkdir(parents=True)
    denied = home / "log" / "erased-segments"

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(denied))

    monkeypatch.setattr(querylog.reconcile, "reconcile", refuse)
    assert main(["--home", str(home), "reconcile"]) == 2
    err = capsys.readouterr().err
    assert f"querylog reconcile: this user cannot use {denied} (Permission denied)" in err and "Traceback" not in err


def test_a_lake_partition_this_user_may_not_list_is_named_not_read_as_no_events(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An hour directory of another user (mode 700): the lake read as "no events yet", exit 0 (DuckDB's glob skips
    it too, so with other hours readable the counts would have been short without a word). Root lists everything:
    the refusal is raised where the directory is listed."""
    import os

    (hour,) = {p.parent for p in (home / "lake" / "events").rglob("*.parquet")}
    listing = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(str(path)) == hour:
            raise PermissionError(13, "Permission denied", str(hour))
        return listing(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["sql", "select count(*) from queries"]) == 2
    err = capsys.readouterr().err
    assert f"this user cannot use {hour} (Permission denied)" in err and "no events" not in err


def test_a_permission_error_without_a_filename_still_names_what_was_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyarrow raises PermissionError(errno, message) with the path in the message only: "cannot use None"."""
    import querylog.reconcile

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(
            13, "Failed to open local file '/lake/part-1.parquet'. Detail: [errno 13] Permission denied"
        )

    monkeypatch.setattr(querylog.reconcile, "reconcile", refuse)
    assert main(["reconcile"]) == 2
    err = capsys.readouterr().err
    assert "cannot use [Errno 13] Failed to open local file '/lake/part-1.parquet'" in err and "None" not in err
