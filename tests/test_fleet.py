"""The fleet over small synthetic recordings written with the project's own writer: run tags
in the header, stored verdicts, the DuckDB views, the summary's comparison of builds,
`--sql`, the Parquet export and what is bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from mpsdproxy import classify
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import title
from mpsdproxy.cli import cli
from mpsdproxy.recording import verdictfile

BASE = "https://sessiondirectory.xboxlive.com"
T0 = 1_790_000_000.0


def exchange(method: str, path: str, status: int, ms: float, at: float,
             headers: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    request = model.Request(method, BASE + path, model.Headers(
        [("x-xbl-contract-version", "107"), *headers]), b"")
    response = model.Response(status, "", model.Headers([("Content-Type", "application/json")]),
                              b"")
    done = model.Exchange(request, response, start=at, end=at + ms / 1000, client="c")
    return recording.to_record(done, recording.Redactor(), classify.classify(done))


def write_run(path: Path, tags: dict[str, str] | None, day: float = 0.0, *,
              put_status: int = 201, fails: int = 0) -> Path:
    """A run: PUT, GET, PUT (412 or not); verdicts stored, `fails` of them failed on seq 3."""
    at = T0 + day * 86400
    lobby = title.session_path(path.stem)
    with recording.Writer(path, tags) as w:
        w.write(exchange("PUT", lobby, 201, 5.0, at))
        w.write(exchange("GET", lobby, 200, 2.0, at + 1))
        w.write(exchange("PUT", lobby, put_status, 8.0, at + 2, (("If-Match", '"e1"'),)))
    sidecar = verdictfile.VerdictFile(path, "proxy")
    for _ in range(fails):
        sidecar.write({"rule": "412-handled", "title": "412 handled", "status": "fail",
                       "reason": "resent", "records": [3, 4], "gaps_ms": [1.0]})
    sidecar.write({"rule": "retry-after", "title": "Retry-After honoured", "status": "pass",
                   "reason": "ok", "records": [2], "gaps_ms": []})
    sidecar.close()
    return path


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def fleet_json(*args: str | Path) -> Any:
    result = invoke("fleet", *args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


@pytest.fixture
def night(tmp_path: Path) -> Path:
    folder = tmp_path / "night"
    folder.mkdir()
    for n in range(2):
        write_run(folder / f"a{n}.jsonl", {"build": "100", "console": f"kit{n}"}, 0)
        write_run(folder / f"b{n}.jsonl", {"build": "101", "console": f"kit{n}"}, 1,
                  put_status=412, fails=n + 1)
    return folder


# --- run metadata ------------------------------------------------------------------------


def test_tags_go_into_the_header_and_older_files_gain_one(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r.jsonl", {"build": "7"})
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {"format": "mpsdproxy-recording", "version": 2, "tags": {"build": "7"}}
    assert len(list(recording.read(path, strict=True))) == 3
    old = tmp_path / "v1.jsonl"
    old.write_text("".join(line for line in path.read_text().splitlines(True)[1:]))
    assert recording.read_tags(old) == {}
    assert recording.set_tags(old, {"title": "x"}) == {"title": "x"}
    assert recording.read_tags(old) == {"title": "x"}
    assert len(list(recording.read(old, strict=True))) == 3
    with recording.Writer(path, {"console": "k"}) as w:  # appending under more tags
        assert w.write(exchange("GET", "/handles/h", 200, 1.0, T0)) == 4
    assert recording.read_tags(path) == {"build": "7", "console": "k"}


def test_new_tags_on_a_symlinked_recording_reach_its_target(tmp_path: Path) -> None:
    """`run --record link --tag ...` appends through the link: the header must go
    there too, not into a copy that replaces the link and takes the records."""
    target = write_run(tmp_path / "archive.jsonl", {"build": "7"})
    link = tmp_path / "today.jsonl"
    link.symlink_to(target)
    with recording.Writer(link, {"console": "k"}) as w:
        assert w.write(exchange("GET", "/handles/h", 200, 1.0, T0)) == 4
    assert link.is_symlink()
    assert recording.read_tags(target) == {"build": "7", "console": "k"}
    assert [r["seq"] for r in recording.read(target, strict=True)] == [1, 2, 3, 4]


@pytest.mark.parametrize("pair", ["build", "=1", "bad key=1", "k=\x01"])
def test_bad_tags_are_refused_naming_the_pair(pair: str) -> None:
    with pytest.raises(ValueError, match="tag"):
        recording.parse_tags([pair])


def test_run_and_import_refuse_a_bad_tag_in_one_line(tmp_path: Path) -> None:
    result = invoke("run", "--tag", "nokey", "--record", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "--tag" in result.output
    assert not (tmp_path / "r.jsonl").exists()


def test_import_tags_the_recording(tmp_path: Path) -> None:
    source = write_run(tmp_path / "src.jsonl", None)
    har = tmp_path / "x.har"
    assert invoke("export", source, "--format", "har", "-o", har).exit_code == 0
    out = tmp_path / "imported.jsonl"
    result = invoke("import", har, "-o", out, "--tag", "build=55", "--tag", "title=t")
    assert result.exit_code == 0, result.output
    assert recording.read_tags(out) == {"build": "55", "title": "t"}
    assert len(list(recording.read(out, strict=True))) == 3


# --- stored verdicts ---------------------------------------------------------------------


def test_report_stores_the_verdicts_of_a_file_that_has_none(tmp_path: Path) -> None:
    path = tmp_path / "imported.jsonl"
    with recording.Writer(path) as w:
        lobby = title.session_path("l")
        for i in range(3):
            w.write(exchange("GET", lobby, 503, 1.0, T0 + i * 0.01, ()))
    result = invoke("report", path, "--format", "json")
    assert result.exit_code == 0, result.output
    stored = list(verdictfile.read_verdicts(path))
    assert stored and {v["rule"] for v in stored} >= {"retry-after", "backoff"}
    report = json.loads(result.stdout)
    counted = sum(sum(r.values()) for r in report["verdicts"]["counts"].values()) \
        if isinstance(report["verdicts"].get("counts"), dict) else len(stored)
    assert len(stored) == counted
    before = Path(verdictfile.sidecar_of(path)).read_bytes()
    assert invoke("report", path).exit_code == 0  # stored once: never rewritten
    assert Path(verdictfile.sidecar_of(path)).read_bytes() == before
    summary = fleet_json(path)
    assert summary["without_verdicts"] == []


# --- views and summary -------------------------------------------------------------------


def test_judge_stores_the_verdicts_a_run_lacks(tmp_path: Path) -> None:
    path = tmp_path / "imported.jsonl"
    with recording.Writer(path, {"build": "9"}) as w:
        w.write(exchange("GET", title.session_path("l"), 503, 1.0, T0))
    assert fleet_json(path)["without_verdicts"] == [str(path)]
    summary = fleet_json(path, "--judge")
    assert summary["without_verdicts"] == []
    assert summary["runs"][0]["verdicts"]["not-applicable"] > 0
    assert verdictfile.has_sidecar(path)


def test_views_count_every_exchange_and_join_verdicts_to_their_trigger(night: Path) -> None:
    rows = fleet_json(night, "--sql", """
        SELECT r.build, e.operation, e.status, count(*) AS n
        FROM verdicts v JOIN exchanges e ON e.run = v.run AND e.seq = v.trigger
        JOIN runs r ON r.run = v.run WHERE v.status = 'fail' GROUP BY ALL""")
    assert rows == [{"build": "101", "operation": "PUT session", "status": 412, "n": 3}]
    (counts,) = fleet_json(night, "--sql", "SELECT (SELECT count(*) FROM exchanges) AS e, "
                           "(SELECT count(*) FROM runs) AS r, (SELECT count(*) FROM rta) AS m")
    assert counts == {"e": 12, "r": 4, "m": 0}


def test_the_summary_names_the_build_the_operation_and_the_verdict(night: Path) -> None:
    summary = fleet_json(night)
    assert [t["group"] for t in summary["trend"]] == ["100", "101"]
    (regression,) = summary["regressions"]
    assert regression.items() >= {"group": "101", "previous": "100", "rule": "412-handled",
                                  "operation": "PUT session", "runs_failing": 2,
                                  "runs": 2}.items()
    assert regression["fails_per_run"] == 1.5
    changed = {(c["operation"], c["row"]) for c in summary["changes"]["rows"]}
    assert ("PUT session", "412.if-match-session") in changed
    run = summary["runs"][0]
    assert run["verdicts"]["pass"] == 1 and run["coverage"]["reached"] >= 2
    assert {o["operation"] for o in run["operations"]} == {"PUT session", "GET session"}
    assert summary["worst_consoles"][0]["console"] == "kit1"
    assert invoke("fleet", night, "--fail-on", "regression").exit_code == 1


def test_latency_errors_and_operations_count_session_directory_traffic_only(
        tmp_path: Path) -> None:
    """As `report` judges only MPSD traffic: an RTA websocket held open for a minute and a
    telemetry host's 500 are exchanges of the run, not its latency or errors."""
    path = tmp_path / "mixed.jsonl"
    lobby = title.session_path("mixed")
    with recording.Writer(path, None) as w:
        w.write(exchange("PUT", lobby, 201, 5.0, T0))
        w.write(exchange("GET", lobby, 200, 7.0, T0 + 1))
        other = exchange("GET", "/connect", 101, 60_000.0, T0 + 2)
        other["request"]["url"] = "https://rta.xboxlive.com/connect"
        telemetry = exchange("POST", "/collect", 500, 900.0, T0 + 3)
        telemetry["request"]["url"] = "https://vortex.data.microsoft.com/collect"
        w.write(other)
        w.write(telemetry)
    summary = fleet_json(path)
    [trend] = summary["trend"]
    assert (trend["exchanges"], trend["errors"]) == (4, 0)
    assert trend["p99_ms"] is not None and trend["p99_ms"] < 10
    assert {o["operation"] for o in summary["runs"][0]["operations"]} == {
        "PUT session", "GET session"}
    counted = fleet_json(path, "--sql", "SELECT count(*) FILTER (WHERE mpsd) AS n FROM exchanges")
    assert counted == [{"n": 2}]


def test_runs_without_tags_group_by_file_and_by_any_tag(tmp_path: Path) -> None:
    write_run(tmp_path / "x.jsonl", None)
    write_run(tmp_path / "y.jsonl", {"console": "k"})
    summary = fleet_json(tmp_path, "--group-by", "console")
    assert sorted(t["group"] for t in summary["trend"]) == ["k", "x.jsonl"]
    assert fleet_json(tmp_path)["group_by"] == "date"


def test_text_and_html_summaries(night: Path, tmp_path: Path) -> None:
    text = invoke("fleet", night)
    assert text.exit_code == 0
    assert "REGRESSED build 101 (after 100): 412 handled [412-handled]" in text.stdout
    out = tmp_path / "f.html"
    assert invoke("fleet", night, "--format", "html", "-o", out).exit_code == 0
    page = out.read_text()
    assert "<svg" in page and "<polyline" in page and "<script" not in page


# --- Parquet -----------------------------------------------------------------------------

COUNTS = ("SELECT (SELECT count(*) FROM exchanges) AS e, (SELECT count(*) FROM verdicts) AS v, "
          "(SELECT count(*) FROM runs) AS r, (SELECT sum(status) FROM exchanges) AS s")


def test_parquet_one_file_and_partitioned_read_back_the_same(night: Path, tmp_path: Path) -> None:
    expected = fleet_json(night, "--sql", COUNTS)
    one = tmp_path / "one.parquet"
    assert invoke("fleet", night, "--to-parquet", one, "--sql", "SELECT 1").exit_code == 0
    assert fleet_json(one, "--sql", COUNTS) == expected
    meta = dict(duckdb.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{one}')")
                .fetchall())
    assert meta == {"mpsdproxy.schema": "mpsdproxy-fleet", "mpsdproxy.schema_version": "1"}
    assert duckdb.sql(f"SELECT DISTINCT schema_version FROM '{one}'").fetchall() == [(1,)]
    folder = tmp_path / "parts"
    for run in sorted(night.glob("*.jsonl")):
        if not verdictfile.is_sidecar(run):  # one export per recording, into one folder
            result = invoke("export", run, "--format", "parquet", "-o", folder,
                            "--partition", "build,date")
            assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["build=100", "build=101"]
    assert fleet_json(folder, "--sql", COUNTS) == expected
    assert fleet_json(folder)["regressions"][0]["group"] == "101"


def test_a_run_in_both_its_recording_and_an_export_beside_it_counts_once(
        night: Path, tmp_path: Path) -> None:
    older = write_run(tmp_path / "older.jsonl", {"build": "99"})  # kept only in the archive
    expected = fleet_json(night, older, "--sql", COUNTS)
    archive = night / "archive.parquet"
    result = invoke("fleet", night, older, "--to-parquet", archive, "--sql", "SELECT 1")
    assert result.exit_code == 0, result.output
    older.unlink()
    assert fleet_json(night, "--sql", COUNTS) == expected


def test_a_stopped_partitioned_export_leaves_only_whole_files(
        night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files reach the archive one rename each: stopped after the first, the archive holds
    that one whole file and nothing half written, and reads back."""
    import os

    folder = tmp_path / "archive"
    renames = 0
    real_replace = os.replace

    def replace_once(source: str, target: str) -> None:
        nonlocal renames
        renames += 1
        if renames > 1:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_once)
    stopped = invoke("fleet", night, "--to-parquet", folder, "--partition", "build",
                     "--sql", "SELECT 1")
    monkeypatch.undo()
    assert stopped.exit_code != 0 and renames == 2  # stopped at the second file
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 1 and not any(p.name.startswith(".") for p in folder.iterdir())
    (row,) = fleet_json(folder, "--sql", "SELECT count(*) AS runs FROM runs")
    assert row["runs"] >= 1


def test_a_parquet_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    duckdb.sql(f"COPY (SELECT 1 AS x) TO '{other}' (FORMAT PARQUET)")
    result = invoke("fleet", other)
    assert result.exit_code == 2 and "not an mpsdproxy fleet export" in result.output


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--sql", "SELEC 1"], "--sql"),
    (["--sql", "SELECT * FROM nowhere"], "nowhere"),
    (["--to-parquet", "o.parquet", "--partition", "bad key"], "--partition"),
    (["--partition", "build"], "--partition"),
    (["--group-by", "build", "--format", "xml"], "xml"),
])
def test_bad_options_and_queries_are_one_line_exit_2(night: Path, args: list[str],
                                                     says: str) -> None:
    result = invoke("fleet", night, *args)
    assert result.exit_code == 2
    assert says in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("statement, says", [
    ("COPY (SELECT 'gone') TO '{run}' (FORMAT csv)", "not COPY"),
    ("EXPORT DATABASE '{folder}/dump'", "not EXPORT"),
    ("ATTACH '{folder}/other.db'", "not ATTACH"),
    ("SELECT 1; COPY (SELECT 'gone') TO '{run}' (FORMAT csv)", "found 2 statements"),
    ("  ", "found 0 statements"),
])
def test_sql_only_reads_and_never_writes_over_the_recordings(night: Path, statement: str,
                                                              says: str) -> None:
    run = sorted(night.glob("*.jsonl"))[0]
    before = {path: path.read_bytes() for path in night.rglob("*")}
    result = invoke("fleet", night, "--sql", statement.format(run=run, folder=night))
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output
    assert {path: path.read_bytes() for path in night.rglob("*")} == before


@pytest.mark.parametrize("target", ["-o", "--to-parquet"])
@pytest.mark.parametrize("given", ["folder", "glob"])
def test_no_output_lands_on_a_recording_found_in_a_folder_or_glob(night: Path, target: str,
                                                                   given: str) -> None:
    run = sorted(night.glob("*.jsonl"))[0]
    before = run.read_bytes()
    source = night if given == "folder" else night / "*.jsonl"
    result = invoke("fleet", source, target, run)
    assert result.exit_code == 2 and "is also an input" in result.output, result.output
    assert run.read_bytes() == before


@pytest.mark.parametrize("durations", [("1e400", "-5", "-1e400"), ("true", '"7"', "[1]")])
def test_a_duration_that_is_no_time_is_unknown_and_the_json_stays_json(
        tmp_path: Path, durations: tuple[str, str, str]) -> None:
    """As `codec.duration_of` has it: a JSON true is no 1 ms, nor a string a number."""
    run = write_run(tmp_path / "odd.jsonl", {"build": "1"})
    lines = run.read_text().splitlines()
    for at, duration in zip((1, 2, 3), durations, strict=True):
        lines[at] = re.sub(r'"duration_ms":[^,]+', f'"duration_ms":{duration}', lines[at])
    run.write_text("\n".join(lines) + "\n")
    result = invoke("fleet", run, "--format", "json")
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    summary = json.loads(result.stdout, parse_constant=refuse)
    assert summary["trend"][0]["p99_ms"] is None  # no duration known
    (row,) = fleet_json(run, "--sql", "SELECT count(duration_ms) AS known FROM exchanges")
    assert row == {"known": 0}


def test_sql_answers_a_with_query_and_its_plan(night: Path) -> None:
    (row,) = fleet_json(night, "--sql", "WITH n AS (SELECT count(*) AS c FROM exchanges) "
                                        "SELECT c > 0 AS some FROM n")
    assert row == {"some": True}
    assert invoke("fleet", night, "--sql", "EXPLAIN SELECT * FROM runs").exit_code == 0


def test_bad_files_are_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text("hello\n")
    (tmp_path / "other.jsonl").write_text('{"format": "mpsdproxy-verdicts", "version": 1}\n')
    for path, says in [(tmp_path / "notes.jsonl", "notes.jsonl:1: not a recording"),
                       (tmp_path / "other.jsonl", "its header says 'mpsdproxy-verdicts'"),
                       (tmp_path / "missing", "no such file"),
                       (str(tmp_path / "*.nothing"), "no file matches")]:
        result = invoke("fleet", path)
        assert result.exit_code == 2 and says in result.output, result.output
        assert result.output.count("\n") == 1


def test_a_mostly_unreadable_recording_is_refused_as_every_command_refuses_it(
        tmp_path: Path) -> None:
    """Over 10 % unreadable lines is bad input (the README's exit codes); one bad line in
    eleven, or a last line cut short by a stopped writer, is not."""
    path = write_run(tmp_path / "r.jsonl", {"build": "7"})
    lines = path.read_bytes().splitlines(keepends=True)
    readable = lines + lines[1:] * 3  # a header and 12 exchange lines
    path.write_bytes(b"".join(readable[:6]) + b"garbage\n" + b"".join(readable[6:]))
    assert invoke("fleet", path).exit_code == 0
    path.write_bytes(b"".join(readable) + b'{"seq": 99, "sta')  # cut mid-record
    assert invoke("fleet", path).exit_code == 0
    path.write_bytes(b"".join(readable[:6]) + b"garbage\n[1, 2]\n{}\n"
                     + b"".join(readable[6:]))
    result = invoke("fleet", tmp_path)
    assert result.exit_code == 2, result.output
    assert "r.jsonl: 3 of 15 lines unreadable" in result.output
    assert result.output.count("\n") == 1
    assert invoke("fleet", path, "--to-parquet", tmp_path / "o.parquet").exit_code == 2
    assert not (tmp_path / "o.parquet").exists()


def test_help_has_an_example() -> None:
    result = invoke("fleet", "--help")
    assert result.exit_code == 0 and "mpsdproxy fleet nightly/" in result.output


def test_the_bench_part_runs_at_smoke_size(tmp_path: Path) -> None:
    """bench/fleet.py (report vs fleet, 1..N files, Parquet) end to end at tiny sizes; the
    real sizes run only in `make bench`."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "fleet.json"
    done = subprocess.run([sys.executable, "-m", "bench.fleet", "--smoke", "--workdir",
                           str(tmp_path / "work"), "--json", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["report_vs_fleet"]["fleet"]["exit"] == 0
    assert sorted(result["many"]["runs"], key=int) == ["1", "3"]
    assert "#### Fleet over many recordings" in done.stdout
    assert result["report_vs_fleet"]["engine"]["exit"] == 0  # today and the engine side by side


def test_a_recording_of_megabytes_reads_under_a_small_memory_limit(tmp_path: Path) -> None:
    """DuckDB's JSON reader sizes its buffers from `maximum_object_size` (two per thread):
    at 160 MB a 4 MB recording needed 320 MB and failed under `--memory-limit 200MB`, and a
    1,000,000-exchange one failed under the default 1 GB."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import replay

    path = tmp_path / "two-thousand.jsonl"
    replay.write_recording(path, 2000)
    summary = fleet_json(path, "--memory-limit", "200MB")
    assert summary["runs"][0]["exchanges"] == 2000
