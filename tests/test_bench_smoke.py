"""Smoke runs of every benchmark (bench/), so the harness cannot rot.

Each part runs through the real entry point (`bench/run.py --smoke --part P`)
with tiny counts, real proxies and real sockets; the three parts run at once,
as separate processes. Nothing here asserts a timing or a ratio's value: only
that every figure is there, that the traffic went where it should, and that
the document is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench import instructions  # noqa: E402
from bench import longrun  # noqa: E402
from bench import measure  # noqa: E402
from bench import overhead  # noqa: E402
from bench import replay  # noqa: E402
from bench import results  # noqa: E402

PARTS = ("overhead", "replay", "longrun")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run the three parts at once; per part: its JSON results, markdown and workdir."""
    base = tmp_path_factory.mktemp("bench")
    procs = {}
    for part in PARTS:
        argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--part", part,
                "--out", str(base / f"{part}.md"), "--json", str(base / f"{part}.json"),
                "--workdir", str(base / f"work-{part}")]
        if part == "overhead":  # today's tree as the revision "before": the variant runs
            argv += ["--before", "HEAD"]
        procs[part] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, cwd=base)
    out = {}
    try:
        for part, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=100)
            assert proc.returncode == 0, f"{part} failed:\n{stderr[-4000:]}"
            out[part] = {
                "results": json.loads((base / f"{part}.json").read_text())["results"][part],
                "doc": (base / f"{part}.md").read_text(),
                "stdout": stdout,
                "work": base / f"work-{part}" / part,
            }
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return out


def test_overhead_measures_every_proxy_with_the_scenario_matching(smoke):
    result = smoke["overhead"]["results"]
    assert result["upstream_direct"]["rps"] > 0 and result["upstream_direct"]["errors"] == 0
    assert set(result["launchers"]) == {*overhead.SMOKE.variants, overhead.BEFORE}
    for part in result["by_connections"].values():
        for name in overhead.SMOKE.variants:
            absolute = part["absolute"][name]
            assert absolute["requests"] > 0 and absolute["errors"] == 0, name
            assert absolute["cpu_us"] > 0, name
        assert set(part["ratios"]["full"]) == {"rps", "p50", "p99", "cpu_us"}
        # classify - base and the total (record and scenario need the record variant)
        assert len(part["extra_cpu_us"]) == 2
    hooks = result["hooks"]["per_addon_us"]
    assert {"Router", "StatusClassifier", "Recorder"} <= set(hooks)
    assert all(us > 0 for name, us in hooks.items() if name in ("Router", "Recorder"))
    assert result["recorded_lines"] > 0


def test_overhead_runs_the_before_revision_beside_today(smoke):
    result = smoke["overhead"]["results"]
    assert result["before"] == "HEAD"
    assert "git archive HEAD" in result["launchers"]["before"]
    for part in result["by_connections"].values():
        assert set(part["ratios"]["full_vs_before"]) == {"rps", "p50", "p99", "cpu_us"}
        assert part["absolute"]["before"]["requests"] > 0
        assert part["absolute"]["before"]["errors"] == 0
    hooks = result["hooks_vs_before"]["per_hook_us"]  # in process, the two trees apart
    assert hooks["before"]["Recorder.response"] > 0 and hooks["today"]["Recorder.response"] > 0
    assert "beside the `--before` revision (HEAD)" in smoke["overhead"]["doc"]
    assert "ratio full / before" in smoke["overhead"]["doc"]
    assert "vs before, throughput" in smoke["overhead"]["doc"]
    from mpsdproxy import recording

    records = list(recording.read(smoke["overhead"]["work"] / "before.jsonl", strict=True))
    assert records, "the before variant recorded what it forwarded"


def test_before_target_is_the_a_a_band():
    part = {"ratios": {"control": {"rps": 0.97, "p99": 1.05},
                       "full_vs_before": {"rps": 0.98, "p99": 1.08}},
            "absolute": {"full": {"rps": 98.0, "p99": 10.8}, "before": {"rps": 100.0, "p99": 10.0}}}
    throughput, p99 = results.before_targets("16", part)
    assert throughput.met is True  # 0.98 is within the A/A's 3 %
    assert p99.met is False  # 1.08 is beyond the A/A's 5 %
    part["ratios"]["full_vs_before"]["rps"] = 0.95
    assert results.before_targets("16", part)[0].met is False
    assert results.before_targets("16", {"ratios": {}, "absolute": {}}) == []


def test_instruction_target_is_the_a_a_band():
    counted = {"requests": 500, "per_request": {
        "mitmdump": 8.0e6, "full": 9.0e6, "full-control": 9.09e6, "before": 8.95e6}}
    (target,) = results.instruction_targets(counted)
    assert target.met is True  # 1.006 is within the A/A's 1 %
    assert (target.target, target.measured) == ("≤ 1.010× (A/A 1.010×)", "1.006×")
    counted["per_request"]["full-control"] = 9.0e6
    assert results.instruction_targets(counted)[0].met is False  # no noise, more work
    del counted["per_request"]["before"]
    assert results.instruction_targets(counted) == []
    assert "| mitmdump -q (base) | 8.000 | 1.00× | – |" in results.instructions_section(counted)
    assert results.instructions_section(None) == ""


@pytest.mark.skipif(not instructions.available(), reason="valgrind is not installed")
def test_instructions_are_counted_on_a_live_server(tmp_path):
    """The callgrind machinery on a real process and socket: a small HTTP server answers
    the warm-up and the counted requests, and the dump gives a plausible count."""
    (tmp_path / "a.json").write_text("{}")
    port = common.free_port()
    with common.Services(tmp_path) as services:
        service, out = instructions.start(
            services, "server", [sys.executable, "-m", "http.server", str(port),
                                 "--bind", "127.0.0.1", "--directory", str(tmp_path)], port)
        counted = instructions.per_request(service, out, ["/a.json"], 20)
        assert service.proc.poll() is not None  # stopped once counted
    assert 10_000 < counted < 50_000_000


def test_hooks_beside_a_tree_without_a_chain_say_so(tmp_path):
    """A revision whose addon chain the harness cannot build fails loudly (the overhead
    part logs it and keeps what it measured), never as timings of nothing."""
    tree = tmp_path / "tree"
    (tree / "mpsdproxy").mkdir(parents=True)
    (tree / "mpsdproxy" / "__init__.py").write_text("")
    with pytest.raises(subprocess.CalledProcessError):
        overhead.hooks_side_by_side(tree, tmp_path, iterations=10, paths=2, rounds=1)


def test_hooks_side_by_side_table_lists_each_hook_of_either_tree():
    side = {"rounds": 3, "iterations": 100, "per_hook_us": {
        "before": {"Router.request": 3.0, "Recorder.response": 30.0},
        "today": {"Router.request": 15.0, "Recorder.response": 60.0, "Settle.response": 0.7,
                  "StandIn.request": 0.2}}}
    text = results.side_by_side_hooks({"hooks_vs_before": side, "before": "abc123"})
    assert "| Router.request | 3.0 | 15.0 | +12.0 |" in text
    assert "| Settle.response | – | 0.7 | +0.7 |" in text
    assert "StandIn.request" not in text  # under half a µs in both trees
    assert "| **all hooks** | 33.0 | 75.9 | +42.9 |" in text
    assert results.side_by_side_hooks({}) == ""


def test_overhead_full_variant_records_everything_as_forwarded(smoke):
    """The scenario's rules match but never fire: every record is a forwarded 200."""
    if not smoke["overhead"]["results"]["scenario"]:
        pytest.skip("no mpsd_scenario in this tree")
    from mpsdproxy import recording

    records = list(recording.read(smoke["overhead"]["work"] / "full.jsonl", strict=True))
    assert records
    assert len(records) == smoke["overhead"]["results"]["recorded_lines"]
    for record in records:
        assert record["provenance"]["source"] == "forwarded"
        assert record["response"]["status"] == 200
        assert record["resource"]["kind"] == "session"
        # Each session answers with its own document, as the service would.
        assert record["response"]["body"]["json"]["name"] == record["resource"]["name"]


def test_replay_answers_from_both_proxies(smoke):
    result = smoke["replay"]["results"]
    if not result.get("available"):
        pytest.skip("no mpsd_replay in this tree")
    assert result["exchanges"] == replay.SMOKE.count
    mitm, mpsd = "mitmproxy --server-replay", "mpsdproxy replay"
    assert result["ready_s"][mpsd] > 0 and result["ready_s"][mitm] > 0
    assert result["peak_rss_mb"][mpsd] > 0 and result["peak_rss_mb"][mitm] > 0
    absolute = result["throughput"]["absolute"]
    for name in (mitm, mpsd):
        assert absolute[name]["rps"] > 0
        assert absolute[name]["errors"] == 0  # every answer was a recorded 200


def test_longrun_reads_memory_at_every_checkpoint(smoke):
    result = smoke["longrun"]["results"]
    cfg = longrun.SMOKE
    for kind in ("recorder", "verdicts"):
        marks = result[kind]["checkpoints"]
        assert [m["exchanges"] for m in marks] == list(
            range(cfg.checkpoint, cfg.count + 1, cfg.checkpoint))
        assert all(m["peak_rss_mb"] > 0 for m in marks)
        assert result[kind]["flatness"] is not None
    assert result["recorder"]["recording_mb"] > 0
    report = result["report"]
    if report["available"]:
        assert {int(n) for n in report["runs"]} == {cfg.checkpoint, cfg.count}
        assert all(run["exit"] in (0, 1) for run in report["runs"].values())


def test_each_document_has_the_tables(smoke):
    for part in PARTS:
        doc = smoke[part]["doc"]
        assert results.BEGIN in doc and results.END in doc
        assert "| cores | " in doc and "### Targets" in doc
        assert "| what | target | measured |" in doc
        assert "### Targets" in smoke[part]["stdout"]  # the table is printed too
    assert "**ratio full / base**" in smoke["overhead"]["doc"]
    assert "| exchanges | RSS MB | peak MB | seconds |" in smoke["longrun"]["doc"]


def test_document_keeps_prose_and_the_other_parts_figures():
    previous = {"replay": {"available": False}}
    first = results.document("", results.generated(previous, {"cores": 2}, "run"))
    edited = first.replace(results.END, results.END + "\n\n## Analysis\n\nKept.\n")
    again = results.document(edited, results.generated(
        {**results.previous_results(edited), "longrun": None}, {"cores": 2}, "run --part x"))
    assert "## Analysis\n\nKept." in again
    assert again.count(results.BEGIN) == 1
    assert results.previous_results(again)["replay"] == {"available": False}
    assert "run --part x" in again


def test_parse_load_output():
    load = measure.parse_load_output(
        'noise\nBENCH-JSON {"requests": 500, "duration_us": 2000000, "errors": 1, '
        '"non2xx": 2, "p50_us": 1500, "p99_us": 9000}\n')
    assert load == measure.Load(requests=500, seconds=2.0, errors=3, p50_ms=1.5, p99_ms=9.0)
    assert load.rps == 250.0
    with pytest.raises(RuntimeError, match="printed no result"):
        measure.parse_load_output("Usage: wrk <options> <url>")


def _run(rps: float, cpu: float | None) -> measure.Run:
    return measure.Run(measure.Load(int(rps), 1.0, 0, 1.0, 2.0), cpu)


def test_ratios_are_medians_of_per_round_ratios():
    runs = {"a": [_run(100, 10.0), _run(200, 20.0), _run(300, None)],
            "b": [_run(50, 5.0), _run(400, 10.0), _run(150, 30.0)]}
    assert measure.pair_ratios(runs, "b", "a", "rps") == [0.5, 2.0, 0.5]
    assert measure.median_ratio(runs, "b", "a", "rps") == 0.5
    assert measure.pair_ratios(runs, "b", "a", "cpu_us") == [0.5, 0.5]  # a round without CPU
    assert overhead.round_differences(runs, "b", "a") == [-5.0, -10.0]


def test_interleave_rotates_order_and_takes_instances_in_turn(monkeypatch):
    served: list[str] = []

    def measured(generator, target, connections, seconds, paths=()):
        served.append(target.name)
        return _run(100, 1.0)

    monkeypatch.setattr(measure, "measured_run", measured)

    def proc(name: str) -> common.Service:
        return common.Service(name, 0, None, Path("/dev/null"), 0.0)  # type: ignore[arg-type]

    a = [proc("a"), proc("a-1"), proc("a-2")]
    b = [proc("b"), proc("b-1"), proc("b-2")]
    runs = measure.interleave(None, [a, b, proc("c")], 1, 4, 1.0)  # type: ignore[arg-type]
    assert served == ["a", "b", "c",  "b-1", "c", "a-1",  "c", "a-2", "b-2",  "a", "b", "c"]
    assert {name: len(r) for name, r in runs.items()} == {"a": 4, "b": 4, "c": 4}


def test_scenario_matches_the_benchmark_requests_and_never_fires(tmp_path):
    from mpsdproxy import scenario

    path = tmp_path / "never.yaml"
    overhead.write_scenario(path)
    loaded = scenario.load(path)
    assert len(loaded.rules) == overhead.RULES
    assert all(rule.when.nth >= overhead.NEVER for rule in loaded.rules)


def test_repeated_recording_is_one_long_valid_recording(tmp_path):
    from mpsdproxy import recording

    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    assert replay.write_recording(small, 20) == 20
    assert longrun.repeat_recording(small, big, 3) == 60
    records = list(recording.read(big, strict=True))
    assert [r["seq"] for r in records] == list(range(1, 61))
    lines = [json.loads(line) for line in big.read_text().splitlines()]
    headers = [line for line in lines if "seq" not in line]
    assert headers == [{"format": "mpsdproxy-recording", "version": 2}]
    assert lines[0] == headers[0]  # once, first
    starts = [recording.parse_timestamp(r["start"]) for r in records]
    assert starts == sorted(starts)
    names = {r["resource"]["name"] for r in records}
    assert {"bench-lobby-0", "bench-lobby-c1-0", "bench-lobby-c2-0"} <= names
    assert records[20]["request"]["url"].endswith("/sessions/bench-lobby-c1-0")


def test_generated_recording_is_redacted_and_classified(tmp_path):
    from mpsdproxy import recording
    from mpsdproxy import secrets

    path = tmp_path / "gen.jsonl"
    assert replay.write_recording(path, replay.STEPS_PER_SESSION) == replay.STEPS_PER_SESSION
    records = list(recording.read(path, strict=True))
    assert [r["classification"]["id"] for r in records] == [
        step.entry for step in replay.lifecycle(0)]
    for record in records:
        auth = recording.header(record["request"]["headers"], "Authorization")
        assert auth is not None and secrets.is_redacted(auth)
        assert record["provenance"] == {"source": "forwarded"}
        assert recording.to_exchange(record).status == record["response"]["status"]


def test_hot_spots_time_the_domain_functions():
    body = common.compact_json(common.session_document("bench-lobby-1"))
    spots = overhead.hot_spots(body, 20)
    assert {"flows.exchange_of(flow)", "classify.classify(exchange)",
            "recording.to_record(exchange)", "recording.Writer.write(record)"} <= set(spots)
    assert all(us > 0 for us in spots.values())


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_script_rotates_paths_and_reports(tmp_path):
    body = common.compact_json(common.session_document("x"))
    with common.Services(tmp_path) as services:
        upstream, what = common.start_upstream(services, body, "python")
        generator = measure.LoadGenerator(tmp_path, "wrk")
        run = measure.measured_run(generator, upstream, 2, 1.0, ["/a", "/b"])
    assert run.load.requests > 0 and run.load.errors == 0
    assert run.load.p99_ms >= run.load.p50_ms > 0
    assert run.cpu_us_per_request is not None
    assert upstream.proc.returncode is not None  # stopped by its PID


def test_launcher_names_the_command_without_ports_or_paths(tmp_path):
    argv = common.mpsdproxy_argv(8123, "reverse:http://127.0.0.1:9", tmp_path / "conf",
                                 "--record", str(tmp_path / "full.jsonl"))
    assert common.launcher(argv) == (
        "mpsdproxy run --mode reverse:http://127.0.0.1:9 --quiet --record full.jsonl")
    plain = common.mitmdump_argv(8124, "reverse:http://127.0.0.1:9", tmp_path / "conf")
    assert common.launcher(plain) == "mitmdump --mode reverse:http://127.0.0.1:9 -q"
