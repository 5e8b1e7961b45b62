"""A local MPSD stand-in: the session directory's semantics, in memory.

It is the default upstream for the demo, the tests and anyone without access
to the real service, and it can produce every row of the status table from a
real request. Responses are built with `faults.build`, so their content type,
body kind and required headers come from the catalog, exactly as an injected
fault's do; the stand-in adds what the service adds around them (`Date`,
`X-XblCorrelationId`, `ETag`, `Content-Location`, `Location`; protocol notes
§2.2).

Which request produces which row, with the shipped config
(`mpsdproxy/data/emulator.yaml`). `S` is
`/serviceconfigs/7492baca-c1b4-440d-a391-b7ef00000001/sessiontemplates/LobbySession/sessions/lobby`
and `H` is `/serviceconfigs/7492baca-c1b4-440d-a391-b7ef00000001/hoppers/QuickMatch`.
Every request carries `Authorization: XBL3.0 x=<userhash>;<token>` and
`x-xbl-contract-version: 107` unless the row says otherwise.

    entry id                  request
    ------------------------  ---------------------------------------------------------------
    200.ok                    GET S; PUT S on an existing session; GET/POST handles, queries,
                              POST H (a ticket), GET H/stats
    201.created               PUT S {"members":{"me":{}}} on a new session; POST /handles
    202.accepted              DELETE H/tickets/{ticketId}
    204.get-session           GET S when the session does not exist
    204.get-element           GET S/members/7 (or S/servers/x) on a session without it
    204.put-session-deleted   PUT S {"members":{"me":null}} by the last member; PUT S that
                              creates a session with no member (nothing is created)
    204.element-gone          DELETE S/members/me, S/servers/{name}, or S/members/{index}
                              by a server principal (`gameserver`)
    304.not-modified          GET S with If-None-Match: <its current ETag>
    400.bad-request           PUT S with a body that is not a JSON object (or wrong types);
                              any request without x-xbl-contract-version
    403.forbidden             any request without, or with a malformed, Authorization
    403.read-only             PUT S by a `read_only_users` caller (`spectator`) when S exists
    404.not-found             unknown SCID, template, handle, hopper or ticket; unparsable URI
    405.method-not-allowed    POST or DELETE S (Allow: GET, PUT); PUT /handles (Allow: POST)
    409.conflict              PUT S {"constants":{"system":{"maxMembersCount":99}}}
    412.precondition-failed   PUT S with If-None-Match: * when S exists, or with If-Match
                              (any value) when it does not
    412.if-match-session      PUT S with If-Match: <an older ETag> (the reply carries the
                              whole current session and its current ETag)
    429.too-many-requests     a third request within 15 s by one caller on ThrottledSession
                              (its burst limit is 2)
    503.service-unavailable   any MPSD request after POST /_emulator/overload

Choices where the protocol notes are silent:

- DELETE of a matchmaking ticket answers 202 Accepted: the cancellation is
  accepted and, on the real service, completes asynchronously. The stand-in
  forgets the ticket at once, so a later GET of it answers 404.
- DELETE /handles/{id} answers 200 with the deleted handle (404 when unknown).
- GET /handles/{id}/session for a handle whose session does not exist answers
  204 (a GET for a session that doesn't exist).
- The caller's XUID is the one its first write names in
  `members.me.constants.system.xuid`; before that, the user hash itself when
  it is all digits, else a stable number derived from it. A later write that
  names another XUID for the same caller gets 403.
- Rate limits, per caller and per service (protocol notes §5.1): the session
  directory in the config's `rate_limit` (30/15 s, 300/300 s shipped; a
  template's own `rate_limit` adds its windows), SmartMatch 10/15 s and
  100/300 s, search-handle reads and writes each 1/15 s and 20/300 s (see
  `service.py`).
- Timers (`timers.py`): reservation, inactive, ready and session-empty
  timeouts from `constants.system` act on the Emulator's clock just before
  each request, each update bumping `changeNumber` and the ETag; a session
  with a pending timer shows `nextTimer` (and `Expires`).
- Members carry `gamertag`, a `deviceToken` per console, `activeTitleId` and
  `joinTime` (`members.py`), so MultiplayerManager's host election works;
  callers of contract 105 read and write its field names (`views.py`).
- Deleting another member needs a server principal (`server_principals`);
  `require_signature: true` refuses unsigned requests with 403.
- `GET /connect` (any host, subprotocol `rta.xboxlive.com.V2` or the older
  `rta.xboxlive.com`) is the Real-Time
  Activity websocket: subscribing to
  `https://sessiondirectory.xboxlive.com/connections/` answers a ConnectionId, and
  every change of a session taps the sockets whose ConnectionId a member holds in
  `properties.system.connection` (`rtahub.py`).
- One activity handle per caller per SCID, one search handle per session;
  invites expire an hour after they are sent.
- Every committed write bumps `changeNumber` and the ETag, even one that
  changes nothing; so does creating a handle that names an existing session.
- Reads of a large session (`constants.system.capabilities.large`) show only
  the caller's own member, keyed `me`.

Switches for scripts, never MPSD paths and never throttled or overloaded, are
the server's (`server.py`): `POST /_emulator/overload`
(`{"retry_after": 2, "requests": 1}`), `POST /_emulator/recover`,
`POST /_emulator/reset`, `GET /_emulator/sessions`, `POST /_emulator/change`
(`{"session": path}`: another client changed that session), `POST /_emulator/resync`
(`[4]` to every RTA websocket), `POST /_emulator/rta/close` (drop them all) and
`GET /_emulator/rta` (the open sockets).

Layout: `config.py` (the YAML config), `service.py` (`Emulator`: the request's way
through, rate limits per service, overload), `sessions.py`, `handles.py`, `queries.py`,
`matchmaking.py` (the handlers), `handle_kinds.py`, `handle_queries.py`,
`search_filter.py`, `social.py` (what handles hold and how queries select them),
`matchmaker.py` (tickets moving on with the clock), `documents.py` (session documents
and merges), `members.py` (what the service writes into members), `views.py` (a
document as a caller reads it: contract, large sessions), `timers.py` (session
timers), `state.py` (what is stored), `protocol.py` (answers and request reading),
`rtahub.py` (the RTA websocket: subscriptions and shoulder taps), `server.py` (HTTP/1.1
with h11, `run`, `running`, the switches).
"""

from mpsdproxy.emulator.config import CONFIG_VERSION
from mpsdproxy.emulator.config import DEFAULT_CONFIG_PATH
from mpsdproxy.emulator.config import DEFAULT_TITLE_ID
from mpsdproxy.emulator.config import ConfigError
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import MatchmakingConfig
from mpsdproxy.emulator.config import Overload
from mpsdproxy.emulator.config import RateLimit
from mpsdproxy.emulator.config import ScidConfig
from mpsdproxy.emulator.config import TemplateConfig
from mpsdproxy.emulator.config import default_config
from mpsdproxy.emulator.config import load_config
from mpsdproxy.emulator.config import parse_config
from mpsdproxy.emulator.server import answer
from mpsdproxy.emulator.server import run
from mpsdproxy.emulator.server import running
from mpsdproxy.emulator.server import serve
from mpsdproxy.emulator.service import Emulator

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "RateLimit",
    "TemplateConfig",
    "ScidConfig",
    "Overload",
    "EmulatorConfig",
    "MatchmakingConfig",
    "DEFAULT_TITLE_ID",
    "parse_config",
    "load_config",
    "default_config",
    "Emulator",
    "answer",
    "serve",
    "run",
    "running",
]
