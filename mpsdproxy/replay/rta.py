"""A recording's RTA messages served back, in order with the exchanges they followed.

Each recorded RTA websocket (its 101 handshake is an exchange of the index) has
the server's messages that followed it (`Index.rta_streams`), each noted with
the exchange recorded last before it. A title's websocket handshake that the
replay matches to a recorded one gets a `Feed` of that stream:

- a subscribe or unsubscribe result answers the title's own subscribe or
  unsubscribe with the same sequence number (the library pairs them by sequence:
  real_time_activity_connection.cpp, SubscribeResponseHandler ~L390), whenever it
  comes, so a title that subscribes a little earlier or later is still answered;
- everything else the server sent (events with their taps, a resync, a close)
  goes in recorded order, each once the replay has served the exchange recorded
  last before it, and never before the results recorded ahead of it were sent
  (a tap on a subscription the title has not been given makes no sense);
- a tap waits as well for the exchange whose answer first carried its session at
  its changeNumber (`Index.changes`), when the recording holds one: the service
  taps before the writer's answer is back, so a tap is often recorded just before
  the exchange that caused it, and must not reach the title before that write.
- a subscribe the recording has no result for gets `SERVICE_UNAVAILABLE` (the
  proxy's own answer, as a 502 is for HTTP), so the title is not left waiting.

A handshake served again after its recorded ones ran out (`repeat-last`) gets the
results only: the stream's taps were delivered once already. Nothing here does
I/O or imports mitmproxy (`replay.rtaserver` is the socket, the replayer addon the
proxy side).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple

from mpsdproxy import rta
from mpsdproxy.recording import messages
from mpsdproxy.replay.index import END
from mpsdproxy.replay.index import Index

__all__ = ["Hangup", "Outgoing", "Cue", "cues_of", "Feed", "RtaReplay"]

logger = logging.getLogger(__name__)

#: The close code when a recorded close frame carries none (RFC 6455 7.4.1: normal).
NORMAL_CLOSURE = 1000


class Hangup(NamedTuple):
    """Send a close frame with this code and reason (the recorded server closed)."""

    code: int = NORMAL_CLOSURE
    reason: str = ""


Outgoing = str | Hangup


@dataclass(frozen=True, slots=True)
class Cue:
    """One recorded server message and what releases it."""

    seq: int  # its record's seq, for messages
    after: tuple[int, ...]  # the exchange entries whose serving releases it (END: none)
    frame: Outgoing
    #: For a subscribe or unsubscribe result: (type, sequence) of the request it answers.
    answers: tuple[rta.Type, int] | None = None


def _close_of(record: Mapping[str, Any]) -> Hangup:
    payload = record["payload"]
    try:
        data = base64.b64decode(payload["base64"]) if "base64" in payload \
            else str(payload.get("text", "")).encode()
    except (binascii.Error, ValueError):
        data = b""
    code, reason = messages.close_of(data)
    if code is None:
        return Hangup()
    return Hangup(code, reason.decode("utf-8", "replace"))


Changes = Mapping[tuple[str, int], int]


def _cue(after: int, record: Mapping[str, Any], changes: Changes) -> Cue | None:
    """A record as a cue; None for what a server socket does not send on its own (pings,
    pongs, binary frames, a text frame that is not RTA)."""
    if record["opcode"] == "close":
        return Cue(record["seq"], (after,), _close_of(record))
    text = record["payload"].get("text")
    if record["opcode"] != "text" or not isinstance(text, str):
        return None
    message = messages.rta_of(record)
    if message is None:
        return None
    answers = None
    if message.type in (rta.Type.SUBSCRIBE, rta.Type.UNSUBSCRIBE) \
            and message.sequence is not None:
        answers = (message.type, message.sequence)
    causes = {changes.get((t.session, t.change_number)) for t in message.taps
              if t.change_number is not None}
    gates = (after, *sorted(e for e in causes if e is not None and e != after))
    return Cue(record["seq"], gates, text, answers)


def cues_of(stream: Iterable[tuple[int, Mapping[str, Any]]],
            changes: Changes | None = None) -> list[Cue]:
    """The cues of one recorded websocket's server messages, in recorded order;
    `changes` says which exchange brought a session to a changeNumber."""
    return [cue for after, record in stream
            if (cue := _cue(after, record, changes or {})) is not None]


class Feed:
    """One live RTA websocket replaying one recorded stream.

    `receive` takes each text message the title sends and `due` is asked whenever
    an exchange was served; both return the frames to send now, in order.
    """

    def __init__(self, cues: list[Cue], served: Callable[[int], bool], *,
                 results_only: bool = False) -> None:
        self.cues = cues
        self.served = served
        self.results_only = results_only
        self._sent = bytearray(len(cues))
        self._next = 0  # the first cue not sent, in recorded order
        self.closed = False

    def receive(self, text: str) -> list[Outgoing]:
        """The answer to a subscribe or unsubscribe by its sequence, then what is due."""
        message = rta.decode(text, from_client=True)
        out: list[Outgoing] = []
        if message is not None and message.sequence is not None \
                and message.type in (rta.Type.SUBSCRIBE, rta.Type.UNSUBSCRIBE):
            out.append(self._answer(message.type, message.sequence))
        return out + self.due()

    def _answer(self, kind: rta.Type, sequence: int) -> Outgoing:
        for number, cue in enumerate(self.cues):
            if cue.answers == (kind, sequence) and not self._sent[number]:
                self._sent[number] = 1
                return cue.frame
        logger.warning(f"RTA replay: the recording holds no answer to {kind.name.lower()} "
                       f"#{sequence}; answering SERVICE_UNAVAILABLE")
        if kind is rta.Type.SUBSCRIBE:
            return rta.subscribe_error_message(sequence, rta.Status.SERVICE_UNAVAILABLE)
        return rta.unsubscribe_result_message(sequence, rta.Status.SERVICE_UNAVAILABLE)

    def due(self) -> list[Outgoing]:
        """The recorded frames whose time has come, in order (none after a close)."""
        out: list[Outgoing] = []
        while not self.closed and self._next < len(self.cues):
            cue = self.cues[self._next]
            if self._sent[self._next]:
                self._next += 1
                continue
            if cue.answers is not None or not all(map(self.served, cue.after)):
                break  # a result waits for its request; a message for its exchange
            self._sent[self._next] = 1
            self._next += 1
            if self.results_only:
                continue
            out.append(cue.frame)
            self.closed = isinstance(cue.frame, Hangup)
        return out

    def remaining(self) -> int:
        """Recorded frames not sent yet."""
        return len(self._sent) - sum(self._sent)


class RtaReplay:
    """The RTA side of one replay: which exchanges were served, and a Feed per websocket."""

    def __init__(self, index: Index) -> None:
        self.streams = {entry: cues_of(stream, index.changes)
                        for entry, stream in index.rta_streams.items()}
        self.delivered: set[int] = set()

    def __len__(self) -> int:
        """How many server messages the recorded RTA websockets hold."""
        return sum(len(cues) for cues in self.streams.values())

    def is_handshake(self, entry: int) -> bool:
        """Whether a recorded exchange is an RTA websocket's 101 handshake."""
        return entry in self.streams

    def served(self, entry: int) -> None:
        """The replay has served this exchange: what was recorded after it may go."""
        self.delivered.add(entry)

    def is_served(self, entry: int) -> bool:
        return entry == END or entry in self.delivered

    def feed(self, entry: int, *, repeat: bool = False) -> Feed:
        """A Feed of the websocket whose handshake is `entry` (served: its messages may go).
        A repeated handshake gets only the subscribe and unsubscribe results."""
        self.served(entry)
        return Feed(self.streams.get(entry, []), self.is_served, results_only=repeat)
