"""What the rules know and keep: the facts of one exchange, and bounded per-key state.

`facts_of` reads a `model.Exchange` once into `Facts`: who the client is,
which service's budget the call counts against, what "the same call" and "the
same resource" mean. Every rule reads those fields instead of working them out
again.

Who "the client" is: the user, from the Authorization value (`recording.user_of`:
the XBL `x=` user hash, hashed, which survives token refreshes; the same value
a recording's redacted header gives, so live verdicts and a report agree and
no verdict ever carries a token), else the client's address without its port
(a new connection is the same title).

Who "the console" is: the client's address without its port, as the Trace
Analyzer groups a trace by console (ServiceCallData.cs DeserializeFiddlerTrace,
~L120: frames grouped by the `x-clientip` Fiddler flag, which the SAZ reader
turns into the address).

Which calls the Trace Analyzer analyses (`analysed`): those its
`Utils.IsAnalyzedService` (Utils.cs ~L105) lets through, the client library's
own calls: `User-Agent` containing `XboxServicesAPI` without an
`x-xbl-client-name` header, `x-xbl-api-build-version: adk`, an
`X-XBL-Build-Version` or `X-AuthXToken` header, or exactly the custom user
agent it was given. A websocket upgrade (the RTA connection) is not a service
call and is never analysed. The call-pattern rules that follow the analyzer
judge only these.

`Keyed` is the only state a rule holds between exchanges: per-key values, each
with a deadline, at most `limit` keys, so memory stays flat however long the
recording.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Sequence
from typing import Generic
from typing import NamedTuple
from typing import TypeVar

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "BATCH_KINDS",
    "HostKey",
    "PlaceKey",
    "RequestKey",
    "SessionKey",
    "Facts",
    "facts_of",
    "client_key",
    "address_of",
    "is_analysed",
    "Keyed",
]

BATCH_KINDS: frozenset[Kind] = frozenset({Kind.BATCH, Kind.HANDLE_QUERY})
UNKNOWN_CLIENT = "unknown client"


class HostKey(NamedTuple):
    """One client talking to one host."""

    client: str
    host: str


class PlaceKey(NamedTuple):
    """One client talking to one resource of one host."""

    client: str
    host: str
    place: str


class RequestKey(NamedTuple):
    """One request of one client, its retries included (body aside)."""

    client: str
    method: str
    target: str


class SessionKey(NamedTuple):
    client: str
    session: str


class Facts:
    """What the rules need from one exchange, read once by `facts_of`.

    What most exchanges are judged by (who sent it, when, where, its status, which
    budget it counts against, whether the Trace Analyzer analyses it) is read when
    the facts are built. What only some rules ask for, on some exchanges (the keys
    a pending wait is filed under, the label a verdict names, the body's hash, the
    users a batch names) is worked out on first use and kept (`cached_property`):
    most exchanges decide nothing, and then nobody reads those.
    """

    def __init__(self, exchange: model.Exchange, seq: int, start: float, end: float,
                 client: str, console: str, method: str, host: str, target: str,
                 resource: Resource, service: str, analysed: bool) -> None:
        self.exchange = exchange
        self.seq = seq
        self.start = start  # epoch seconds the request was sent
        self.end = end  # epoch seconds the answer was received (never before `start`)
        self.client = client
        self.console = console  # the client's address without port: the analyzer's "console"
        self.method = method
        self.host = host
        self.target = target  # lower-cased path and query: what "the same URI" means
        self.resource = resource
        #: the session's key (Resource.key) for sessions and their elements
        self.session: str | None = resource.key
        self.status: int | None = exchange.status
        #: the name of the service (or sub-path limit) whose budgets the call counts
        self.service = service
        self.analysed = analysed  # a call the Trace Analyzer analyses (module docstring)

    @functools.cached_property
    def _resource_path(self) -> str:
        if self.resource.kind is Kind.UNKNOWN:
            return self.target.split("?", 1)[0]
        return self.resource.short

    @functools.cached_property
    def where(self) -> str:
        """The resource for people: sessions/lobby-1, handles/query, ... (a huge name
        clipped: it is quoted in verdict sentences)."""
        return model.clipped(self._resource_path)

    @functools.cached_property
    def place(self) -> str:
        """The resource's identity: the session key, else kind and path (whole)."""
        if self.resource.kind is Kind.UNKNOWN:
            return self._resource_path
        return self.session or f"{self.resource.kind.value}:{self._resource_path}".lower()

    @functools.cached_property
    def body_hash(self) -> int:
        body = self.exchange.request.body
        return hash(body) if body else 0

    @functools.cached_property
    def xuids(self) -> int | None:
        """Users in a batch call, None when not a batch call."""
        return _xuid_count(self.resource, self.method, self.exchange.request)

    @functools.cached_property
    def social(self) -> bool:
        """Sent by SocialManager (the Trace Analyzer skips those for repeats)."""
        return _social(self.exchange.request.headers)

    @property
    def uri(self) -> str:
        """The URL as sent, case kept: the analyzer's "same URI"."""
        return self.exchange.request.url

    @property
    def agent(self) -> str | None:
        """The User-Agent header."""
        return self.exchange.request.headers.first("user-agent")

    # The keys several rules file their state under.

    @functools.cached_property
    def per_host(self) -> HostKey:
        return HostKey(self.client, self.host)

    @functools.cached_property
    def request_key(self) -> RequestKey:
        return RequestKey(self.client, self.method, self.target)

    @property
    def per_place(self) -> PlaceKey:
        return PlaceKey(self.client, self.host, self.place)

    @property
    def if_match(self) -> str | None:
        return self.exchange.request.headers.first("if-match")

    @property
    def if_none_match(self) -> str | None:
        return self.exchange.request.headers.first("if-none-match")

    @property
    def retry_after(self) -> int | None:
        """Whole seconds only, as the client library parses it (protocol notes §5.3)."""
        value = self._response_header("retry-after")
        if value is None or not value.strip().isdigit():
            return None
        return int(value.strip())

    @property
    def etag(self) -> str | None:
        return self._response_header("etag")

    @functools.cached_property
    def label(self) -> str:
        return f"{self.method} {self.where}"

    def _response_header(self, name: str) -> str | None:
        response = self.exchange.response
        return None if response is None else response.headers.first(name)


def client_key(exchange: model.Exchange, address: str | None = None) -> str:
    """Who sent the exchange: the user (`model.Request.user`, i.e. `recording.user_of`: the
    XBL user hash, which the service's rate limits key by and which survives token
    refreshes; else the redacted Authorization), else the address without its port
    (`address_of`, unless the caller has it already)."""
    return exchange.request.user or (address_of(exchange) if address is None else address)


def address_of(exchange: model.Exchange) -> str:
    """The client's address without its port (IPv6 without brackets), else UNKNOWN_CLIENT."""
    client = exchange.client
    if not isinstance(client, str) or not client:
        return UNKNOWN_CLIENT
    if client.startswith("["):
        return client[1:].split("]", 1)[0]
    if client.count(":") == 1:
        return client.split(":", 1)[0]
    return client


def is_analysed(request: model.Request, custom_agent: str = "") -> bool:
    """Whether the Trace Analyzer analyses this call (Utils.cs IsAnalyzedService, ~L105).

    Header names are matched case-insensitively (it reads a WebHeaderCollection),
    `XboxServicesAPI` case-sensitively (String.Contains). A websocket upgrade is
    no service call: left out whatever its headers. (Asked of every MPSD exchange:
    each header is looked up only when the answer still depends on it.)
    """
    first = request.headers.first
    upgrade = first("upgrade")
    if upgrade is not None and upgrade.strip().lower() == "websocket":
        return False
    agent = first("user-agent")
    if agent is not None and "XboxServicesAPI" in agent and first("x-xbl-client-name") is None:
        return True
    build = first("x-xbl-api-build-version")
    return bool(
        (build is not None and build.lower() == "adk")
        or first("x-xbl-build-version") is not None
        or first("x-authxtoken") is not None
        or (custom_agent and agent == custom_agent))


def _social(headers: model.Headers) -> bool:
    """Sent by SocialManager: the analyzer looks for `SocialManager` anywhere in the request
    headers' text, case-sensitively (RepeatedCallsRule.cs ~L45, PollingDetectionRule.cs)."""
    return any("SocialManager" in name or "SocialManager" in value for name, value in headers)


def _xuid_count(resource: Resource, method: str, request: model.Request) -> int | None:
    if resource.kind not in BATCH_KINDS or method != "POST":
        return None
    document = request.json
    if document is jsonbody.INVALID or not isinstance(document, dict):
        return None
    if resource.kind is Kind.BATCH:
        xuids = document.get("xuids")
    else:
        owners = document.get("owners")
        xuids = owners.get("xuids") if isinstance(owners, dict) else None
    return len(xuids) if isinstance(xuids, list) else None


def _path_or_nothing(request: model.Request) -> str:
    """The path (with its query) the budgets' sub-path limits read, "" when it cannot be
    read."""
    try:
        return request.path
    except ValueError:
        return ""


def facts_of(exchange: model.Exchange, service_of: Callable[[str, str, str], str], *,
             now: float, seq: int, custom_agent: str = "") -> Facts:
    """The facts of one exchange.

    `service_of(host, kind, path)` names the service or sub-path limit
    (`Limits.service_for(...).name`); `path` keeps its query and case.
    An exchange without a start time is placed at its end, else at `now` (the
    time of the one before it), so an exchange read from a damaged record never
    stops the engine; `seq` numbers it when it has no seq of its own. The request's
    path, host, user and resource are each read once (the model keeps the last three).
    """
    request = exchange.request
    start = exchange.start if exchange.start is not None else exchange.end
    if start is None:
        start = now
    end = exchange.end if exchange.end is not None and exchange.end >= start else start
    try:
        host, raw_path, resource = request.host, request.path, request.resource
        target = raw_path.lower()
    except ValueError:  # a URL that cannot be split (a broken IPv6 literal): a bare,
        # unknown target rather than an error
        host, resource, target = "", Resource(Kind.UNKNOWN), request.url.lower()
        raw_path = _path_or_nothing(request)
    console = address_of(exchange)
    return Facts(
        exchange,
        exchange.seq if exchange.seq is not None else seq,
        start,
        end,
        client_key(exchange, console),
        console,
        request.method.upper(),
        host,
        target,
        resource,
        service_of(host, resource.kind, raw_path),  # a StrEnum
        is_analysed(request, custom_agent),
    )


K = TypeVar("K")
V = TypeVar("V")


class _Item(Generic[V]):
    """One key's value, its deadline, and the deadline its heap entry carries."""

    __slots__ = ("deadline", "scheduled", "value")

    def __init__(self, deadline: float, value: V) -> None:
        self.deadline = deadline
        self.scheduled = deadline
        self.value = value


class Keyed(Generic[K, V]):
    """Per-key state, each key with a deadline; at most `limit` keys.

    `due(now)` hands back (and forgets) the keys whose deadline passed; `put`
    hands back the least recently put keys beyond the limit, so a rule can
    decide what it was waiting for before the state goes. A heap orders the
    deadlines. Most puts only push a key's deadline later: the heap is left
    alone then, and an entry found early is rescheduled when it comes up.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, _Item[V]] = OrderedDict()
        self._heap: list[tuple[float, int, K]] = []
        self._tick = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        return None if item is None else item.value

    def put(self, key: K, value: V, deadline: float) -> Sequence[tuple[K, V]]:
        """Keep `value` for `key` until `deadline`; returns the keys evicted to make room
        (most puts renew a key and evict nothing: they return one shared empty tuple)."""
        items = self._items
        item = items.get(key)
        if item is not None and item.scheduled <= deadline:
            item.deadline, item.value = deadline, value
            items.move_to_end(key)
            return ()
        items[key] = _Item(deadline, value)
        items.move_to_end(key)
        heapq.heappush(self._heap, (deadline, next(self._tick), key))
        if len(self._heap) > 2 * len(items) + 64:
            self._rebuild()
        evicted: list[tuple[K, V]] = []
        while len(items) > self.limit:
            k, old = items.popitem(last=False)
            evicted.append((k, old.value))
        return evicted

    def _rebuild(self) -> None:
        """Drop the heap's stale entries (forgotten or rescheduled keys)."""
        self._heap = [(item.deadline, next(self._tick), k) for k, item in self._items.items()]
        heapq.heapify(self._heap)
        for item in self._items.values():
            item.scheduled = item.deadline

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        return None if item is None else item.value

    def due(self, now: float) -> list[tuple[K, V]]:
        out: list[tuple[K, V]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            scheduled, _, key = heapq.heappop(heap)
            item = self._items.get(key)
            if item is None or item.scheduled != scheduled:
                continue  # forgotten, or a newer entry stands for it
            if item.deadline > now:
                item.scheduled = item.deadline  # pushed later since: reschedule
                heapq.heappush(heap, (item.deadline, next(self._tick), key))
                continue
            del self._items[key]
            out.append((key, item.value))
        return out

    def drain(self) -> list[tuple[K, V]]:
        out = [(k, item.value) for k, item in self._items.items()]
        self._items.clear()
        self._heap.clear()
        return out
