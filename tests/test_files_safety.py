"""Files are never lost, and exit codes a CI gate can trust.

Each bad-file case goes through the real command: the files it was given keep
their bytes, it exits 2 (bad input) with one line naming the file, and no
traceback is ever printed.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpsdproxy import recording
from mpsdproxy import safefiles
from mpsdproxy.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "recordings" / "sample-lobby.jsonl"
NOWHERE = "http://127.0.0.1:9"  # never contacted: every case here is refused first


def _mpsdproxy(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpsdproxy", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _bad_input(code: int, stderr: str, names: str | Path) -> str:
    """Assert exit 2, one line naming the file, no traceback; return the line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert str(names) in lines[0]
    return lines[0]


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    path = tmp_path / "pass.jsonl"
    path.write_bytes(SAMPLE.read_bytes())
    return path


def _har(path: Path) -> Path:
    entry = {"startedDateTime": "2026-01-01T00:00:00.000Z", "time": 1,
             "request": {"method": "GET", "url": "https://sessiondirectory.xboxlive.com/x",
                         "httpVersion": "HTTP/1.1", "headers": [], "queryString": [],
                         "cookies": [], "headersSize": -1, "bodySize": 0},
             "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                          "headers": [], "cookies": [], "content": {"size": 0,
                                                                     "mimeType": ""},
                          "redirectURL": "", "headersSize": -1, "bodySize": 0},
             "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0}}
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "t",
                                                                      "version": "1"},
                                        "entries": [entry]}}))
    return path


# -- outputs that are inputs ---------------------------------------------------------------


def test_export_onto_its_own_recording_is_refused(rec: Path) -> None:
    before = rec.read_bytes()
    result = _mpsdproxy("export", rec.name, "--format", "har", "-o", rec.name, cwd=rec.parent)
    _bad_input(result.returncode, result.stderr, rec.name)
    assert rec.read_bytes() == before


@pytest.mark.parametrize("spelling", ["link", "hardlink", "dotted"])
def test_export_onto_another_name_of_the_recording_is_refused(rec: Path, spelling: str) -> None:
    before = rec.read_bytes()
    other = rec.parent / "other.har"
    if spelling == "link":
        other.symlink_to(rec)
    elif spelling == "hardlink":
        os.link(rec, other)
    else:
        other = rec.parent / "." / rec.name
    code, _, err = _cli("export", rec, "--format", "har", "-o", other)
    _bad_input(code, err, other)
    assert rec.read_bytes() == before


def test_resend_recording_into_itself_is_refused(rec: Path) -> None:
    before = rec.read_bytes()
    result = _mpsdproxy("resend", rec.name, "--to", NOWHERE, "--record", f"./{rec.name}",
                        cwd=rec.parent)
    _bad_input(result.returncode, result.stderr, rec.name)
    assert result.stdout == ""  # nothing was sent
    assert rec.read_bytes() == before


def test_import_onto_its_own_capture_is_refused(tmp_path: Path) -> None:
    har = _har(tmp_path / "x.har")
    before = har.read_bytes()
    result = _mpsdproxy("import", "x.har", "-o", "x.har", cwd=tmp_path)
    _bad_input(result.returncode, result.stderr, "x.har")
    assert har.read_bytes() == before


def test_import_into_an_existing_recording_needs_append(tmp_path: Path, rec: Path) -> None:
    har = _har(tmp_path / "x.har")
    before = rec.read_bytes()
    line = _bad_input(*_cli("import", har, "-o", rec)[::2], rec)
    assert "--append" in line
    assert rec.read_bytes() == before


def test_report_output_onto_its_recording_is_refused(rec: Path) -> None:
    before = rec.read_bytes()
    code, _, err = _cli("report", rec, "--format", "html", "-o", rec)
    _bad_input(code, err, rec)
    assert rec.read_bytes() == before


def test_record_onto_a_replayed_recording_is_refused(rec: Path) -> None:
    before = rec.read_bytes()
    code, _, err = _cli("run", "--replay", rec, "--record", rec)
    _bad_input(code, err, rec)
    assert rec.read_bytes() == before


# -- two writers on one recording ----------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--sweep", "--sweep-state", "pass.jsonl", "--record", "./pass.jsonl"],
     "--sweep-state and --record name one file"),
    (["--sweep", "--sweep-state", "outage.yaml", "--scenario", "outage.yaml"],
     "is also an input"),
])
def test_run_never_writes_its_sweep_state_over_a_file_it_uses(tmp_path: Path, args: list[str],
                                                              says: str) -> None:
    (tmp_path / "outage.yaml").write_bytes(SCENARIO.read_bytes())
    result = _mpsdproxy("run", *args, "--listen-port", "0", "--confdir", tmp_path, cwd=tmp_path)
    assert says in _bad_input(result.returncode, result.stderr, args[2])
    assert not (tmp_path / "pass.jsonl").exists()
    assert (tmp_path / "outage.yaml").read_bytes() == SCENARIO.read_bytes()


def test_a_second_writer_is_refused_and_seqs_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    record = {"request": {"method": "GET", "url": "http://h/x", "headers": []}}
    with recording.Writer(path) as first:
        assert first.write(record) == 1
        with pytest.raises(recording.LockedError, match=str(path)):
            recording.Writer(path)
        assert first.write(record) == 2
    with recording.Writer(path) as second:  # free again once the first closed
        assert second.write(record) == 3
    seqs = [r["seq"] for r in recording.read(path, strict=True)]
    assert seqs == [1, 2, 3]


def test_a_second_writer_is_refused_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with recording.Writer(path):
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; from mpsdproxy import recording\n"
             "try:\n    recording.Writer(sys.argv[1])\n"
             "except recording.LockedError as e:\n    print(e); sys.exit(3)",
             str(path)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 3, result.stderr
    assert str(path) in result.stdout


def test_a_second_proxy_on_a_recording_being_written_never_starts(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with recording.Writer(path):
        before = path.read_bytes()
        result = _mpsdproxy("run", "--record", path.name, "--listen-port", "0",
                            "--confdir", tmp_path, cwd=tmp_path)
    assert "another mpsdproxy process is writing" in _bad_input(
        result.returncode, result.stderr, path.name)
    assert path.read_bytes() == before


def test_resend_into_a_recording_being_written_is_refused(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with recording.Writer(out):
        before = out.read_bytes()
        code, out_text, err = _cli("resend", rec, "--to", NOWHERE, "--record", out)
    assert "another mpsdproxy process is writing" in _bad_input(code, err, out)
    assert out_text == ""
    assert out.read_bytes() == before


@pytest.mark.parametrize("command", [["report", "--format", "json"], ["export", "--format", "har"]])
def test_no_output_lands_on_the_verdicts_stored_beside_the_recording(
        rec: Path, command: list[str]) -> None:
    assert _cli("report", rec)[0] == 0  # stores the verdicts beside it
    sidecar = Path(f"{rec}.verdicts")
    before = sidecar.read_bytes()
    code, _, err = _cli(command[0], rec, *command[1:], "-o", sidecar)
    assert "holds the verdicts stored beside the input" in _bad_input(code, err, sidecar)
    assert sidecar.read_bytes() == before


# -- records are only ever added to a recording ---------------------------------------------

SCENARIO = ROOT / "scenarios" / "outage.yaml"
#: Files a mistyped --record or -o could name: records appended would change them.
FOREIGN = {"scenario.yaml": SCENARIO.read_bytes(),
           "notes.md": b"# Notes\nnot a recording\n",
           "pass.jsonl.verdicts": b'{"format": "mpsdproxy-verdicts", "version": 1}\n'}


@pytest.mark.parametrize("name", sorted(FOREIGN))
@pytest.mark.parametrize("tags", [{}, {"build": "7"}])
def test_a_writer_never_appends_to_a_file_that_is_not_a_recording(
        tmp_path: Path, name: str, tags: dict[str, str]) -> None:
    path = tmp_path / name
    path.write_bytes(FOREIGN[name])
    with pytest.raises(recording.ForeignFileError, match=f"{name}:1: not a recording"):
        recording.Writer(path, tags)
    assert path.read_bytes() == FOREIGN[name]


def test_a_writer_still_appends_to_a_version_1_recording(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text('{"seq": 1, "request": {"method": "GET", "url": "http://x/"}}\n')
    with recording.Writer(path) as writer:
        assert writer.seq == 1


@pytest.mark.parametrize("uses, says", [([], "not a recording"),
                                        (["--scenario"], "is also an input")])
def test_run_record_onto_a_scenario_never_starts(tmp_path: Path, uses: list[str],
                                                 says: str) -> None:
    scenario = tmp_path / "outage.yaml"
    scenario.write_bytes(SCENARIO.read_bytes())
    result = _mpsdproxy("run", "--record", scenario.name, *uses, *[scenario.name] * len(uses),
                        "--listen-port", "0", "--confdir", tmp_path, cwd=tmp_path)
    assert says in _bad_input(result.returncode, result.stderr, scenario.name)
    assert scenario.read_bytes() == SCENARIO.read_bytes()


def test_resend_and_import_never_append_to_a_file_that_is_not_a_recording(
        rec: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_bytes(FOREIGN["notes.md"])
    code, out_text, err = _cli("resend", rec, "--to", NOWHERE, "--record", notes)
    assert "not a recording" in _bad_input(code, err, notes)
    code, _, err = _cli("import", _har(tmp_path / "c.har"), "-o", notes, "--append")
    assert "not a recording" in _bad_input(code, err, notes)
    assert err.count(str(notes)) == 1  # named once, not behind the capture's name
    assert notes.read_bytes() == FOREIGN["notes.md"]


@pytest.mark.parametrize("command", ["import", "report", "export"])
def test_no_output_is_renamed_over_a_recording_being_written(rec: Path, tmp_path: Path,
                                                             command: str) -> None:
    """A proxy keeps appending to the file it opened: a file renamed over its recording
    would leave every exchange it records from then on in a file no one can open."""
    live = tmp_path / "live.jsonl"
    args = {"import": ["import", _har(tmp_path / "c.har"), "-o", live, "--append"],
            "report": ["report", rec, "--format", "json", "-o", live],
            "export": ["export", rec, "--format", "har", "-o", live]}[command]
    with recording.Writer(live) as writer:
        before = live.read_bytes()
        code, _, err = _cli(*args)
        assert "another mpsdproxy process is writing" in _bad_input(code, err, live)
        assert live.read_bytes() == before
        writer.write(recording.to_record(recording.to_exchange(
            next(recording.read(rec, strict=True))), recording.Redactor()))
    assert [r["seq"] for r in recording.read(live, strict=True)] == [1]  # still its file


# -- reading garbage is bad input, never a pass --------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"# notes\nnot json\n", b"[1, 2]\n",
                                     b'{"format": "mpsdproxy-recording", "version": 99}\n'])
@pytest.mark.parametrize("fail_on", [[], ["--fail-on", "fail"]])
def test_report_on_garbage_exits_2(tmp_path: Path, content: bytes, fail_on: list[str]) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(content)
    code, out, err = _cli("report", path, *fail_on)
    _bad_input(code, err, path)
    assert "PASSED" not in out
    assert path.read_bytes() == content


@pytest.mark.parametrize("fmt", ["har", "mitm", "saz", "csv"])
@pytest.mark.parametrize("content", [b"# notes\nnot json\n", b"[1, 2]\nnull\n",
                                     b'{"seq": "x"}\n'])
def test_export_of_garbage_exits_2_and_writes_nothing(tmp_path: Path, fmt: str,
                                                      content: bytes) -> None:
    """As `report` refuses it: an export of what is not a recording is no export."""
    path, out = tmp_path / "garbage.jsonl", tmp_path / f"out.{fmt}"
    path.write_bytes(content)
    line = _bad_input(*_cli("export", path, "--format", fmt, "-o", out)[::2], path)
    assert "not a recording" in line
    assert not out.exists()
    assert path.read_bytes() == content


def test_export_over_the_unreadable_threshold_exits_2(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.har"
    lines = rec.read_bytes().splitlines(keepends=True)
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n" + b"".join(lines[8:10]))  # 1 of 11
    assert _cli("export", rec, "--format", "har", "-o", out)[0] == 0
    out.unlink()
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n{}\n")  # 2 of 10 unreadable
    line = _bad_input(*_cli("export", rec, "--format", "har", "-o", out)[::2], rec)
    assert "2 of 10 lines unreadable" in line
    assert not out.exists()


@pytest.mark.parametrize("garbage_first", [True, False])
def test_sweep_matrix_of_garbage_exits_2(rec: Path, tmp_path: Path, garbage_first: bool) -> None:
    """`report --matrix` reads its recordings as `report` does: one that is not a
    recording is refused, never counted as a run with nothing in it."""
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"# notes\nnot json\n")
    first, also = (garbage, rec) if garbage_first else (rec, garbage)
    code, out, err = _cli("report", first, "--also", also, "--matrix")
    line = _bad_input(code, err, garbage)
    assert "not a recording" in line
    assert out == ""
    assert _cli("report", rec, "--matrix")[0] == 0


@pytest.mark.parametrize("content", [b"# notes\nnot json\n", b'{"seq": "x"}\n'])
def test_resend_of_garbage_exits_2_before_sending(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(content)
    code, out, err = _cli("resend", path, "--to", NOWHERE)
    assert "not a recording" in _bad_input(code, err, path)
    assert "sent" not in out


def test_resend_over_the_unreadable_threshold_exits_2(rec: Path) -> None:
    lines = rec.read_bytes().splitlines(keepends=True)
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n{}\n")  # 2 of 10 unreadable
    code, out, err = _cli("resend", rec, "--to", NOWHERE)
    assert "2 of 10 lines unreadable" in _bad_input(code, err, rec)
    assert "sent" not in out


def test_import_of_a_capture_with_no_readable_entry_exits_2(tmp_path: Path) -> None:
    capture, out = tmp_path / "capture.har", tmp_path / "out.jsonl"
    capture.write_text(json.dumps({"log": {"entries": [{"request": {"method": "GET"}}]}}))
    line = _bad_input(*_cli("import", capture, "-o", out)[::2], capture)
    assert "entry 1" in line and "'url'" in line
    assert not out.exists()


def test_import_counts_the_entries_it_skipped(tmp_path: Path) -> None:
    capture, out = _har(tmp_path / "capture.har"), tmp_path / "out.jsonl"
    har = json.loads(capture.read_text())
    har["log"]["entries"].insert(0, {"request": {"method": "GET"}})
    capture.write_text(json.dumps(har))
    code, stdout, stderr = _cli("import", capture, "-o", out)
    assert code == 0, stderr
    assert "kept 1 exchange(s)" in stdout and "skipped 1" in stdout
    assert "entry 1: cannot read it (no 'url' in it)" in stderr


def test_report_on_readme_exits_2_through_the_real_command(tmp_path: Path) -> None:
    result = _mpsdproxy("report", ROOT / "README.md", "--fail-on", "fail", cwd=tmp_path)
    line = _bad_input(result.returncode, result.stderr, "README.md")
    assert "not a recording" in line
    assert result.stdout == ""


def test_report_over_the_unreadable_threshold_exits_2(rec: Path) -> None:
    lines = rec.read_bytes().splitlines(keepends=True)
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n" + b"".join(lines[8:10]))  # 1 of 11
    assert _cli("report", rec)[0] == 0
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n{}\n")  # 2 of 10 unreadable
    line = _bad_input(*_cli("report", rec)[::2], rec)
    assert "2 of 10 lines unreadable" in line


def test_report_accepts_a_cut_last_line(rec: Path) -> None:
    """What a killed proxy leaves is a recording, not garbage."""
    lines = rec.read_bytes().splitlines(keepends=True)
    rec.write_bytes(b"".join(lines[:3]) + lines[3][:40])
    code, out, _ = _cli("report", rec)
    assert code == 0
    assert "truncated" in out


def test_report_output_is_written_whole(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("old")
    code, _, err = _cli("report", rec, "--format", "json", "-o", out)
    assert code == 0, err
    assert json.loads(out.read_text())["report"] == "mpsdproxy"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("command", [["report", "--format", "json"], ["export", "--format", "har"]])
def test_output_to_a_fifo_or_device_is_written_into_not_replaced(
        rec: Path, tmp_path: Path, command: list[str]) -> None:
    """`-o /dev/stdout` or a named pipe: the output streams into it, and the node stays
    (a rename over it, as a file is written whole, would replace the device itself)."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open never waits
    os.set_blocking(reader, True)
    holder = os.open(fifo, os.O_WRONLY)  # the drain sees no end before the command's
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(reader, 65536):
            got.extend(chunk)

    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    try:
        code, _, err = _cli(command[0], rec, *command[1:], "-o", fifo)
        os.close(holder)
        draining.join(timeout=30)
    finally:
        os.close(reader)
    assert code == 0, err
    assert json.loads(bytes(got))  # the whole document came through the pipe
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(
        rec: Path, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "today.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    code, _, err = _cli("report", rec, "--format", "json", "-o", link)
    assert code == 0, err
    assert link.is_symlink() and json.loads(target.read_text())["report"] == "mpsdproxy"


def test_import_never_renames_over_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = _cli("import", _har(tmp_path / "c.har"), "-o", fifo, "--append")
    assert "not a regular file (a FIFO)" in _bad_input(code, err, fifo)


def test_report_output_in_a_missing_folder_is_bad_input(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "report.html"
    _bad_input(*_cli("report", rec, "-o", out)[::2], out)


@pytest.mark.parametrize("bad", ["README.md", "empty", "missing"])
def test_diff_on_unreadable_input_exits_2_not_1(rec: Path, tmp_path: Path, bad: str) -> None:
    path = {"README.md": ROOT / "README.md", "empty": tmp_path / "empty.jsonl",
            "missing": tmp_path / "missing.jsonl"}[bad]
    if bad == "empty":
        path.write_bytes(b"")
    result = _mpsdproxy("diff", rec, path, cwd=tmp_path)
    _bad_input(result.returncode, result.stderr, path)
    result = _mpsdproxy("diff", path, rec, cwd=tmp_path)
    _bad_input(result.returncode, result.stderr, path)


def test_diff_of_a_recording_with_itself_still_passes(rec: Path) -> None:
    assert _cli("diff", rec, rec)[0] == 0
    lines = rec.read_bytes().splitlines(keepends=True)
    rec.write_bytes(b"".join(lines[:9]) + b"garbage\n")  # 1 of 10: within the 10 %
    assert _cli("diff", rec, rec)[0] == 0
    rec.write_bytes(b"".join(lines[:8]) + b"garbage\n{}\n")  # 2 of 10: counted once
    code, _, err = _cli("diff", rec, rec)
    assert "2 of 10 lines unreadable" in _bad_input(code, err, rec)


@pytest.mark.parametrize("content", [b"", b'{"format": "mpsdproxy-recording", "version": 2}\n',
                                     b"not a recording\n"])
def test_replay_of_an_empty_recording_never_starts(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    result = _mpsdproxy("run", "--replay", path.name, "--listen-port", "0",
                        "--confdir", tmp_path, cwd=tmp_path)
    _bad_input(result.returncode, result.stderr, path.name)
    assert path.read_bytes() == content


@pytest.mark.parametrize("seq", [2**63 + 5, -4, True])
def test_replay_of_a_seq_beyond_64_bits_is_refused_with_its_line(rec: Path, seq: object) -> None:
    """No traceback at start: a seq the replay's index cannot hold is a bad line."""
    lines = rec.read_text().splitlines(keepends=True)
    second = json.loads(lines[1])
    second["seq"] = seq
    rec.write_text(lines[0] + json.dumps(second) + "\n" + "".join(lines[2:]))
    result = _mpsdproxy("run", "--replay", rec.name, "--listen-port", "0",
                        "--confdir", rec.parent, cwd=rec.parent)
    line = _bad_input(result.returncode, result.stderr, f"{rec.name}:2")
    assert "'seq'" in line


def test_missing_input_is_one_line(tmp_path: Path) -> None:
    for command in (["report"], ["export", "--format", "har", "-o", "x.har"],
                    ["resend", "--to", NOWHERE], ["import", "-o", "x.jsonl"]):
        code, _, err = _cli(*command, tmp_path / "missing.jsonl")
        _bad_input(code, err, "missing.jsonl")


def test_scan_of_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("mpsdproxy.scan")
    _bad_input(*_cli("scan", tmp_path / "missing.jsonl")[::2], "missing.jsonl")


# -- the helpers the commands use ----------------------------------------------------------


def test_same_file_sees_through_links_and_spellings(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("x")
    (tmp_path / "l").symlink_to(a)
    os.link(a, tmp_path / "h")
    assert safefiles.same_file(a, tmp_path / "l")
    assert safefiles.same_file(a, tmp_path / "h")
    assert safefiles.same_file(a, tmp_path / "." / "a")
    assert safefiles.same_file(tmp_path / "new", tmp_path / "." / "new")
    assert not safefiles.same_file(a, tmp_path / "new")
    with pytest.raises(safefiles.SameFileError, match="choose another output"):
        safefiles.refuse_overwrite_of_inputs([None, tmp_path / "h"], [tmp_path / "x", a])
    safefiles.refuse_overwrite_of_inputs([None, tmp_path / "out"], [a])


def test_atomic_output_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("before")
    path.chmod(0o640)
    with pytest.raises(RuntimeError), safefiles.atomic_output(path) as f:
        f.write("half")
        raise RuntimeError("failed half way")
    assert path.read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with safefiles.atomic_output(path, "wb") as f:
        f.write(b"after")
    assert path.read_bytes() == b"after"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(ValueError, match="mode"):
        with safefiles.atomic_output(path, "a"):
            pass


# -- what a terminal shows -----------------------------------------------------------------


def _hostile_names(rec: Path) -> Path:
    """The sample with a session name a title could send (`%1B[2J`: decoded, an escape
    sequence) and a reason phrase holding ESC and BEL."""
    out = []
    for line in rec.read_text().splitlines():
        item = json.loads(line)
        if "seq" in item:
            item["request"]["url"] = item["request"]["url"].replace(
                "/sessions/demo-lobby", "/sessions/demo%1B%5B2Jlobby%0D")
            if item.get("response"):
                item["response"]["reason"] = "OK\x1b]0;title\x07"
        out.append(json.dumps(item))
    hostile = rec.with_name("hostile.jsonl")
    hostile.write_text("\n".join(out) + "\n")
    return hostile


def test_text_outputs_show_control_characters_escaped(rec: Path) -> None:
    hostile = _hostile_names(rec)
    outputs = {"report": _cli("report", hostile),
               "diff": _cli("diff", rec, hostile),
               "fleet": _cli("fleet", hostile),
               "fleet --sql": _cli("fleet", hostile, "--sql", "SELECT url, reason FROM exchanges")}
    for command, (code, out, err) in outputs.items():
        assert code in (0, 1), (command, err)
        assert "\x1b" not in out + err and "\r" not in out + err, command
    assert "demo\\x1b[2Jlobby\\x0d" in outputs["report"][1] + outputs["diff"][1]
    assert "OK\\x1b]0;title\\x07" in outputs["fleet --sql"][1]


@pytest.mark.parametrize("command", [["report", "--format", "json"], ["export", "--format", "har"],
                                     ["fleet", "--format", "json"]])
def test_dash_as_output_is_standard_output(rec: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           command: list[str]) -> None:
    """As in every Unix tool: the document alone on stdout (what was written is said on
    stderr), and no file called `-`."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(command[0], rec, *command[1:], "-o", "-")
    assert code == 0, err
    assert json.loads(out)
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("command", [
    ["export", "{rec}", "--format", "parquet", "-o", "-"],
    ["fleet", "{rec}", "--to-parquet", "-"],
    ["import", "{har}", "-o", "-"],
    ["resend", "{rec}", "--to", "http://127.0.0.1:9", "--record", "-"],
    ["run", "--listen-port", "0", "--record", "-"],
    ["run", "--listen-port", "0", "--sweep", "--sweep-state", "-"],
], ids=["parquet", "fleet-parquet", "import", "resend", "run-record", "sweep-state"])
def test_a_file_read_back_or_appended_to_is_never_standard_output(
        rec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    paths = {"{rec}": str(rec), "{har}": str(_har(tmp_path / "c.har"))}
    code, _, err = _cli(*(paths.get(arg, arg) for arg in command))
    assert "-: names standard output here" in _bad_input(code, err, "-")
    assert not (tmp_path / "-").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_parquet_file_is_never_renamed_over_a_fifo(rec: Path, tmp_path: Path) -> None:
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = _cli("export", rec, "--format", "parquet", "-o", fifo)
    assert "not a regular file (a FIFO)" in _bad_input(code, err, fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


#: A record line whose fields are of another type than the format's (hand-edited, or
#: written by another tool): each once read as a header, a provenance or a resource.
ODD_FIELDS = [
    ("request", "headers", [["Host", 443]]),
    ("response", "headers", 7),
    (None, "provenance", True),
    (None, "resource", {"kind": "session", "template": 1.5}),
    (None, "classification", {"id": ["200.ok"]}),
]


@pytest.mark.parametrize("part, key, value", ODD_FIELDS, ids=[k for _, k, _ in ODD_FIELDS])
@pytest.mark.parametrize("command", [
    ["report"], ["report", "--format", "json"], ["report", "--format", "html"],
    ["report", "--format", "junit"], ["report", "--matrix"], ["diff", "SAMPLE"],
    ["export", "--format", "har"], ["export", "--format", "mitm"],
    ["export", "--format", "saz"], ["export", "--format", "csv"], ["scan"]])
def test_a_field_of_another_type_skips_its_line_by_name(
        rec: Path, tmp_path: Path, part: str | None, key: str, value: object,
        command: list[str]) -> None:
    lines = rec.read_text().splitlines(keepends=True)
    record = json.loads(lines[3])
    (record[part] if part else record)[key] = value
    lines[3] = json.dumps(record) + "\n"
    rec.write_text("".join(lines))
    name, *options = command
    args = [name, *(str(SAMPLE) for o in options[:1] if o == "SAMPLE"), rec,
            *(o for o in options if o != "SAMPLE")]
    if name in ("report", "export") and "--format" in options or name == "export":
        args += ["-o", tmp_path / "out"]
    code, out, err = _cli(*args)
    assert code in (0, 1), err  # scan finds nothing; diff finds the line gone
    assert "Traceback" not in err
    if name != "scan":  # a report or a diff says it in its output, export on stderr
        written = tmp_path / "out"
        said = html.unescape(err + out + (written.read_text() if name == "report" and "-o" in args
                                          else ""))
        named = f"{rec.name}:4: '" in said or '"line": 4' in said  # the JSON report's form
        assert named and key in said, said


@pytest.mark.parametrize("fmt", ["har", "mitm", "saz", "csv"])
def test_a_client_of_another_type_exports_as_an_unknown_peer(rec: Path, tmp_path: Path,
                                                             fmt: str) -> None:
    lines = rec.read_text().splitlines(keepends=True)
    record = json.loads(lines[3])
    record["client"] = 50412.5
    lines[3] = json.dumps(record) + "\n"
    rec.write_text("".join(lines))
    code, _, err = _cli("export", rec, "--format", fmt, "-o", tmp_path / f"out.{fmt}")
    assert code == 0 and "Traceback" not in err and "skipped" not in err, err
