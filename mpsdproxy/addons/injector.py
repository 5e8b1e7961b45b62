"""FaultInjector: answer, delay, hold, drop or cut session-directory requests as scenarios say.

Scenario files (`mpsd_scenario`) are loaded with `scenario.load` and applied
by `scenario.Engine`; this addon only translates flows to the engine's
`RequestView` and its decisions back to mitmproxy:

- a status (or throttling) answers with `faults.build`, so the answer is the
  table's row: its content type, body kind and required headers. A row that
  returns the session (412 to If-Match, 403 read-only, 200, 201) carries the
  whole document and ETag the proxy last saw for that session
  (`sessions.SessionTracker`); when it has none it reads the session from the
  service once (a GET, which needs no If-Match) and says so in the log; when
  that fails too, a 412 falls back to the bodiless `412.precondition-failed`
  (a 403 to `403.forbidden`; a 200 or 201 lets the request through), and the
  log says why. Only real answers (forwarded ones) teach the tracker;
- `delay` waits without blocking other flows (an awaitable hook), then goes on;
- `drop` closes the client connection with no answer (`flow.kill()`: an
  orderly close, FIN, on HTTP/1; RST_STREAM on HTTP/2); in phase response the
  real answer is taken off the flow, so the recording says the title got none;
- `reset` closes it abruptly: on HTTP/1, SO_LINGER 0 on the client socket
  before the kill, so the kernel sends a TCP RST (the client sees "connection
  reset by peer"); where the socket cannot be reached (WireGuard and local
  modes) it degrades to `drop` and logs so. On HTTP/2 the kill already resets
  the stream (RST_STREAM) and the connection's other requests go on;
- `hang` holds the request unanswered until the client closes its side, and at
  most `mpsd_hang_max` seconds, then kills the flow;
- `truncate` sends the answer with its full Content-Length but only part of the
  body, then closes the connection (`Connection: close` on HTTP/1), so the
  client sees a short read rather than waiting for bytes that never come (on
  HTTP/2 the stream ends short of its Content-Length);
- `phase: response` rules act on forwarded exchanges once the real answer is
  back: the service applied the request, the title hears something else.

Several scenarios are tried in the order given, each as a whole: the first
that fires answers, and a request one scenario answered is not counted by the
later ones (as if each were a proxy in front of the next). Every rule's match
and fire counts are logged and printed when the proxy stops.

Scenario files are watched while the proxy runs: a good edit replaces the
scenario (its counters start over, its time windows still count from the
proxy's start); a broken one is logged with its problem lines and the
previous scenario stays in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import functools
import logging
import os
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from http import client as httpclient
from typing import Any
from urllib.parse import urlsplit

import certifi
from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import ConnectionState
from mitmproxy.log import ALERT

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import scenario
from mpsdproxy import sessions
from mpsdproxy.addons import common
from mpsdproxy.addons import later
from mpsdproxy.resources import Resource
from mpsdproxy.scenario import Phase

logger = logging.getLogger(__name__)

#: Seconds between two looks at the scenario files' modification times.
RELOAD_INTERVAL = 0.5
#: Default for mpsd_hang_max: how long a `hang` holds a request at most.
DEFAULT_HANG_MAX = 300
#: Seconds a held request waits between two looks at its client connection.
HANG_POLL = 0.1
#: Seconds the one GET that reads a missing session from the service may take.
FETCH_TIMEOUT = 5.0

Stamp = tuple[int, int, int]


def _stamp(path: str) -> Stamp:
    """What identifies one version of a file; raises OSError when it cannot be read."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass
class Loaded:
    """One scenario in force, the engine that applies it, and the file version it came from."""

    path: str
    scenario: scenario.Scenario
    engine: scenario.Engine
    stamp: Stamp | None
    reported: Stamp | str | None = None  # the broken version (or read error) last logged


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that fired, with the scenario it belongs to."""

    loaded: Loaded
    firing: scenario.Firing

    @property
    def rule(self) -> scenario.Rule:
        return self.firing.rule

    @property
    def fault(self) -> scenario.Fault:
        return self.firing.rule.fault


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """Where and how to read a session from the service: the server the flow goes to,
    with the caller's credentials (a GET needs no signature, protocol notes §2.3)."""

    scheme: str
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...]
    verify: bool = True
    cafile: str | None = None  # trusted CAs, as mitmproxy's own upstream connections use
    capath: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


#: Request headers the session read copies from the flow.
_FETCH_HEADERS = ("Authorization", "x-xbl-contract-version", "Accept-Language")


def load_scenarios(paths: Sequence[str]) -> list[scenario.Scenario]:
    """Every scenario file, loaded and validated; ValueError with every problem line of
    every broken file (`file:line:column: key.path: what is wrong`)."""
    loaded, problems = [], []
    for path in paths:
        try:
            loaded.append(scenario.load(path))
        except scenario.ScenarioError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("\n".join(problems))
    return loaded


def _replayed(flow: http.HTTPFlow) -> bool:
    """Whether the replay (or its stand-in) answered this flow."""
    return common.provenance(flow).get("source") in ("replayed", "emulated")


def request_view(flow: http.HTTPFlow) -> scenario.RequestView:
    """The flow's request as the engine sees it: the host the title addressed (before
    any redirect to an upstream), and the caller by its redacted Authorization."""
    info = common.mark(flow) or {}
    request = flow.request
    fields = request.headers.fields
    url = info.get("url") or request.url
    auth = common.header(fields, b"authorization")
    user = recording.redact_value(auth) if auth else ""
    peer = flow.client_conn.peername
    client = user or (str(peer[0]) if peer else "")
    return scenario.RequestView(
        method=request.method,
        path=request.path,
        host=_hostname(url) or request.host,
        headers=fields,
        resource=common.resource(flow),
        client=client,
        user=user,
    )


@functools.lru_cache(maxsize=1024)
def _hostname(url: str) -> str | None:
    """The host of a URL; a title sends the same few URLs over and over."""
    return urlsplit(url).hostname


def service_headers(now: float | None = None) -> list[tuple[str, str]]:
    """What the service puts on every answer (protocol notes §2.2), so an injected answer
    looks like one from the service."""
    return [
        ("Date", email.utils.formatdate(time.time() if now is None else now, usegmt=True)),
        ("X-XblCorrelationId", str(uuid.uuid4())),
        ("X-Content-Type-Options", "nosniff"),
    ]


def to_response(reply: faults.Reply, http_version: str) -> http.Response:
    """A Reply as a mitmproxy response, sent byte for byte; every status that may carry
    a body gets a Content-Length, so an HTTP/1 client never reads until close."""
    headers = http.Headers([
        (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
        for k, v in reply.headers
    ])
    if reply.status not in (204, 304) and "content-length" not in headers:
        headers["Content-Length"] = str(len(reply.body))
    now = time.time()
    return http.Response(http_version.encode(), reply.status,
                         reply.reason.encode("iso-8859-1", "replace"), headers, reply.body,
                         None, now, now)


def with_overrides(reply: faults.Reply, fault: scenario.Fault) -> faults.Reply:
    """The rule's `body`, `content_type` and `headers` on top of the table's answer
    (a header given as null is removed)."""
    headers = list(reply.headers)
    body = reply.body if fault.body is None else fault.body
    if fault.content_type is not None:
        headers = _set_header(headers, "Content-Type", fault.content_type)
    for name, value in fault.headers:
        headers = _set_header(headers, name, value)
    return dataclasses.replace(reply, headers=headers, body=body)


def _set_header(headers: list[tuple[str, str]], name: str,
                value: str | None) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    if value is not None:
        out.append((name, value))
    return out


def edit_response(response: http.Response, fault: scenario.Fault) -> None:
    """Apply `body`, `content_type`, `headers` and `retry_after` to a real answer."""
    if fault.body is not None:
        response.headers.pop("content-encoding", None)
        response.content = fault.body
    if fault.content_type is not None:
        response.headers["Content-Type"] = fault.content_type
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    for name, value in fault.headers:
        if value is None:
            response.headers.pop(name, None)
        else:
            response.headers[name] = value


def truncate(response: http.Response, fault: scenario.Fault, http_version: str) -> bool:
    """Cut the body short while the headers still promise all of it; whether there was
    anything to cut. On HTTP/1 the connection is closed after the short body, so the
    client sees a short read at once instead of waiting for the missing bytes."""
    raw = response.raw_content or b""
    if not raw:
        return False
    response.raw_content = fault.cut(raw)
    response.headers.pop("transfer-encoding", None)
    response.headers["Content-Length"] = str(len(raw))
    if http_version.upper().startswith("HTTP/1"):
        response.headers["Connection"] = "close"
    return True


def _http_get(target: FetchTarget) -> tuple[int, list[tuple[str, str]], bytes]:
    """One blocking GET (run in a thread); raises OSError or HTTPException."""
    if target.scheme == "https":
        cafile = target.cafile if target.cafile or target.capath else certifi.where()
        context = ssl.create_default_context(cafile=cafile, capath=target.capath)
        if not target.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn: httpclient.HTTPConnection = httpclient.HTTPSConnection(
            target.host, target.port, timeout=FETCH_TIMEOUT, context=context)
    else:
        conn = httpclient.HTTPConnection(target.host, target.port, timeout=FETCH_TIMEOUT)
    try:
        conn.request("GET", target.path, headers=dict(target.headers))
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def fetch_target(flow: http.HTTPFlow, resource: Resource) -> FetchTarget:
    """The GET that reads the session of `resource` from where the flow goes."""
    request = flow.request
    headers = [("Host", request.host_header or request.pretty_host),
               ("Accept", "application/json")]
    headers += [(name, value) for name in _FETCH_HEADERS
                if (value := request.headers.get(name)) is not None]
    options = ctx.options
    assert resource.session_path is not None
    return FetchTarget(request.scheme, request.host, request.port, resource.session_path,
                       tuple(headers), not options.ssl_insecure,
                       options.ssl_verify_upstream_trusted_ca,
                       options.ssl_verify_upstream_trusted_confdir)


def end_without_answer(flow: http.HTTPFlow) -> None:
    """Close the client connection with no answer. In phase response the real answer is
    taken off the flow too, so the classifier and the recorder describe what the title
    got (nothing); its status stays in the provenance as `lost_status`."""
    if flow.response is not None:
        _note_lost(flow)
        flow.response = None
    flow.kill()


def _note_lost(flow: http.HTTPFlow) -> None:
    """Keep the status of a real answer the title never gets, for the recording."""
    info = common.mark(flow)
    if info is not None and flow.response is not None:
        info["provenance"]["lost_status"] = flow.response.status_code


def _client_socket(flow: http.HTTPFlow) -> Any:
    """The client connection's socket, from mitmproxy's connection handler (None when
    unreachable: not a live TCP connection, or a mode without sockets)."""
    try:
        handler = ctx.master.addons.get("proxyserver").connections[flow.client_conn.id]
        writer = handler.transports[handler.client].writer
        return writer.get_extra_info("socket")
    except (AttributeError, KeyError, TypeError):
        return None


def _kind(fault: scenario.Fault, phase: Phase) -> str:
    """A one-word name for what the fault does, for provenance and logs."""
    if fault.connection:
        return fault.connection
    if fault.throttle is not None:
        return "throttle"
    if fault.status is not None:
        return "status"
    if fault.truncate:
        return "truncate"
    if phase is Phase.RESPONSE and (fault.body is not None or fault.headers
                                    or fault.content_type or fault.retry_after is not None):
        return "edit"
    return "delay"


class FaultInjector:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.origin = clock()  # time windows count from here: the proxy's start
        self.loaded: list[Loaded] = []
        self.tracker = sessions.SessionTracker()
        self.inject = True
        self.hang_max = float(DEFAULT_HANG_MAX)
        self._watcher: asyncio.Task[None] | None = None

    # -- options -------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_scenario", Sequence[str], [],
            "Inject faults into session-directory traffic as these YAML scenario files say "
            "(see scenarios/). Each is checked before the proxy starts; edits while it runs "
            "are reloaded, and a broken edit leaves the previous version in force.",
        )
        loader.add_option(
            "mpsd_inject", bool, True,
            "The kill switch: when off, no scenario injects anything (their rules stay "
            "loaded and their counters stop).",
        )
        loader.add_option(
            "mpsd_hang_max", int, DEFAULT_HANG_MAX,
            "Seconds a request held by a `hang` fault waits for its client to give up "
            "before the proxy closes the connection itself.",
        )

    def configure(self, updated: set[str]) -> None:
        if "mpsd_hang_max" in updated:
            value = ctx.options.mpsd_hang_max
            if value < 1:
                raise exceptions.OptionsError(
                    f"Cannot parse mpsd_hang_max option {value}: should be at least 1 second")
            self.hang_max = float(value)
        if "mpsd_scenario" in updated:
            self.loaded = self._load_all(ctx.options.mpsd_scenario)
        if "mpsd_inject" in updated:
            self.inject = ctx.options.mpsd_inject
            if not self.inject and self.loaded:
                logger.info("Fault injection is off (mpsd_inject)")

    def _load_all(self, paths: Sequence[str]) -> list[Loaded]:
        """Load every scenario, or none: a broken one raises and the old set stays.

        A file already in force and unchanged keeps its engine, counters included, so
        the rollback of a refused option change does not restart the pass.
        """
        current = {item.path: item for item in self.loaded}
        stamps: dict[str, Stamp | None] = {}
        for path in paths:
            try:
                stamps[path] = _stamp(path)
            except OSError:
                stamps[path] = None  # scenario.load reports why
        kept = {path: current[path] for path in paths
                if path in current and stamps[path] is not None
                and current[path].stamp == stamps[path]}
        fresh = [path for path in paths if path not in kept]
        try:
            found = dict(zip(fresh, load_scenarios(fresh), strict=True))
        except ValueError as e:
            raise exceptions.OptionsError(
                f"Cannot load mpsd_scenario option {', '.join(paths)}:\n{e}") from e
        loaded = []
        for path in paths:
            if path in kept:
                loaded.append(kept[path])
                continue
            item = Loaded(path, found[path], scenario.Engine(found[path], start=self.origin),
                          stamps[path])
            logger.info(f"Injecting faults from {path}: {_summary(item.scenario)}")
            loaded.append(item)
        return loaded

    # -- hot reload ----------------------------------------------------------------------

    def running(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            try:
                self.reload_changed()
            except Exception as e:  # noqa: BLE001 - a watcher crash must not end reloading
                logger.exception(f"Checking mpsd_scenario files for edits failed: {e}")

    def reload_changed(self) -> list[str]:
        """Reload every scenario file edited since it was loaded; the paths reloaded.

        A broken edit is logged once with its problem lines and changes nothing.
        """
        reloaded = []
        for i, item in enumerate(self.loaded):
            fresh = self._reload(item)
            if fresh is not None:
                self.loaded[i] = fresh
                reloaded.append(item.path)
        return reloaded

    def _reload(self, item: Loaded) -> Loaded | None:
        try:
            stamp = _stamp(item.path)
        except OSError as e:
            self._report(item, f"{e}", f"Cannot read mpsd_scenario file {item.path} "
                                       f"({e.strerror or e}); the loaded version stays in force")
            return None
        if stamp == item.stamp or stamp == item.reported:
            return None
        try:
            fresh = scenario.load(item.path)
        except scenario.ScenarioError as e:
            self._report(item, stamp, f"Not reloading {item.path}: the edit is broken, the "
                                      f"previous version stays in force:\n{e}")
            return None
        engine = scenario.Engine(fresh, start=item.engine.start)
        engine.enabled = item.engine.enabled
        logger.info(f"Reloaded {item.path}: {_summary(fresh)} (counters start over)")
        return Loaded(item.path, fresh, engine, stamp)

    @staticmethod
    def _report(item: Loaded, version: Stamp | str, message: str) -> None:
        if item.reported != version:
            item.reported = version
            logger.error(message)

    # -- commands ------------------------------------------------------------------------

    @command.command("mpsd.inject.on")
    def inject_on(self) -> None:
        """Turn fault injection back on (undo mpsd.inject.off)."""
        ctx.options.update(mpsd_inject=True)
        logger.log(ALERT, "Fault injection is on")

    @command.command("mpsd.inject.off")
    def inject_off(self) -> None:
        """The kill switch: stop all fault injection at once (scenarios stay loaded)."""
        ctx.options.update(mpsd_inject=False)
        logger.log(ALERT, "Fault injection is off: every request is forwarded untouched")

    @command.command("mpsd.rule.enable")
    def rule_enable(self, name: str) -> None:
        """Turn one scenario rule back on, by name."""
        self._switch_rule(name, True)

    @command.command("mpsd.rule.disable")
    def rule_disable(self, name: str) -> None:
        """Turn one scenario rule off, by name; the other rules go on."""
        self._switch_rule(name, False)

    @command.command("mpsd.scenario.enable")
    def scenario_enable(self, name: str) -> None:
        """Turn a whole scenario back on, by its name."""
        self._switch_scenario(name, True)

    @command.command("mpsd.scenario.disable")
    def scenario_disable(self, name: str) -> None:
        """Turn a whole scenario off, by its name; other scenarios go on."""
        self._switch_scenario(name, False)

    @command.command("mpsd.counters.reset")
    def counters_reset(self) -> None:
        """Start the pass over: forget every rule's counts and random draws, and count
        the time windows from now."""
        now = self.clock()
        for item in self.loaded:
            item.engine.reset(start=now)
        logger.log(ALERT, "Scenario counters reset")

    @command.command("mpsd.counters")
    def counters(self) -> None:
        """Log each rule's match and fire counts."""
        for line in self.count_lines():
            logger.log(ALERT, line)

    def _switch_rule(self, name: str, on: bool) -> None:
        found = [item for item in self.loaded
                 if any(r.name.lower() == name.lower() for r in item.scenario.rules)]
        if not found:
            names = ", ".join(r.name for item in self.loaded for r in item.scenario.rules)
            raise exceptions.CommandError(
                f"No rule named {name!r}. Valid rules are: {names or '(no scenario loaded)'}")
        for item in found:
            item.engine.set_enabled(on, name)
        logger.log(ALERT, f"Rule {name} is {'on' if on else 'off'}")

    def _switch_scenario(self, name: str, on: bool) -> None:
        found = [item for item in self.loaded if item.scenario.name.lower() == name.lower()]
        if not found:
            names = ", ".join(item.scenario.name for item in self.loaded)
            raise exceptions.CommandError(
                f"No scenario named {name!r}. Valid scenarios are: "
                f"{names or '(none loaded)'}")
        for item in found:
            item.engine.set_enabled(on)
        logger.log(ALERT, f"Scenario {name} is {'on' if on else 'off'}")

    def count_lines(self) -> list[str]:
        """One line per rule: `scenario: rule: N matched, M fired`."""
        return [f"{item.scenario.name}: {line}"
                for item in self.loaded for line in item.engine.stats_lines()]

    # -- hooks ---------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A replayed answer is still open to faults: "faults on top of a replay".
        if flow.error or not flow.live or (flow.response and not _replayed(flow)):
            return None
        if not self.loaded or not self.inject or common.mark(flow) is None:
            return None
        hit = self._evaluate(request_view(flow), Phase.REQUEST)
        return self._act(flow, hit, Phase.REQUEST) if hit is not None else None

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.error or not flow.live or flow.response is None:
            return None
        if not self.loaded or common.mark(flow) is None:
            return None
        if _replayed(flow):
            if not self.inject or not self._has(Phase.RESPONSE):
                return None
            hit = self._evaluate(request_view(flow), Phase.RESPONSE)
            return self._act(flow, hit, Phase.RESPONSE) if hit is not None else None
        if not self._from_service(flow):
            return None
        if not self.inject or not self._has(Phase.RESPONSE):
            # No rule can answer from this session now: learning it can wait until the
            # answer is out (and still comes before the title's next request is read).
            later.soon(self.learn, flow)
            return None
        self.learn(flow)
        hit = self._evaluate(request_view(flow), Phase.RESPONSE)
        return self._act(flow, hit, Phase.RESPONSE) if hit is not None else None

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        lines = self.count_lines()
        if not lines:
            return
        print("Fault injection counts:", flush=True)
        for line in lines:
            logger.info(f"Fault injection counts: {line}")
            print(f"  {line}", flush=True)

    # -- deciding ------------------------------------------------------------------------

    @staticmethod
    def _from_service(flow: http.HTTPFlow) -> bool:
        """Whether the answer came from the service (forwarded, maybe after a delay)
        rather than from this proxy, a replay or the stand-in."""
        provenance = common.provenance(flow)
        return provenance.get("source") == "forwarded" or bool(provenance.get("forwarded"))

    def learn(self, flow: http.HTTPFlow) -> sessions.Update:
        """Keep the tracked session state in step with a real answer."""
        assert flow.response is not None
        request, response = flow.request, flow.response
        method = request.method
        request_body = common.content(request) if method == "POST" else None
        return self.tracker.observe(method, request.path, response.status_code,
                                    response.headers.fields, common.content(response), request_body)

    def _has(self, phase: Phase) -> bool:
        """Whether any loaded rule acts in this phase (else there is nothing to evaluate)."""
        for item in self.loaded:
            if phase in item.engine.phases:
                return True
        return False

    def _evaluate(self, view: scenario.RequestView, phase: Phase) -> Hit | None:
        now = self.clock()
        for item in self.loaded:
            firing = item.engine.evaluate(view, phase, now)
            if firing is not None:
                return Hit(item, firing)
        return None

    # -- acting --------------------------------------------------------------------------

    def _act(self, flow: http.HTTPFlow, hit: Hit, phase: Phase) -> Awaitable[None] | None:
        """Apply a fired rule now, or return what mitmproxy should await to apply it."""
        self._mark(flow, hit, phase)
        logger.debug(f"{flow.request.method} {flow.request.url}: rule {hit.rule.name} of "
                     f"{hit.loaded.scenario.name} fired ({_kind(hit.fault, phase)})")
        if hit.firing.delay > 0 or hit.fault.hang or self._needs_fetch(flow, hit):
            return self._act_later(flow, hit, phase)
        try:
            self._apply(flow, hit, phase)
        except Exception as e:  # noqa: BLE001 - an injector bug must not break the title
            self._failed(flow, hit, e)
        return None

    async def _act_later(self, flow: http.HTTPFlow, hit: Hit, phase: Phase) -> None:
        try:
            await self._wait_and_apply(flow, hit, phase)
        except Exception as e:  # noqa: BLE001 - an injector bug must not break the title
            self._failed(flow, hit, e)

    @staticmethod
    def _failed(flow: http.HTTPFlow, hit: Hit, e: Exception) -> None:
        """Log a rule that could not be applied; the exchange goes on as if it had not fired."""
        logger.exception(f"{flow.request.method} {flow.request.url}: rule {hit.rule.name} "
                         f"could not be applied: {e}")
        common.set_provenance(flow, **common.FORWARDED, skipped_rule=hit.rule.name,
                              note=f"the injector failed: {e}")

    async def _wait_and_apply(self, flow: http.HTTPFlow, hit: Hit, phase: Phase) -> None:
        if hit.firing.delay > 0:
            await asyncio.sleep(hit.firing.delay)
        if flow.error or not flow.live:
            return
        if hit.fault.hang:
            await self._hang(flow, hit)
            return
        fetched = None
        if self._needs_fetch(flow, hit):
            fetched = await self._fetch(flow, hit)
        self._apply(flow, hit, phase, fetched)

    def _apply(self, flow: http.HTTPFlow, hit: Hit, phase: Phase,
               fetch_failure: str | None = None) -> None:
        fault = hit.fault
        if fault.drop:
            end_without_answer(flow)
            return
        if fault.reset:
            self._reset(flow, hit)
            return
        if fault.answers:
            reply = self._reply(flow, hit, fetch_failure)
            if reply is None:
                return
            if flow.response is not None:
                _note_lost(flow)
            version = flow.response.http_version if flow.response else flow.request.http_version
            flow.response = to_response(reply, version)
        elif phase is Phase.RESPONSE and flow.response is not None:
            edit_response(flow.response, fault)
        if fault.truncate and flow.response is not None:
            if not truncate(flow.response, fault, flow.request.http_version):
                logger.warning(f"{flow.request.method} {flow.request.url}: rule "
                               f"{hit.rule.name} found no body to truncate")

    def _mark(self, flow: http.HTTPFlow, hit: Hit, phase: Phase) -> None:
        """Provenance for the recording and the live log: which rule of which scenario
        (name and seed, so the pass can be rerun with the same faults), and what it did."""
        scn = hit.loaded.scenario
        kind = _kind(hit.fault, phase)
        extra: dict[str, Any] = {"fault": kind}
        if hit.firing.delay > 0:
            extra["delay_ms"] = round(hit.firing.delay * 1000, 3)
        if kind == "delay" and phase is Phase.REQUEST:
            extra["forwarded"] = True  # the answer is the service's own
        if hit.firing.throttle is not None:
            extra["retry_after"] = hit.firing.throttle.retry_after
        common.set_provenance(flow, source="injected", rule=hit.rule.name, scenario=scn.name,
                              seed=scn.seed, phase=phase.value, **extra)

    # -- answers -------------------------------------------------------------------------

    def _row(self, flow: http.HTTPFlow, fault: scenario.Fault) -> catalog.Entry | None:
        request = flow.request
        return fault.row(request.method, common.resource(flow), request.headers.fields)

    def _needs_fetch(self, flow: http.HTTPFlow, hit: Hit) -> bool:
        """Whether the answer needs a session document the tracker does not have."""
        if not hit.fault.answers:
            return False
        entry = self._row(flow, hit.fault)
        if entry is None or not _needs_session(entry, hit.fault):
            return False
        resource = common.resource(flow)
        if resource is None or resource.key is None:
            return False
        return self.tracker.get(resource.key) is None

    async def _fetch(self, flow: http.HTTPFlow, hit: Hit) -> str | None:
        """Read the flow's session from the service once; None when it is now tracked,
        else why not."""
        resource = common.resource(flow)
        assert resource is not None and resource.key is not None
        target = fetch_target(flow, resource)
        logger.info(f"Rule {hit.rule.name}: no session seen yet for {resource.short}; "
                    f"reading it from the service (GET {target.url})")
        try:
            status, headers, body = await asyncio.to_thread(_http_get, target)
        except (OSError, httpclient.HTTPException) as e:
            return f"reading it from the service failed: {e}"
        self.tracker.observe("GET", target.path, status, headers, body)
        if self.tracker.get(resource.key) is not None:
            info = common.mark(flow)
            if info is not None:
                info["provenance"]["session_read"] = target.url
            return None
        if status != 200:
            return f"the service answered the read with {status}"
        return "the service's answer was not a whole session document"

    def _reply(self, flow: http.HTTPFlow, hit: Hit,
               fetch_failure: str | None) -> faults.Reply | None:
        """The table's answer for the fired rule, overrides applied; None (the flow goes
        on untouched) when the row needs a session and none can be had."""
        fault = hit.fault
        entry = self._row(flow, fault)
        assert entry is not None  # scenario validation guarantees a row for an answer
        resource = common.resource(flow)
        key = resource.key if resource is not None else None
        tracked = self.tracker.get(key) if key else None
        extra = service_headers()
        session, etag = None, None
        if _needs_session(entry, fault):
            why = fetch_failure
            if tracked is not None and tracked.etag is None and "ETag" in entry.required_headers:
                tracked, why = None, "it was seen without an ETag"
            if tracked is None:
                fallback = self._without_session(flow, hit, entry, why)
                if fallback is None:
                    return None
                entry = fallback
            else:
                session = tracked.document() if fault.body is None else {}
                etag = tracked.etag
                if entry.status < 300:
                    extra.append(("Content-Location", tracked.path))
        elif entry.returns_session:
            session = {}  # the rule's own body replaces it
        if entry.status == 304 and tracked is not None and tracked.etag:
            extra.append(("ETag", tracked.etag))
        reply = faults.build(entry, session=session, etag=etag, message=self._message(hit),
                             retry_after=self._retry_after(hit), extra_headers=extra)
        return with_overrides(reply, fault)

    def _without_session(self, flow: http.HTTPFlow, hit: Hit, entry: catalog.Entry,
                         why: str | None) -> catalog.Entry | None:
        """A row of the same status that needs no session (412 -> precondition-failed,
        403 -> forbidden), or None to let the request through; logged either way."""
        resource = common.resource(flow)
        about = resource.short if resource is not None and resource.key else flow.request.path
        why = why or "it names no session"
        fallback = next((e for e in catalog.for_status(entry.status)
                         if not e.returns_session), None)
        where = f"{flow.request.method} {about}: rule {hit.rule.name}"
        if fallback is None:
            logger.warning(f"{where} cannot answer {entry.id} without the session ({why}); "
                           f"the request goes on untouched")
            common.set_provenance(flow, **common.FORWARDED, skipped_rule=hit.rule.name,
                                  note=f"{entry.id} needs the session: {why}")
            return None
        logger.warning(f"{where} answers {fallback.id} instead of {entry.id}: no session "
                       f"document ({why})")
        info = common.mark(flow)
        if info is not None:
            info["provenance"]["entry_fallback"] = fallback.id
        return fallback

    @staticmethod
    def _message(hit: Hit) -> bytes | None:
        """The FGRL message with the throttle's real numbers (None: the table's default)."""
        decision = hit.firing.throttle
        if decision is None:
            return None
        return faults.encode_json(
            faults.fgrl_message(decision.current, decision.maximum, decision.period))

    @staticmethod
    def _retry_after(hit: Hit) -> int | None:
        decision = hit.firing.throttle
        return decision.retry_after if decision is not None else hit.fault.retry_after

    # -- connection faults ---------------------------------------------------------------

    def _reset(self, flow: http.HTTPFlow, hit: Hit) -> None:
        """Abort the client connection: with SO_LINGER 0 the close sends a TCP RST. On
        HTTP/2 the kill already resets just this stream (RST_STREAM), leaving the other
        requests on the connection alone."""
        if not flow.request.http_version.upper().startswith("HTTP/1"):
            end_without_answer(flow)
            return
        sock = _client_socket(flow)
        try:
            if sock is None:
                raise OSError("no socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:
            logger.warning(f"{flow.request.method} {flow.request.url}: rule {hit.rule.name} "
                           f"cannot reset this connection ({e}); it is closed instead")
        end_without_answer(flow)

    async def _hang(self, flow: http.HTTPFlow, hit: Hit) -> None:
        """Hold the request unanswered until the client goes away, at most mpsd_hang_max
        seconds; then end the flow without an answer."""
        started = time.monotonic()
        deadline = started + self.hang_max
        while flow.live and not flow.error and time.monotonic() < deadline:
            if not flow.client_conn.state & ConnectionState.CAN_READ:
                break
            await asyncio.sleep(min(HANG_POLL, max(0.0, deadline - time.monotonic())))
        info = common.mark(flow)
        if info is not None:
            info["provenance"]["held_s"] = round(time.monotonic() - started, 3)
        if flow.killable:
            end_without_answer(flow)


def _needs_session(entry: catalog.Entry, fault: scenario.Fault) -> bool:
    """Whether answering with this row takes the tracked session: its document (unless
    the rule gives a body of its own) or its ETag (which the row must carry)."""
    if not entry.returns_session:
        return False
    return fault.body is None or "ETag" in entry.required_headers


def _summary(s: scenario.Scenario) -> str:
    rules = ", ".join(r.name for r in s.rules)
    return f"scenario {s.name} (seed {s.seed}), {len(s.rules)} rule(s): {rules}"
