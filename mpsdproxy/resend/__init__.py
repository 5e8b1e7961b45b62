"""Re-issue a recording's requests against a stand-in or test service, and record the answers.

The real service rejects re-sent requests (they are signed with a timestamp,
protocol notes §2.3), so `resend` targets the local stand-in or any test
service that accepts them. Its output is an ordinary recording, ready for
`diff` against the original.

What is sent, request by request, in recorded order:

- the recorded method, path and query, appended to the target URL's path;
- the recorded headers, except hop-by-hop ones and Content-Length (recomputed);
  Host names the target (so TLS front ends route it) unless `keep_host`;
- a redacted `Authorization` (`redacted:<hash>`) cannot be re-sent: a stand-in
  token `XBL3.0 x=<hash>;resent` goes instead, so distinct users stay distinct
  users to the stand-in (the new recording keeps the redacted value, so a
  user keeps one identity however often a recording is re-sent). Other
  redacted headers (Signature, Cookie) are left out: their values are gone
  and a stand-in value could not be valid anyway;
- the recorded body, re-encoded with its Content-Encoding if it had one.

Some values in a recording belong to the run that made it, and are carried
over as the target hands out its own:

- ETags: `If-Match`/`If-None-Match` values the original run got from the
  service are replaced by the ETag the target gave for the same answer, so a
  conditional write means the same thing and no 412 appears that the original
  never had (`*` is kept);
- handle and ticket ids: the id in a POST /handles (or hopper POST) answer of
  the original is mapped to the id the target returned, in later paths and in
  JSON bodies;
- RTA ConnectionIds: the one a subscribe got in the original run is mapped to the
  one the target gave, in later JSON bodies (the member's `connection`), so the
  target taps the re-opened websocket.

A websocket handshake (the RTA's `GET /connect`) opens a websocket at the target
(`sockets`): the title's recorded messages go on it in their places, the target's
own messages are recorded as they come (at each of the original server's messages
the target gets up to a second to catch up), and it is closed at the end. The
recording's server messages are never sent.

With `rename`, each distinct session name (compared case-insensitively, as the
service does) gets one fresh unique name, used consistently in paths and in
every `*sessionRef.name` of JSON bodies, so runs do not collide on a shared
service. A GUID name gets a fresh GUID; any other name gets an 8-hex suffix.

Each answer is written (redacted, classified) with provenance
`{"source": "resent", "record": <original seq>}`. Requests go one at a time
over one kept-alive connection; a send that fails on a reused connection
(the server closed it while idle) is retried once on a fresh one. With
`max_failures` N, N requests in a row that found no connection to the target
stop the run (a dead target would fail every request, each after its timeout):
`ResendResult.stopped` says so in one line. Each outcome is reported once, to
`on_exchange`; failures are logged at debug level only.

Bytes that are not UTF-8 go as they were recorded in header values; in the
path, where a request line takes only ASCII, they go percent-encoded (0xE9
as `%E9`), and the new record says so. A record no wire could carry (CR/LF in
a header) is not sent: it is reported as failed.

Modules: `target` (where to), `carry` (what a re-sent request changes),
`client` (the connection), `run` (the loop and the new records).
"""

from mpsdproxy.resend.carry import HOP_BY_HOP
from mpsdproxy.resend.carry import Renamer
from mpsdproxy.resend.carry import stand_in_authorization
from mpsdproxy.resend.run import ResendResult
from mpsdproxy.resend.run import ResentExchange
from mpsdproxy.resend.run import resend
from mpsdproxy.resend.run import resend_records
from mpsdproxy.resend.target import Target
from mpsdproxy.resend.target import parse_target

__all__ = [
    "Target",
    "parse_target",
    "stand_in_authorization",
    "Renamer",
    "ResentExchange",
    "ResendResult",
    "resend",
    "resend_records",
    "HOP_BY_HOP",
]
