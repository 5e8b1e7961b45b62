"""Part 1, addon overhead: plain mitmdump vs `mpsdproxy run` in reverse mode, side by side.

Five proxies run at once in front of one upstream: plain `mitmdump -q` (the
base), a second identical one (the A/A control: its ratio to the base is the
noise), and three `mpsdproxy run --quiet` variants, each adding one part:

    classify   the chain with nothing switched on: router, classifier (and
               every inert addon, which is still walked for each hook)
    record     + --record FILE
    full       + a 20-rule scenario whose rules all match but never fire

With `before` set to a git revision (`bench/run.py --before REV`), that revision's
`full` runs beside today's in the same rounds: the before/after of a change, each
against the same base and A/A line.

Throughput and latency ratios compare `full` with the base at 1, 16 and 64
connections; the CPU µs per request of each variant, minus the one before it,
is what each part adds. A second, in-process measure times every addon's hooks
directly on a realistic flow, which is exact where the process figures are
noisy.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench import instructions
from bench import measure

#: Rules in the generated scenario; each matches every benchmark request, none fires.
RULES = 20
NEVER = 1_000_000_000
#: The variants in chain-building order: each adds one part to the one before.
BASE, CONTROL, CLASSIFY, RECORD, FULL = "mitmdump", "mitmdump-control", "classify", "record", \
    "full"
#: The full variant at an earlier revision (`Config.before`), run beside today's.
BEFORE = "before"
#: A second process of today's full variant: the A/A control of the instruction counts.
CONTROL_FULL = "full-control"
VARIANTS = (BASE, CONTROL, CLASSIFY, RECORD, FULL)
PARTS = ((CLASSIFY, BASE, "classify (router, classifier, inert addons)"),
         (RECORD, CLASSIFY, "record (redact, JSON line, flush)"),
         (FULL, RECORD, f"scenario ({RULES} rules matched, none fires)"))
HOOKS = ("requestheaders", "request", "responseheaders", "response")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    connections: tuple[int, ...] = (1, 16, 64)
    rounds: int = 10
    seconds: float = 2.0
    paths: int = 64  # distinct session URLs rotated by the load generator
    upstream: str = "auto"  # auto | nginx | python
    tool: str = "auto"  # auto | wrk | python
    hook_iterations: int = 20_000
    warm_up: bool = True
    variants: tuple[str, ...] = VARIANTS  # the smoke run starts fewer proxies
    instances: int = 3  # processes per variant, taking the rounds in turn
    before: str = ""  # a git revision whose full variant runs beside today's ("": none)
    hook_rounds: int = 3  # alternating processes per tree timing the hooks beside `before`
    instructions: int = 500  # requests counted under callgrind per proxy (0: not measured)


QUICK = Config(rounds=4, seconds=1.0, hook_iterations=5_000, instances=2, instructions=300)
SMOKE = Config(connections=(2,), rounds=1, seconds=0.3, paths=4, upstream="python",
               tool="python", hook_iterations=200, warm_up=False,
               variants=(BASE, CLASSIFY, FULL), instances=1, hook_rounds=1, instructions=0)


# --- the scenario -------------------------------------------------------------------------

FAULTS = ("{status: 412}", "{status: 429, retry_after: 3}", "{status: 503, retry_after: 5}",
          "{delay: 1500ms}", "{drop: true}")
MATCHES = (
    "{method: GET, resource: session}",
    "{resource: [session, member], path: '*/sessiontemplates/*/sessions/*'}",
    "{method: [GET, PUT], path: '/serviceconfigs/*'}",
    "{resource: any}",
)
PER = ("global", "client", "session")


def scenario_yaml(rules: int = RULES) -> str:
    """A scenario whose every rule matches the benchmark's session GETs and counts them
    (per global, client or session scope), but waits for a request that never comes."""
    lines = ["name: bench-never-fires", "description: every rule matches, none fires",
             "seed: 1", "rules:"]
    for i in range(rules):
        lines += [
            f"  - name: never-{i:02d}",
            f"    match: {MATCHES[i % len(MATCHES)]}",
            f"    per: {PER[i % len(PER)]}",
            f"    when: {{nth: {NEVER + i}}}",
            f"    fault: {FAULTS[i % len(FAULTS)]}",
        ]
    return "\n".join(lines) + "\n"


def write_scenario(path: Path, rules: int = RULES) -> None:
    """Write the scenario and check it loads (a broken one would measure nothing)."""
    path.write_text(scenario_yaml(rules))
    from mpsdproxy import scenario

    scenario.load(path)


# --- the proxies --------------------------------------------------------------------------

def session_names(count: int) -> list[str]:
    return [f"bench-lobby-{i}" for i in range(count)]


def session_paths(count: int) -> list[str]:
    return [common.session_path(name) for name in session_names(count)]


def session_bodies(count: int) -> dict[str, bytes]:
    """Each benchmark session's own document, by path: as in a playtest, one answer's
    body is not the one before it, so nothing is learned from the previous answer."""
    return {common.session_path(name): common.compact_json(common.session_document(name))
            for name in session_names(count)}


def variant_argvs(port: dict[str, int], target: str, confdir: Path, workdir: Path,
                  with_scenario: bool, instance: int = 0) -> dict[str, list[str]]:
    mode = f"reverse:{target}"
    scenario_set = common.option_args("--scenario", "mpsd_scenario",
                                      str(workdir / "scenario.yaml"))
    suffix = f"-{instance}" if instance else ""
    before_port = port.get(BEFORE, port[FULL])
    return {
        BEFORE: common.mpsdproxy_argv(before_port, mode, confdir,
                                      "--record", str(workdir / f"before{suffix}.jsonl"),
                                      *(scenario_set if with_scenario else [])),
        BASE: common.mitmdump_argv(port[BASE], mode, confdir),
        CONTROL: common.mitmdump_argv(port[CONTROL], mode, confdir),
        CLASSIFY: common.mpsdproxy_argv(port[CLASSIFY], mode, confdir),
        RECORD: common.mpsdproxy_argv(port[RECORD], mode, confdir,
                                      "--record", str(workdir / f"record{suffix}.jsonl")),
        FULL: common.mpsdproxy_argv(port[FULL], mode, confdir,
                                    "--record", str(workdir / f"full{suffix}.jsonl"),
                                    *(scenario_set if with_scenario else [])),
    }


def start_proxies(services: common.Services, target: str, confdir: Path, with_scenario: bool,
                  names: tuple[str, ...] = VARIANTS, instances: int = 1,
                  before_tree: Path | None = None
                  ) -> tuple[dict[str, list[common.Service]], dict[str, str]]:
    """Start `instances` processes of each variant at once (startups overlap), then wait
    for each to listen. `before_tree` is the earlier revision the `before` variant runs."""
    started: dict[str, list[common.Service]] = {name: [] for name in names}
    launchers: dict[str, str] = {}
    before_env = {"PYTHONPATH": str(before_tree)} if before_tree else None
    for instance in range(instances):
        ports = {name: common.free_port() for name in (*VARIANTS, BEFORE)}
        argvs = variant_argvs(ports, target, confdir, services.workdir, with_scenario, instance)
        for name in names:
            label = f"{name}-{instance}" if instance else name
            env = before_env if name == BEFORE else None
            started[name].append(services.spawn(label, argvs[name], ports[name], env=env))
            launchers.setdefault(name, common.launcher(argvs[name]))
    common.wait_all([s for group in started.values() for s in group],
                    timeout=60.0 * max(1, instances))
    return started, launchers


#: The proxies whose instructions per request are counted, with the variant each runs.
COUNTED = {BASE: BASE, FULL: FULL, CONTROL_FULL: FULL, BEFORE: BEFORE}
#: Their instance numbers start here: their recordings are not the timed rounds'.
COUNTED_INSTANCE = 100


def count_instructions(services: common.Services, target: str, confdir: Path,
                       with_scenario: bool, before_tree: Path | None, paths: list[str],
                       requests: int) -> dict[str, Any]:
    """Instructions per request (`bench/instructions.py`) of plain mitmdump, today's full
    proxy twice (the second is the A/A control) and, with `before_tree`, the same proxy
    at that revision. All start at once (a start under callgrind takes minutes); each is
    then counted alone and stopped."""
    started: dict[str, tuple[common.Service, Path]] = {}
    for label, variant in COUNTED.items():
        if variant == BEFORE and before_tree is None:
            continue
        port = common.free_port()  # only `variant`'s command is started
        argv = variant_argvs(dict.fromkeys((*VARIANTS, BEFORE), port), target, confdir,
                             services.workdir, with_scenario,
                             instance=COUNTED_INSTANCE + len(started))[variant]
        env = {"PYTHONPATH": str(before_tree)} if variant == BEFORE else None
        started[label] = instructions.start(services, f"callgrind-{label}", argv, port, env)
    counts = {label: instructions.per_request(service, out, paths, requests)
              for label, (service, out) in started.items()}
    return {"requests": requests, "per_request": counts}


# --- analysis -----------------------------------------------------------------------------

def round_differences(runs: dict[str, list[measure.Run]], test: str, base: str) -> list[float]:
    """Per-round CPU µs/request of `test` minus `base` (same round, so same CPU state)."""
    out = []
    for a, b in zip(runs[test], runs[base], strict=True):
        if a.cpu_us_per_request is not None and b.cpu_us_per_request is not None:
            out.append(a.cpu_us_per_request - b.cpu_us_per_request)
    return out


def summarise(runs: dict[str, list[measure.Run]]) -> dict[str, Any]:
    """Ratios (median of per-round ratios), absolute medians and the CPU breakdown."""
    ratios = {}
    for label, test, base in (("full", FULL, BASE), ("control", CONTROL, BASE),
                              ("before", BEFORE, BASE), ("full_vs_before", FULL, BEFORE)):
        if test not in runs or base not in runs:
            continue
        ratios[label] = {m: measure.median_ratio(runs, test, base, m)
                         for m in ("rps", "p50", "p99", "cpu_us")}
    absolute = {name: {m: measure.median_metric(runs, name, m)
                       for m in ("rps", "p50", "p99", "cpu_us")} | {
                           "errors": measure.total_errors(runs, name),
                           "requests": sum(r.load.requests for r in runs[name])}
                for name in runs}
    extra = {part: measure.median(round_differences(runs, test, base))
             for test, base, part in PARTS if test in runs and base in runs}
    extra["total"] = measure.median(round_differences(runs, FULL, BASE))
    return {"ratios": ratios, "absolute": absolute, "extra_cpu_us": extra,
            "rounds": len(runs[BASE])}


def upstream_direct(generator: measure.LoadGenerator, upstream: common.Service,
                    config: Config, paths: list[str]) -> dict[str, Any]:
    """The upstream measured alone, at the highest concurrency: it must be far faster
    than any proxy in front of it, or it would be what the proxies are measured by."""
    connections = max(config.connections)
    run = measure.measured_run(generator, upstream, connections, config.seconds, paths)
    return {"connections": connections, "rps": run.load.rps, "p50": run.load.p50_ms,
            "p99": run.load.p99_ms, "cpu_us": run.cpu_us_per_request,
            "errors": run.load.errors}


# --- in-process hook timing ---------------------------------------------------------------

def realistic_flow(body: bytes, name: str = "bench-lobby-1") -> tuple[Any, Any]:
    """A GET of session `name` as a title sends it (a live flow, no response yet) and
    the service's answer to it."""
    from mitmproxy.test import tflow
    from mitmproxy.test import tutils

    request = tutils.treq(
        method=b"GET", scheme=b"https", host="sessiondirectory.xboxlive.com", port=443,
        authority=b"", path=common.session_path(name).encode(),
        headers=[(b"Host", b"sessiondirectory.xboxlive.com"),
                 (b"Authorization", b"XBL3.0 x=2814600000000001;eyJhbGciOiJSUzI1NiJ9.e30.sig"),
                 (b"Signature", b"AAAAAQHZ3jzNhd5OaR5+PjQ8Wg=="),
                 (b"x-xbl-contract-version", b"107"), (b"Accept-Language", b"en-US"),
                 (b"Accept", b"application/json")],
        content=b"")
    response = tutils.tresp(
        status_code=200, reason=b"OK",
        headers=[(b"Content-Type", b"application/json; charset=utf-8"),
                 (b"ETag", b'"0x8D9F3A1B2C3D4E5"'), (b"Content-Length", str(len(body)).encode()),
                 (b"X-Xbl-Correlation-Id", b"4b1a7c3e-0000-4000-8000-00000000beef")],
        content=body)
    return tflow.tflow(req=request), response


def time_hooks(iterations: int, with_scenario: bool, bodies: list[bytes],
               with_hot_spots: bool = True) -> dict[str, Any]:
    """Each addon's hooks on realistic flows, `iterations` times, a session of its own
    for each body in turn: median µs per request per addon and per hook, after a
    warm-up of a tenth; with `with_hot_spots`, the functions inside them too (today's tree
    only: they name today's functions)."""
    from mitmproxy.test import taddons

    from mpsdproxy.addons import default_addons

    workdir = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    chain = default_addons()
    options: dict[str, Any] = {"mpsd_record": str(workdir / "hooks.jsonl"), "mpsd_quiet": True}
    if with_scenario:
        write_scenario(workdir / "scenario.yaml")
        options["mpsd_scenario"] = [str(workdir / "scenario.yaml")]  # a list of files
    templates = [realistic_flow(body, name)
                 for body, name in zip(bodies, session_names(len(bodies)), strict=True)]
    samples: dict[tuple[str, str], list[float]] = {}
    with taddons.context(*chain) as tctx:
        tctx.configure(chain[0], **options)
        for i in range(iterations + iterations // 10):
            template, response = templates[i % len(templates)]
            flow = template.copy()
            flow.live = True  # a copy is not live, and every hook leaves a dead flow alone
            spent = _one_request(chain, flow, response)
            if i >= iterations // 10:
                for key, ns in spent.items():
                    samples.setdefault(key, []).append(ns / 1000)
        with contextlib.redirect_stdout(sys.stderr):  # done() may print a summary
            for addon in chain:
                if hasattr(addon, "done"):
                    addon.done()
    (workdir / "hooks.jsonl").unlink(missing_ok=True)
    per_hook = {f"{a}.{h}": statistics.median(v) for (a, h), v in samples.items()}
    per_addon: dict[str, float] = {}
    for (addon, _), values in samples.items():
        per_addon[addon] = per_addon.get(addon, 0.0) + statistics.median(values)
    return {"iterations": iterations, "per_addon_us": per_addon, "per_hook_us": per_hook,
            "total_us": sum(per_addon.values()), "scenario": with_scenario,
            **({"hot_spots_us": hot_spots(bodies[0], max(100, iterations // 4))}
               if with_hot_spots else {})}


def _one_request(chain: list[Any], flow: Any, response: Any) -> dict[tuple[str, str], int]:
    """Run every hook of the chain on `flow` in mitmproxy's event order, the upstream's
    `response` arriving between the request and the response hooks; ns per addon hook."""
    spent: dict[tuple[str, str], int] = {}
    for hook in HOOKS:
        if hook == "responseheaders" and flow.response is None:
            flow.response = response.copy()
        for addon in chain:
            method = getattr(addon, hook, None)
            if method is None:
                continue
            started = time.perf_counter_ns()
            result = method(flow)
            spent[(type(addon).__name__, hook)] = time.perf_counter_ns() - started
            if hasattr(result, "close"):
                result.close()  # an awaitable (a delay) would only wait: never the case here
    return spent


def hot_spots(body: bytes, number: int) -> dict[str, float]:
    """µs per call of the domain functions the hooks are made of, on the same exchange
    (best of five batches): where the time inside the addons goes.

    The classifier and the recorder each build their exchange afresh from the flow
    (`flows.exchange_of`), so what they call on it is timed on fresh exchanges too:
    a parsed body or resource cached on one exchange would make them look cheaper
    than they are in the chain.
    """
    from mpsdproxy import classify
    from mpsdproxy import recording
    from mpsdproxy import resources
    from mpsdproxy.addons import flows

    flow, response = realistic_flow(body)
    flow.response = response
    path = flow.request.path
    redactor = recording.Redactor()

    def fresh() -> Any:
        return flows.exchange_of(flow)

    exchange = fresh()
    record = recording.to_record(exchange, redactor, classify.classify(exchange))
    workdir = Path(tempfile.mkdtemp(prefix="bench-hot-"))
    with recording.Writer(workdir / "hot.jsonl") as writer:
        calls: dict[str, Callable[[], Any]] = {
            "resources.parse(path)": lambda: resources.parse(path),
            "json.loads(response body)": lambda: json.loads(body),
            "recording.encode_body(response body)": lambda: recording.encode_body(body),
            "flows.exchange_of(flow)": lambda: flows.exchange_of(flow),
            "recording.Writer.write(record)": lambda: writer.write(dict(record)),
            "response.get_content()": lambda: response.get_content(strict=False),
            "request.headers.items(multi=True)": lambda: list(
                flow.request.headers.items(multi=True)),
        }
        out = {name: min(timeit.repeat(fn, number=number, repeat=5)) * 1e6 / number
               for name, fn in calls.items()}
        on_fresh: dict[str, Callable[[Any], Any]] = {
            "classify.classify(exchange)": classify.classify,
            "recording.to_record(exchange)": lambda e: recording.to_record(
                e, redactor, record["classification"]),
        }
        out |= {name: _best_on_fresh(fresh, fn, number) for name, fn in on_fresh.items()}
    (workdir / "hot.jsonl").unlink(missing_ok=True)
    return out


def _best_on_fresh(make: Callable[[], Any], fn: Callable[[Any], Any], number: int,
                   repeat: int = 5) -> float:
    """µs per call of `fn` on an argument of its own each call, made by `make` before
    the clock starts (best of `repeat` batches of `number`)."""
    best = float("inf")
    for _ in range(repeat):
        items = [make() for _ in range(number)]
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / number


# --- the benchmark --------------------------------------------------------------------------

def run(config: Config, workdir: Path | None = None, log: Log = print) -> dict[str, Any]:
    """Measure everything part 1 reports; every process is stopped before returning."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    confdir = common.prepare_confdir(workdir / "confdir")
    bodies = session_bodies(config.paths)
    with_scenario = common.supported("mpsd_scenario")
    if with_scenario:
        write_scenario(workdir / "scenario.yaml")
    else:
        log("  mpsd_scenario is not available in this tree: 'full' runs without a scenario")
    paths = session_paths(config.paths)
    generator = measure.LoadGenerator(workdir, config.tool)
    size = round(statistics.median(len(b) for b in bodies.values()))
    result: dict[str, Any] = {"config": asdict(config), "tool": generator.tool,
                              "scenario": with_scenario, "body_bytes": size}
    with common.Services(workdir) as services:
        upstream, what = common.start_upstream(services, bodies, config.upstream)
        result["upstream"] = what
        result["upstream_direct"] = upstream_direct(generator, upstream, config, paths)
        log(f"  upstream {what}: {result['upstream_direct']['rps']:.0f} req/s direct")
        names, before_tree = config.variants, None
        if config.before:
            before_tree = common.tree_at(config.before, workdir / "before-tree")
            if before_tree is None:
                log(f"  revision {config.before} is not in this checkout: no 'before' variant")
            else:
                names = (*names, BEFORE)
                result["before"] = config.before
        proxies, result["launchers"] = start_proxies(services, upstream.url, confdir,
                                                     with_scenario, names,
                                                     config.instances, before_tree)
        if before_tree is not None:
            result["launchers"][BEFORE] = (f"PYTHONPATH=<git archive {config.before}> "
                                           + result["launchers"][BEFORE])
        targets = list(proxies.values())
        if config.warm_up:
            measure.interleave(generator, targets, 1, 1, min(config.seconds, 1.0), paths)
        result["by_connections"] = {}
        for connections in config.connections:
            log(f"  {connections} connection(s): {config.rounds} rounds x {len(targets)} "
                f"proxies x {config.seconds:g} s")
            runs = measure.interleave(generator, targets, connections, config.rounds,
                                     config.seconds, paths)
            result["by_connections"][connections] = summarise(runs)
        result["peak_rss_mb"] = {name: _largest(s.peak_rss_mb() for s in group)
                                 for name, group in proxies.items()}
        result["recorded_lines"] = sum(_count_records(p) for p in workdir.glob("full*.jsonl"))
        if config.instructions and not instructions.available():
            log("  valgrind is not installed: no instruction counts")
        elif config.instructions:
            log(f"  counting instructions under callgrind ({config.instructions} requests each)")
            try:
                result["instructions"] = count_instructions(
                    services, upstream.url, confdir, with_scenario, before_tree, paths,
                    config.instructions)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log(f"  the instructions could not be counted: {e}")
    log(f"  timing hooks in-process ({config.hook_iterations} requests)")
    result["hooks"] = time_hooks(config.hook_iterations, with_scenario, list(bodies.values()))
    if before_tree is not None and with_scenario:
        log(f"  timing hooks in-process beside {config.before} ({config.hook_rounds} rounds)")
        try:
            result["hooks_vs_before"] = hooks_side_by_side(
                before_tree, workdir, config.hook_iterations // 2, config.paths,
                config.hook_rounds)
        except (subprocess.SubprocessError, ValueError) as e:  # an older tree's chain
            log(f"  the hooks of {config.before} could not be timed beside today's: {e}")
    return result


def hooks_side_by_side(before_tree: Path, workdir: Path, iterations: int, paths: int,
                       rounds: int = 3) -> dict[str, Any]:
    """`time_hooks` of today's tree and of `before_tree`, each in processes of its own,
    alternating (`rounds` each, so a slow spell hits both), the same harness and
    flows: µs per request of each hook, the median over the rounds, by tree. Where the
    in-process gap between two revisions lies, hook by hook. A revision whose chain the
    harness cannot build raises CalledProcessError."""
    harness = workdir / "bench-harness"
    harness.mkdir(exist_ok=True)
    if not (harness / "bench").exists():
        (harness / "bench").symlink_to(common.BENCH, target_is_directory=True)
    code = ("import json, sys; from bench import overhead; "
            "r = overhead.time_hooks(int(sys.argv[1]), True, "
            "list(overhead.session_bodies(int(sys.argv[2])).values()), with_hot_spots=False); "
            "print(json.dumps(r['per_hook_us']))")
    trees = {"today": str(harness), "before": f"{harness}{os.pathsep}{before_tree}"}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, path in trees.items():
            done = subprocess.run([common.PYTHON, "-c", code, str(iterations), str(paths)],
                                  capture_output=True, text=True, timeout=600, check=True,
                                  cwd=workdir, env={**os.environ, "PYTHONPATH": path})
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"iterations": iterations, "rounds": rounds,
            "per_hook_us": {name: _median_by_key(times) for name, times in runs.items()}}


def _median_by_key(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(key for run in runs for key in run)
    return {key: statistics.median(run.get(key, 0.0) for run in runs) for key in keys}


def _largest(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return max(kept) if kept else None


def _count_records(path: Path) -> int:
    """Record lines of a recording (the format's header line is not one)."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.startswith(b'{"seq":'))
