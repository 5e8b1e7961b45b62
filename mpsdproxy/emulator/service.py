"""The session directory in memory: `Emulator.handle(request) -> response`, no I/O.

The request's way through: the overload switch (503), authentication (403,
400 without a contract version), the caller's FGRL windows (429), then the
route for the resource and method (404, 405) and its handler in `sessions`,
`handles`, `queries` or `matchmaking`. A handler answers by returning a
response or raising `Refusal`.

Timers (`timers.py`): before each request the stand-in fires the session
timers due by its clock, and after it records the member states the request
left, as the service updates sessions just before it serves a request. So
`clock` drives the timers as well as the FGRL windows.

Rate limits, per caller and per service (protocol notes §5.1: "the key is user
+ title, per service; each service counts separately"): the session directory
counts in the config's `rate_limit` (shipped 30 per 15 s, 300 per 300 s);
SmartMatch (hoppers, tickets) in 10 per 15 s and 100 per 300 s; search handles
in 1 per 15 s and 20 per 300 s, reads (`POST /handles/query` for type
`search`, GET of a search handle) and writes (`POST /handles` of type
`search`, DELETE of a search handle) each in their own windows, as the client
library's `get_search_handles`, `set_search_handle` and `clear_search_handle`
(multiplayer_service.cpp) send them. A request on a template that sets its
own `rate_limit` counts toward that template's windows as well, and is
throttled when either refuses it. Each set of windows decides as `fgrl.Caller`
does (its burst window counts the calls it admitted, its sustained window
every call), and Retry-After and the FGRL body come from the one that keeps
the caller waiting longest.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.emulator import handles
from mpsdproxy.emulator import matchmaking
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator import queries
from mpsdproxy.emulator import sessions
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import Overload
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.config import default_config
from mpsdproxy.emulator.documents import complete
from mpsdproxy.emulator.protocol import Identity
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.state import ChangeObserver
from mpsdproxy.emulator.state import Directory
from mpsdproxy.emulator.state import Session
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = ["Emulator", "Handler", "SERVICE_BUDGETS", "service_of"]

_AUTH = re.compile(r"XBL3\.0\s+x=([^;\s]+);(\S.*)", re.IGNORECASE | re.DOTALL)

Handler = Callable[[Directory, model.Request, Resource, Identity], model.Response]

#: Which handler answers which method, per kind of resource. A method missing
#: here for a known resource is a 405 whose Allow lists the keys.
_ROUTES: dict[str, dict[str, Handler]] = {
    "session": {"GET": sessions.get_session, "PUT": sessions.put_session},
    "member-me": {"GET": sessions.get_element, "PUT": sessions.put_element,
                  "DELETE": sessions.delete_element},
    "member-index": {"GET": sessions.get_element, "DELETE": sessions.delete_element},
    "server": {"GET": sessions.get_element, "PUT": sessions.put_element,
               "DELETE": sessions.delete_element},
    "properties": {"GET": sessions.get_element, "PUT": sessions.put_element},
    "handles": {"POST": handles.post_handle},
    "handle": {"GET": handles.get_handle, "DELETE": handles.delete_handle},
    "handle-session": {"GET": handles.get_handle_session, "PUT": handles.put_handle_session},
    "handle-query": {"POST": handles.query_handles},
    "hopper": {"POST": matchmaking.post_ticket},
    "hopper-stats": {"GET": matchmaking.hopper_stats},
    "ticket": {"GET": matchmaking.get_ticket, "DELETE": matchmaking.delete_ticket},
    "query": {"GET": queries.query_sessions},
    "batch": {"POST": queries.batch_query},
    "templates": {"GET": queries.list_templates},
    "template": {"GET": queries.get_template},
}

_PLAIN_KINDS = {Kind.SESSION: "session", Kind.SERVER: "server", Kind.PROPERTIES: "properties",
                Kind.HANDLE_SESSION: "handle-session", Kind.HANDLE_QUERY: "handle-query",
                Kind.QUERY: "query", Kind.BATCH: "batch"}


def _variant(resource: Resource) -> str | None:
    """The _ROUTES key for a resource; None when the URI names nothing (404)."""
    element = (resource.element or "").lower()
    if resource.kind in _PLAIN_KINDS:
        return _PLAIN_KINDS[resource.kind]
    match resource.kind:
        case Kind.MEMBER:
            index = element.removeprefix("members/")
            if index == "me":
                return "member-me"
            return "member-index" if index.isdigit() else None
        case Kind.HANDLE:
            return "handle" if element else "handles"
        case Kind.HOPPER:
            return "hopper-stats" if element else "hopper"
        case Kind.TICKET:
            return "ticket" if element else None
        case Kind.TEMPLATE:
            return "template" if resource.template else "templates"
    return None


#: The documented FGRL budgets per caller of the services besides the session directory
#: (whose budget is the config's `rate_limit`), protocol notes §5.1.
SERVICE_BUDGETS: dict[str, fgrl.Budget] = {
    "smartmatch": fgrl.Budget(10, 100),
    "search-handle-read": fgrl.Budget(1, 20),
    "search-handle-write": fgrl.Budget(1, 20),
}


def _body_type(request: model.Request) -> Any:
    body = request.json
    return body.get("type") if body is not jsonbody.INVALID and isinstance(body, dict) \
        else None


def service_of(directory: Directory, request: model.Request, resource: Resource) -> str:
    """Which service's FGRL windows a request counts toward: "mpsd", "smartmatch",
    "search-handle-read" or "search-handle-write"."""
    if resource.kind in (Kind.HOPPER, Kind.TICKET):
        return "smartmatch"
    method = request.method.upper()
    if resource.kind is Kind.HANDLE_QUERY and method == "POST":
        return "search-handle-read" if _body_type(request) == "search" else "mpsd"
    if resource.kind is not Kind.HANDLE:
        return "mpsd"
    if not resource.element:
        searching = method == "POST" and _body_type(request) == "search"
        return "search-handle-write" if searching else "mpsd"
    handle = directory.handles.get(resource.element.lower())
    if handle is None or handle.get("type") != "search":
        return "mpsd"
    return "search-handle-write" if method == "DELETE" else "search-handle-read"


class Emulator:
    """The session directory in memory. `handle` is pure request -> response (no I/O).

    `clock` drives the rate-limit windows and the session timers (inject one in
    tests, and advance it); `wallclock` gives the document timestamps, `nextTimer`
    and the Date header. Thread-safe: the server
    answers from its event loop while tests read state from another thread.
    """

    def __init__(self, config: EmulatorConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.config = config if config is not None else default_config()
        self.wallclock = wallclock
        self._clock = clock
        self._lock = threading.RLock()
        self._directory = Directory(self.config, wallclock, clock=clock)
        self._rates: dict[tuple[str, ...], fgrl.Callers] = {}
        self._outage: Overload | None = None
        self.reset()

    # -- state for scripts and other modules ---------------------------------------------

    def reset(self) -> None:
        """Forget every session, handle, ticket, identity and rate-limit window; the
        configured overload (if any) starts again."""
        with self._lock:
            self._directory.clear()
            self._rates.clear()
            self._outage = self.config.overload

    def overload(self, retry_after: int, requests: int | None = None) -> None:
        """Answer 503 with this Retry-After to the next `requests` MPSD requests (None: all,
        until `recover`). Raises ValueError for a Retry-After that is not whole seconds."""
        spec = Overload(retry_after, requests)
        with self._lock:
            self._outage = spec

    def recover(self) -> None:
        """End the overload at once (the next request is answered normally)."""
        with self._lock:
            self._outage = None

    @property
    def outage(self) -> Overload | None:
        """The overload now in force: its Retry-After and the requests it has left."""
        return self._outage

    @property
    def overloaded(self) -> bool:
        return self._outage is not None

    def session(self, key: str) -> tuple[dict[str, Any], str] | None:
        """A copy of the stored document and its ETag, by `scid~template~name` key."""
        with self._lock:
            self._tick()
            stored = self._directory.sessions.get(key.lower())
            if stored is None:
                return None
            return copy.deepcopy(stored.document), stored.etag

    def change(self, path: str) -> tuple[dict[str, Any], str] | None:
        """Another client changed the session at `path`: its changeNumber and ETag move on
        (as a handle creation moves them). The proxy's forced 412 calls this through
        `POST /_emulator/change`, so the newer session it hands out is real here: a retry
        with its ETag succeeds and a resend of the old one draws a real 412. A copy of the
        document and its new ETag, or None when there is no such session."""
        resource = resources.parse(path)
        if resource.kind is not Kind.SESSION or resource.key is None:
            return None
        with self._lock:
            self._tick()
            self._directory.touch(resource.key)
            self._directory.observe()
            return self.session(resource.key)

    def sessions(self) -> list[dict[str, Any]]:
        """Every stored session: key, path, changeNumber and ETag, ordered by key."""
        with self._lock:
            self._tick()
            return [
                {"key": s.key, "path": s.path, "changeNumber": s.document["changeNumber"],
                 "etag": s.etag}
                for s in sorted(self._directory.sessions.values(), key=lambda s: s.key)
            ]

    def seed(self, path: str, document: dict[str, Any], etag: str | None) -> None:
        """Store a session as it was seen elsewhere (a recording), under its path.

        A SCID or template the config does not list is learned as a plain
        template, so the seeded session can be read and written at once. A
        document recorded without its ETag (None) gets a fresh one. Raises
        ValueError for a path that is not a session's or a document that is
        not a JSON object.
        """
        resource = resources.parse(path)
        if resource.kind is not Kind.SESSION:
            raise ValueError(f"seed needs a session path (/serviceconfigs/{{scid}}/"
                             f"sessiontemplates/{{template}}/sessions/{{name}}), not {path!r}")
        if not isinstance(document, dict):
            raise ValueError(f"seed needs the session document as a JSON object, not "
                             f"{type(document).__name__}")
        if etag is not None and (not isinstance(etag, str) or not etag.strip()):
            raise ValueError(f"seed needs the session's ETag (or None), not {etag!r}")
        assert resource.scid and resource.template and resource.name
        with self._lock:
            directory = self._directory
            template = directory.find_template(resource.scid, resource.template)
            if template is None:
                template = TemplateConfig(resource.template)
                directory.learned[(resource.scid.lower(), resource.template.lower())] = template
            stored = complete(copy.deepcopy(document))
            session = Session(resource.scid, template, resource.name, stored,
                              etag.strip() if etag else directory.new_etag(stored))
            directory.sessions[session.key] = session
            directory.observe()

    # -- requests ------------------------------------------------------------------------

    def handle(self, request: model.Request) -> model.Response:
        """Answer one request as the session directory would."""
        with self._lock:
            self._tick()
            try:
                return self._dispatch(request)
            except Refusal as r:
                return protocol.refused(r, self.wallclock())
            finally:
                self._directory.observe()

    def watch(self, observer: ChangeObserver) -> Callable[[], None]:
        """Have `observer` hear of every later session change (`state.Change`: a write, a
        timer, a handle, matchmaking, `/_emulator/change`); the answer stops it. The RTA
        hub taps subscribers from it."""
        with self._lock:
            return self._directory.watch(observer)

    def _tick(self) -> None:
        """Fire the session timers and move matchmaking on, as far as the clock says (the
        service does so before it serves a request; the library's match client polls the
        ticket's session, not the ticket: multiplayer_match_client.cpp), and the state
        switches read what a request would."""
        self._directory.run_timers()
        matchmaking.advance(self._directory)
        self._directory.observe()

    def _dispatch(self, request: model.Request) -> model.Response:
        if self._outage is not None:
            return self._outage_reply()
        resource = request.resource
        who = _authenticate(request)
        protocol.check_signature(request, required=self.config.require_signature)
        self._throttle(request, who, resource)
        variant = _variant(resource)
        if variant is None:
            raise Refusal("404.not-found", f"The URI names no session directory resource: "
                                           f"{protocol.path_of(request)}")
        routes = _ROUTES[variant]
        method = request.method.upper()
        handler = routes.get(method)
        if handler is None:
            allow = ", ".join(routes)
            raise Refusal("405.method-not-allowed",
                          f"{method} is not allowed on {resource.short}; use {allow}.",
                          headers=[("Allow", allow)])
        return handler(self._directory, request, resource, who)

    def _outage_reply(self) -> model.Response:
        spec = self._outage
        assert spec is not None
        if spec.requests is not None:
            left = spec.requests - 1
            self._outage = replace(spec, requests=left) if left > 0 else None
        return protocol.reply("503.service-unavailable", self.wallclock(),
                              retry_after=spec.retry_after)

    def _throttle(self, request: model.Request, who: Identity, resource: Resource) -> None:
        """Count the request in the caller's FGRL windows; 429 when any refuses it."""
        service = service_of(self._directory, request, resource)
        budget = SERVICE_BUDGETS.get(service) or self.config.rate_limit.budget
        windows = [self._callers((service,), budget)]
        if resource.scid and resource.template:
            template = self._directory.find_template(resource.scid, resource.template)
            if template is not None and template.rate_limit is not None:
                key = (service, resource.scid.lower(), template.name.lower())
                windows.append(self._callers(key, template.rate_limit.budget))
        now = self._clock()
        refused = [d for d in (w.admit(who.user, now) for w in windows) if not d.ok]
        if refused:
            worst = max(refused, key=lambda d: d.retry_after)
            raise Refusal("429.too-many-requests", faults.encode_json(fgrl.message(worst)),
                          retry_after=worst.retry_after)

    def _callers(self, key: tuple[str, ...], budget: fgrl.Budget) -> fgrl.Callers:
        """The callers' windows for one budget (a service's, or one template's)."""
        callers = self._rates.get(key)
        if callers is None:
            callers = self._rates[key] = fgrl.Callers(budget)
        return callers


def _authenticate(request: model.Request) -> Identity:
    """Who calls, from `Authorization: XBL3.0 x=<userhash>;<token>` (403 without it), and
    the contract version (400 without it)."""
    auth = request.headers.first("Authorization")
    match = _AUTH.fullmatch(auth.strip()) if auth else None
    if match is None:
        raise Refusal("403.forbidden", "Authorization failed: the request needs "
                                       "'Authorization: XBL3.0 x=<userhash>;<token>'.")
    version = request.headers.first("x-xbl-contract-version")
    if version is None:
        raise Refusal("400.bad-request", "The x-xbl-contract-version header is required.")
    if not version.strip().isdigit():
        raise Refusal("400.bad-request", f"x-xbl-contract-version should be a whole "
                                         f"number, not {version!r}.")
    return Identity(match[1], int(version))
