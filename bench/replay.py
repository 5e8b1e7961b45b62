"""Part 2, replay: `mpsdproxy run` replaying a recording vs mitmproxy's `--server-replay`.

A realistic recording is generated (session lifecycles: create, read, join,
conditional read, property write, throttled and stale writes, leave; bodies
of about 1.5 KB) and exported with `mpsdproxy export --format mitm`, so both
proxies hold the same exchanges. Measured:

- time to first answer: from process start until a recorded GET gets its
  recorded 200 (repeated for mpsdproxy, whose start is cheap), beside the
  start-up floor of a plain mitmdump (Python and mitmproxy starting);
- peak memory (VmHWM) and memory once ready (VmRSS);
- throughput and latency, as interleaved rounds of the two replaying proxies
  plus a second mpsdproxy as the A/A control, the load rotating over many
  recorded session GETs.

Neither proxy can reach a service: both are in reverse mode towards the real
host with lazy connections, misses are answered with an error status (which
the load tool counts), never forwarded.
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import NamedTuple

from bench import common
from bench import measure

MITM, MPSD, MPSD_CONTROL = "mitmproxy --server-replay", "mpsdproxy replay", \
    "mpsdproxy replay (control)"
HOST = "sessiondirectory.xboxlive.com"
STEPS_PER_SESSION = 8

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    count: int = 100_000
    rounds: int = 8
    seconds: float = 2.0
    connections: int = 16
    paths: int = 1000  # distinct recorded session GETs the load rotates over
    mpsd_starts: int = 3  # mpsdproxy's time to first answer is the median of this many
    tool: str = "auto"
    ready_timeout: float = 900.0
    floor: bool = True  # also time a plain mitmdump's start (the smoke run skips it)
    instances: int = 2  # processes of each proxy for the throughput rounds, taking turns


QUICK = Config(count=10_000, rounds=3, seconds=1.0)
SMOKE = Config(count=200, rounds=1, seconds=0.3, paths=8, mpsd_starts=1, tool="python",
               ready_timeout=120.0, floor=False, instances=1)


# --- the recording -------------------------------------------------------------------------

class Step(NamedTuple):
    """One exchange of a session's lifecycle, and how the service answers it."""

    method: str
    path: str
    headers: list[tuple[str, str]]  # besides the ones every request carries
    body: Any  # the request's JSON, or None
    entry: str  # catalog id of the answer
    args: dict[str, Any]  # faults.build arguments


def _request_headers(user: int, extra: list[tuple[str, str]], body: bytes
                     ) -> list[tuple[str, str]]:
    """What a title sends; its secrets are redacted when the exchange becomes a record."""
    headers = [("Host", HOST),
               ("Authorization", f"XBL3.0 x={2814600000000000 + user};token-{user}"),
               ("Signature", f"sig-{user}"), ("x-xbl-contract-version", "107"),
               ("Accept-Language", "en-US"), *extra]
    if body:
        headers += [("Content-Type", "application/json; charset=utf-8"),
                    ("Content-Length", str(len(body)))]
    return headers


def lifecycle(n: int) -> Iterator[Step]:
    """The exchanges of session n, in the order a title makes them."""
    name = f"bench-lobby-{n}"
    path = common.session_path(name)
    doc1 = common.session_document(name, members=1, seed=n)
    doc2 = common.session_document(name, members=2, seed=n)
    etag1, etag2, etag3 = (f'"0x8D9{n:09X}{k}"' for k in range(3))
    me = {"members": {"me": {"constants": {"system": {"xuid": str(n), "initialize": True}}}}}
    yield Step("PUT", path, [("If-None-Match", "*")], me, "201.created",
               {"session": doc1, "etag": etag1})
    yield Step("GET", path, [], None, "200.ok", {"session": doc1, "etag": etag1})
    yield Step("PUT", path, [], me, "200.ok", {"session": doc2, "etag": etag2})
    yield Step("GET", path, [("If-None-Match", etag2)], None, "304.not-modified", {})
    props = {"properties": {"custom": {"state": "ready", "round": n % 7}}}
    if n % 10 == 3:
        yield Step("PUT", path, [("If-Match", etag1)], props, "412.if-match-session",
                   {"session": doc2, "etag": etag2})
    else:
        yield Step("PUT", path, [("If-Match", etag2)], props, "200.ok",
                   {"session": doc2, "etag": etag3})
    if n % 10 == 7:
        yield Step("GET", path, [], None, "429.too-many-requests", {"retry_after": 3})
    elif n % 25 == 11:
        yield Step("GET", path, [], None, "503.service-unavailable", {"retry_after": 5})
    else:
        yield Step("GET", path, [], None, "200.ok", {"session": doc2, "etag": etag3})
    yield Step("GET", path, [], None, "200.ok", {"session": doc2, "etag": etag3})
    yield Step("PUT", path, [], {"members": {"me": None}}, "204.put-session-deleted", {})


def step_exchange(n: int, step: Step, written: int, now: float) -> Any:
    """The `model.Exchange` of one lifecycle step, as the recorder would have seen it."""
    from mpsdproxy import faults
    from mpsdproxy import model

    raw = common.compact_json(step.body) if step.body is not None else b""
    answer = faults.build(step.entry, **step.args, extra_headers=[
        ("X-Xbl-Correlation-Id", f"4b1a7c3e-0000-4000-8000-{written:012d}"),
        ("Date", "Mon, 21 Sep 2026 14:13:20 GMT")])
    if answer.status not in (204, 304):  # as the service sends them
        answer = model.Response(answer.status, answer.reason,
                                answer.headers.with_value("Content-Length",
                                                          str(len(answer.body))),
                                answer.body)
    duration = 0.004 + (written % 13) / 1000
    return model.Exchange(
        request=model.Request(step.method, f"https://{HOST}{step.path}",
                              model.Headers(_request_headers(n, step.headers, raw)), raw),
        response=answer, start=now, end=now + duration,
        client=f"127.0.0.1:{50000 + n % 1000}")


def write_recording(path: Path, count: int, start: float = 1_790_000_000.0) -> int:
    """Write `count` exchanges (whole lifecycles, the last one cut short) with the
    recording module's own codec and Writer, as the recorder would have; returns the
    count."""
    from mpsdproxy import classify
    from mpsdproxy import recording

    redactor = recording.Redactor()
    classified: dict[tuple[int, str], dict[str, Any]] = {}
    written = 0
    now = start
    with recording.Writer(path) as writer:
        for n in range(count // STEPS_PER_SESSION + 1):
            for index, step in enumerate(lifecycle(n)):
                if written >= count:
                    return written
                exchange = step_exchange(n, step, written, now)
                key = (index, step.entry)
                if key not in classified:  # every lifecycle classifies alike: once per step
                    classified[key] = classify.classify(exchange).to_dict()
                writer.write(recording.to_record(exchange, redactor, classified[key]))
                written += 1
                now += 0.01
    return written


def always_ok(n: int) -> bool:
    """Whether every recorded GET of session n (without If-None-Match) was answered 200:
    `lifecycle` gives some a 429 or 503, which mpsdproxy replays in recorded order."""
    return n % 10 != 7 and n % 25 != 11


def replay_paths(count: int, paths: int) -> list[str]:
    """Up to `paths` session paths whose recorded GETs were all answered 200, so any
    error the load tool counts is a replay failure, not a recorded fault."""
    sessions = [n for n in range(max(1, count // STEPS_PER_SESSION)) if always_ok(n)]
    return [common.session_path(f"bench-lobby-{n}") for n in sessions[:paths]]


def export_mitm(recording_path: Path, out: Path) -> float:
    """`mpsdproxy export --format mitm`; returns its wall time."""
    started = time.perf_counter()
    subprocess.run([common.PYTHON, "-m", "mpsdproxy", "export", str(recording_path),
                    "--format", "mitm", "-o", str(out)], check=True, capture_output=True,
                   timeout=3600)
    return time.perf_counter() - started


# --- time to first answer ------------------------------------------------------------------

def first_answer(service: common.Service, path: str, timeout: float,
                 want: int | None = 200) -> float:
    """Seconds from spawn until `path` gets an answer (with status `want`, if given)."""
    deadline = service.spawned + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n"
                               f"{service.output()[-3000:]}")
        status = _get(service.port, path)
        if status is not None and (want is None or status == want):
            return time.monotonic() - service.spawned
        time.sleep(0.02)
    raise RuntimeError(f"{service.name} gave no answer within {timeout:.0f} s")


def _get(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


# --- the proxies ---------------------------------------------------------------------------

def mitm_argv(port: int, flows: Path, confdir: Path) -> list[str]:
    return common.mitmdump_argv(
        port, f"reverse:{common.NOWHERE}", confdir, "--server-replay", str(flows),
        "--set", "server_replay_reuse=true", "--set", "server_replay_extra=404",
        "--set", "connection_strategy=lazy")


def mpsd_argv(port: int, recording_path: Path, confdir: Path) -> list[str]:
    return common.mpsdproxy_argv(port, f"reverse:{common.NOWHERE}", confdir,
                                 *common.option_args("--replay", "mpsd_replay",
                                                     str(recording_path)))


def start_ready(services: common.Services, name: str, argv_for: Callable[[int], list[str]],
                path: str, timeout: float) -> tuple[common.Service, float]:
    """Start a proxy on a free port (`argv_for(port)`) and wait for its first answer."""
    port = common.free_port()
    service = services.spawn(name, argv_for(port), port)
    return service, first_answer(service, path, timeout)


def startup_floor(services: common.Services, confdir: Path, path: str) -> float:
    """Time to first answer of a plain mitmdump with nothing to load (its 502 for an
    upstream that refuses), then stopped: what every start costs anyway."""
    port = common.free_port()
    argv = common.mitmdump_argv(port, f"reverse:http://127.0.0.1:{common.free_port()}", confdir,
                                "--set", "connection_strategy=lazy")
    service = services.spawn("mitmdump-empty", argv, port)
    try:
        return first_answer(service, path, 60.0, want=None)
    finally:
        service.stop()


# --- the benchmark -------------------------------------------------------------------------

def run(config: Config, workdir: Path | None = None, log: Log = print) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    confdir = common.prepare_confdir(workdir / "confdir")
    result: dict[str, Any] = {"config": asdict(config)}
    if not common.supported("mpsd_replay"):
        log("  mpsd_replay is not available in this tree: replay not measured")
        return result | {"available": False}
    recording_path, flows = workdir / "replay.jsonl", workdir / "replay.mitm"
    with common.timed() as t:
        written = write_recording(recording_path, config.count)
    log(f"  generated {written} exchanges in {t[0]:.1f} s; exporting to a mitmproxy flow file")
    result |= {"available": True, "exchanges": written, "generate_s": t[0],
               "export_s": export_mitm(recording_path, flows),
               "recording_mb": recording_path.stat().st_size / 2**20,
               "flows_mb": flows.stat().st_size / 2**20}
    paths = replay_paths(written, config.paths)
    generator = measure.LoadGenerator(workdir, config.tool)
    result["tool"] = generator.tool
    with common.Services(workdir) as services:
        result["startup_floor_s"] = (startup_floor(services, confdir, paths[0])
                                     if config.floor else None)
        mpsd, control, ready = _start_mpsd(services, config, recording_path, confdir, paths[0])
        result["launchers"] = {
            MPSD: common.launcher(mpsd_argv(0, recording_path, confdir)),
            MITM: common.launcher(mitm_argv(0, flows, confdir))}
        result["ready_s"] = {MPSD: measure.median(ready), "mpsd_starts": ready}
        result["ready_rss_mb"] = {MPSD: mpsd.rss_mb()}
        log(f"  mpsdproxy answered first after {result['ready_s'][MPSD]:.2f} s; "
            f"starting mitmproxy --server-replay")
        mitm, mitm_ready = start_ready(services, MITM, lambda p: mitm_argv(p, flows, confdir),
                                       paths[0], config.ready_timeout)
        result["ready_s"][MITM] = mitm_ready
        result["ready_rss_mb"][MITM] = mitm.rss_mb()
        log(f"  mitmproxy answered first after {mitm_ready:.2f} s")
        groups = {MITM: [mitm], MPSD: [mpsd], MPSD_CONTROL: [control]}
        if config.instances > 1:
            log(f"  starting {config.instances - 1} more of each for the throughput rounds")
            _add_instances(services, groups, config.instances - 1, {
                MITM: lambda p: mitm_argv(p, flows, confdir),
                MPSD: lambda p: mpsd_argv(p, recording_path, confdir),
                MPSD_CONTROL: lambda p: mpsd_argv(p, recording_path, confdir)},
                paths[0], config.ready_timeout)
        log(f"  {config.rounds} interleaved rounds at {config.connections} connections")
        runs = measure.interleave(generator, list(groups.values()), config.connections,
                                 config.rounds, config.seconds, paths)
        result["throughput"] = _summarise(runs)
        result["peak_rss_mb"] = {name: max(s.peak_rss_mb() or 0.0 for s in groups[name])
                                 for name in (MITM, MPSD)}
    return result


def _add_instances(services: common.Services, groups: dict[str, list[common.Service]],
                   more: int, argv_for: dict[str, Callable[[int], list[str]]], path: str,
                   timeout: float) -> None:
    """Start `more` further processes of each proxy at once and wait until each answers:
    identical processes differ by up to a fifth here, and the rounds take them in turn."""
    started = []
    for i in range(1, more + 1):
        for name, group in groups.items():
            port = common.free_port()
            service = services.spawn(f"{name}-{i}", argv_for[name](port), port)
            group.append(service)
            started.append(service)
    for service in started:
        first_answer(service, path, timeout)


def _start_mpsd(services: common.Services, config: Config, recording_path: Path,
                confdir: Path, path: str
                ) -> tuple[common.Service, common.Service, list[float]]:
    """Start mpsdproxy `mpsd_starts` times, one at a time (each measured alone), and
    keep the last start and a control started after it."""
    ready: list[float] = []
    service: common.Service | None = None

    def argv(port: int) -> list[str]:
        return mpsd_argv(port, recording_path, confdir)

    for _ in range(max(1, config.mpsd_starts)):
        if service is not None:
            service.stop()
        service, seconds = start_ready(services, MPSD, argv, path, config.ready_timeout)
        ready.append(seconds)
    assert service is not None
    control, _ = start_ready(services, MPSD_CONTROL, argv, path, config.ready_timeout)
    return service, control, ready


def _summarise(runs: dict[str, list[measure.Run]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(runs[MITM])}
    for label, test, base in (("mpsd_vs_mitm", MPSD, MITM), ("control", MPSD_CONTROL, MPSD)):
        out[label] = {m: measure.median_ratio(runs, test, base, m)
                      for m in ("rps", "p50", "p99", "cpu_us")}
    out["absolute"] = {name: {m: measure.median_metric(runs, name, m)
                              for m in ("rps", "p50", "p99", "cpu_us")}
                       | {"errors": measure.total_errors(runs, name)}
                       for name in runs}
    return out
