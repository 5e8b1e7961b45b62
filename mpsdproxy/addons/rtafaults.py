"""RtaFaults: break the Real-Time Activity websocket as scenarios' `tap:` and `rta:` rules say.

MultiplayerManager re-reads a session only when a shoulder tap says it changed
(`Manager/multiplayer_session_writer.cpp`, OnSessionChanged: a GET when the
tap's changeNumber is newer than its copy), so the failures studios ship are
RTA failures: a missed tap, a late one, one for a changeNumber the title
already has, the websocket dropping, a subscribe that fails. Each message of
an RTA websocket (an RTA subprotocol, `rta.SUBPROTOCOLS`, or an RTA host) goes
through the rules of the scenarios in force, with the same match/when/per as
HTTP rules and in the same engines (`FaultInjector.scenarios`), so counters,
switches, resets, hot reload and the counts printed at shutdown are shared:

- `tap:` rules count each shoulder tap the service sends, described as a
  request for the tap's session (`match` by path or resource): `drop` takes
  it out of its event, `duplicate` sends it again right after, `stale`
  rewrites its changeNumber to one the title already has (the last one this
  websocket delivered for the session, else one less), `reorder` holds it until
  the next event the service sends (at most REORDER_MAX_S), `{delay: D}` sends
  it D later;
- `rta: close` / `rta: resync` rules count each message the service sends (an
  event as its first tap's session): close drops the message and the
  connection with it, without a close frame, as a network loss does; resync
  lets the message through and then sends `[4]`;
- `rta: {subscribe_status: N}` rules count each subscribe the title sends:
  the service never hears it, and the title gets `[1, seq, N, "<why>"]`. The
  library retries 1001/1002 with backoff and gives up on the others
  (real_time_activity_connection.cpp, SubscribeResponseHandler).

What the title gets instead is sent with mitmproxy's `inject.websocket`, after
the message at hand. The note of the rule that acted on a message is in
`flow.metadata["mpsd_rta_fault"]` (`{"message": index, "rule", "scenario",
"seed", "fault"}`), for the recorder and the live log. The addon finds the
fault injector among mitmproxy's addons (or the MpsdChain's parts) on first
use, and is inert without it, when injection is off, or with no RTA rule.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import OrderedDict
from typing import Any
from typing import NamedTuple

from mitmproxy import ctx
from mitmproxy import http

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy import rta
from mpsdproxy.addons import connfaults
from mpsdproxy.addons import flows
from mpsdproxy.addons.injector import FaultInjector
from mpsdproxy.addons.scenarios import Hit
from mpsdproxy.scenario import Phase
from mpsdproxy.scenario.model import Channel
from mpsdproxy.scenario.model import RtaAction
from mpsdproxy.scenario.model import TapAction

logger = logging.getLogger(__name__)

__all__ = ["REORDER_MAX_S", "RtaFaults", "is_rta"]

#: Seconds a reordered tap waits for the next event at most before it goes out anyway.
REORDER_MAX_S = 30.0
#: Sessions whose last delivered changeNumber is kept per websocket (oldest forgotten).
MAX_SESSIONS = 1000
#: The host a tap's session is described on, so a tap rule's match reads as an HTTP one.
SESSION_HOST = "https://sessiondirectory.xboxlive.com"


def is_rta(flow: http.HTTPFlow) -> bool:
    """Whether a websocket flow is an RTA connection: its subprotocol, or an RTA host."""
    if rta.chosen_subprotocol(flow.request.headers.get_all("Sec-WebSocket-Protocol")):
        return True
    return resources.bare_host(flow.request.pretty_host) in resources.RTA_HOSTS


def _request(url: str, fallback: str) -> model.Request:
    """A websocket message as the request for what it names (the engine matches those)."""
    try:
        return model.Request("GET", url)
    except model.ModelError:
        return model.Request("GET", fallback)


def _session_url(tap: rta.Tap) -> str | None:
    parts = tap.resource.split("~")
    if len(parts) != 3 or not all(parts):
        return None
    scid, template, name = parts
    return f"{SESSION_HOST}/serviceconfigs/{scid}/sessiontemplates/{template}/sessions/{name}"


def _text(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class _Event(NamedTuple):
    """An event frame as sent, and its tap items beside the taps they decode to."""

    value: list[Any]
    items: list[tuple[dict[str, Any], rta.Tap]]

    @classmethod
    def of(cls, content: bytes, message: rta.Message) -> _Event | None:
        try:
            value = json.loads(content)
            listed = value[2]["shoulderTaps"]
        except (ValueError, LookupError, TypeError):
            return None
        # the items rta.decode made taps of, in order (the same test it applies)
        items = [i for i in listed if isinstance(i, dict) and isinstance(i.get("resource"), str)]
        return cls(value, list(zip(items, message.taps, strict=True)))

    def frame(self, items: list[dict[str, Any]]) -> bytes:
        """This event with only these taps: what a tap held back is sent in."""
        data = dict(self.value[2], shoulderTaps=items)
        return _text([*self.value[:2], data, *self.value[3:]])


class _Outcome(NamedTuple):
    """What the tap rules made of one event."""

    kept: list[dict[str, Any]]
    again: list[dict[str, Any]]
    held: list[dict[str, Any]]
    late: list[tuple[float, dict[str, Any]]]
    notes: list[dict[str, Any]]


class RtaFaults:
    def __init__(self, injector: FaultInjector | None = None) -> None:
        self.injector = injector
        #: Reordered tap frames (and their notes) per websocket flow id, waiting for the
        #: next event.
        self.held: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        #: Per websocket flow id: session key -> the last changeNumber delivered.
        self.delivered: dict[str, OrderedDict[str, int]] = {}
        #: Per websocket flow id: notes of frames injected and not seen back yet.
        self.pending: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def running(self) -> None:
        self._find_injector()

    def done(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        for state in (self.held, self.delivered, self.pending):
            state.pop(flow.id, None)

    def _find_injector(self) -> FaultInjector | None:
        """The fault injector whose scenarios hold the rules (its engines count them)."""
        if self.injector is None:
            for addon in ctx.master.addons.chain:
                for part in (addon, *getattr(addon, "parts", ())):
                    if isinstance(part, FaultInjector):
                        self.injector = part
        return self.injector

    def _active(self) -> FaultInjector | None:
        injector = self._find_injector()
        if injector is None or not injector.inject:
            return None
        if not any(item.engine.channels - {Channel.HTTP} for item in injector.scenarios.loaded):
            return None
        return injector

    # -- the hook ------------------------------------------------------------------------

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        if message.injected:
            self._note_injected(flow, message.content)
            return
        if message.dropped or not message.is_text or not is_rta(flow):
            return
        injector = self._active()
        if injector is None:
            return
        decoded = rta.decode(message.content, from_client=message.from_client)
        if decoded is None:
            return
        if message.from_client:
            if decoded.type is rta.Type.SUBSCRIBE:
                self._subscribe(flow, decoded, injector)
            return
        if self._service_message(flow, decoded, injector):
            return
        if decoded.type is rta.Type.EVENT:
            self._event(flow, decoded, injector)

    # -- deciding ------------------------------------------------------------------------

    def _evaluate(self, flow: http.HTTPFlow, request: model.Request, channel: Channel,
                  injector: FaultInjector) -> Hit | None:
        """The first rule of the first scenario that fires (as `Scenarios.evaluate`, on
        this channel); the client is its user, else its address, as for HTTP rules."""
        auth = flow.request.headers.get("Authorization")
        user = recording.user_of(auth) if auth else ""
        peer = flow.client_conn.peername
        client = user or (str(peer[0]) if peer else "")
        now = injector.clock()
        for item in injector.scenarios.loaded:
            firing = item.engine.evaluate(request, Phase.REQUEST, client=client, user=user,
                                          now=now, channel=channel)
            if firing is not None:
                return Hit(item, firing)
        return None

    @staticmethod
    def _note_of(hit: Hit, fault: str, **facts: Any) -> dict[str, Any]:
        scn = hit.loaded.scenario
        return {"rule": hit.rule.name, "scenario": scn.name, "seed": scn.seed, "fault": fault,
                **facts}

    def _mark(self, flow: http.HTTPFlow, note: dict[str, Any]) -> None:
        assert flow.websocket is not None
        flow.metadata[flows.FAULT_NOTE] = {"message": len(flow.websocket.messages) - 1, **note}
        logger.info(f"RTA {flow.request.pretty_host}: rule {note['rule']} of "
                    f"{note['scenario']} fired ({note['fault']})")

    # -- subscribes ------------------------------------------------------------------------

    def _subscribe(self, flow: http.HTTPFlow, decoded: rta.Message,
                   injector: FaultInjector) -> None:
        request = _request(decoded.uri or "", flow.request.url)
        hit = self._evaluate(flow, request, Channel.SUBSCRIBE, injector)
        if hit is None or hit.fault.rta is None or hit.fault.rta.status is None:
            return
        status = hit.fault.rta.status
        flow.websocket.messages[-1].drop()  # type: ignore[union-attr]
        name = rta.Status(status).name.lower()
        self._mark(flow, self._note_of(hit, f"rta:subscribe_status {status}"))
        answer = [int(rta.Type.SUBSCRIBE), decoded.sequence, status,
                  f"subscribe failed: {name} (injected by mpsdproxy rule {hit.rule.name})"]
        self._inject(flow, _text(answer), self._note_of(hit, f"rta:subscribe_status {status}"))

    # -- the service's messages ----------------------------------------------------------

    def _service_message(self, flow: http.HTTPFlow, decoded: rta.Message,
                         injector: FaultInjector) -> bool:
        """`rta: close` / `rta: resync` rules; whether the connection was closed."""
        url = _session_url(decoded.taps[0]) if decoded.taps else None
        request = _request(url or flow.request.url, flow.request.url)
        hit = self._evaluate(flow, request, Channel.RTA, injector)
        if hit is None or hit.fault.rta is None:
            return False
        if hit.fault.rta.action is RtaAction.RESYNC:
            self._mark(flow, self._note_of(hit, "rta:resync"))
            self._inject(flow, rta.resync_message().encode(), self._note_of(hit, "rta:resync"))
            return False
        flow.websocket.messages[-1].drop()  # type: ignore[union-attr]
        self._mark(flow, self._note_of(hit, "rta:close"))
        self._close(flow)
        return True

    @staticmethod
    def _close(flow: http.HTTPFlow) -> None:
        """Drop the connection as a network loss does: no close frame, the socket shut."""
        sock = connfaults.client_socket(flow)
        try:
            if sock is None:
                raise OSError("no socket")
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as e:
            logger.warning(f"RTA {flow.request.url}: cannot close this websocket ({e})")

    # -- taps ----------------------------------------------------------------------------

    def _event(self, flow: http.HTTPFlow, decoded: rta.Message,
               injector: FaultInjector) -> None:
        message = flow.websocket.messages[-1]  # type: ignore[union-attr]
        released = self.held.pop(flow.id, [])
        event = _Event.of(message.content, decoded) if decoded.taps else None
        outcome = self._tap_rules(flow, event, injector) if event is not None else None
        if event is not None and outcome is not None and outcome.notes:
            if not outcome.kept:
                message.drop()
            else:
                message.content = event.frame(outcome.kept)
            self._mark(flow, outcome.notes[0])
            note = outcome.notes[0]
            if outcome.again:
                self._inject(flow, event.frame(outcome.again), note)
            if outcome.held:
                self._hold(flow, event.frame(outcome.held), note)
            for seconds, item in outcome.late:
                self._later(flow, event.frame([item]), seconds, note)
            self._remember(flow, [*outcome.kept, *outcome.again])
        elif event is not None:
            self._remember(flow, [item for item, _ in event.items])
        for frame, note in released:  # a reordered tap goes out after this event
            self._inject(flow, frame, {**note, "released": True})

    def _tap_rules(self, flow: http.HTTPFlow, event: _Event,
                   injector: FaultInjector) -> _Outcome:
        out = _Outcome([], [], [], [], [])
        for item, tap in event.items:
            url = _session_url(tap)
            hit = (self._evaluate(flow, _request(url, flow.request.url), Channel.TAP, injector)
                   if url is not None else None)
            fault = hit.fault.tap if hit is not None else None
            if hit is None or fault is None:
                out.kept.append(item)
                continue
            facts = {"session": tap.session, "changeNumber": tap.change_number}
            if fault.action is TapAction.DROP:
                pass
            elif fault.action is TapAction.DUPLICATE:
                out.kept.append(item)
                out.again.append(item)
            elif fault.action is TapAction.STALE:
                older = self._older(flow, tap)
                out.kept.append(dict(item, changeNumber=older))
                facts["stale_changeNumber"] = older
            elif fault.action is TapAction.REORDER:
                out.held.append(item)
            else:
                seconds = hit.firing.delay
                out.late.append((seconds, item))
                facts["delay_ms"] = round(seconds * 1000, 3)
            out.notes.append(self._note_of(hit, f"tap:{fault.action.value}", **facts))
        return out

    def _older(self, flow: http.HTTPFlow, tap: rta.Tap) -> int | None:
        """A changeNumber the title already has: the last this websocket delivered for the
        session when older, else one less than the tap's."""
        if tap.change_number is None:
            return None
        last = self.delivered.get(flow.id, {}).get(tap.session)
        if last is not None and last < tap.change_number:
            return last
        return max(0, tap.change_number - 1)

    def _remember(self, flow: http.HTTPFlow, items: list[dict[str, Any]]) -> None:
        seen = self.delivered.setdefault(flow.id, OrderedDict())
        for item in items:
            number = item.get("changeNumber")
            if isinstance(number, int) and not isinstance(number, bool):
                key = rta.session_key(item["resource"])
                seen[key] = number
                seen.move_to_end(key)
        while len(seen) > MAX_SESSIONS:
            seen.popitem(last=False)

    # -- sending what the title gets instead -------------------------------------------------

    def _inject(self, flow: http.HTTPFlow, frame: bytes, note: dict[str, Any]) -> None:
        """Send a text frame to the title after the message at hand."""
        if not flow.live:
            return
        self.pending.setdefault(flow.id, []).append((frame, note))
        ctx.master.commands.call("inject.websocket", flow, True, frame, True)

    def _note_injected(self, flow: http.HTTPFlow, content: bytes) -> None:
        """A frame this addon injected came through: note its rule on it."""
        waiting = self.pending.get(flow.id)
        if waiting and waiting[0][0] == content:
            _, note = waiting.pop(0)
            self._mark(flow, {**note, "injected": True})
            if "changeNumber" in note or note.get("released"):
                try:
                    self._remember(flow, json.loads(content)[2]["shoulderTaps"])
                except (ValueError, LookupError, TypeError):
                    pass

    def _hold(self, flow: http.HTTPFlow, frame: bytes, note: dict[str, Any]) -> None:
        self.held.setdefault(flow.id, []).append((frame, note))
        self._spawn(self._release_late(flow, frame, note))

    async def _release_late(self, flow: http.HTTPFlow, frame: bytes,
                            note: dict[str, Any]) -> None:
        await asyncio.sleep(REORDER_MAX_S)
        held = self.held.get(flow.id, [])
        if (frame, note) in held:
            held.remove((frame, note))
            self._inject(flow, frame, {**note, "released": True})

    def _later(self, flow: http.HTTPFlow, frame: bytes, seconds: float,
               note: dict[str, Any]) -> None:
        self._spawn(self._send_late(flow, frame, seconds, note))

    async def _send_late(self, flow: http.HTTPFlow, frame: bytes, seconds: float,
                         note: dict[str, Any]) -> None:
        await asyncio.sleep(seconds)
        self._inject(flow, frame, note)

    def _spawn(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
