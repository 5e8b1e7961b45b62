"""The faults a sweep tries on an operation, and whether the service can give each there.

Each fault is a `scenario.Fault`, the record the injector already acts on, so a
sweep injects exactly what a scenario rule would: the table's row with its body
and headers (`answers.answer`, `faults.build`), the state-consistent 412 with a
newer session (`newer.py`), a connection dropped, reset or held
(`addons/connfaults.py`). What the list holds:

- every row of the status table except the two answers a call hopes for
  (`200.ok`, `201.created`), each by its catalog id; 503 carries Retry-After,
  and 429 a Retry-After and the FGRL body (`fgrl.message`) of a caller one call
  past the stand-in's default burst budget, so its numbers are true to each other;
- `drop`, `reset` and `hang`: the connection ends with no answer;
- `lost-answer`: the service applied a write, the title never hears (phase
  response; writes only);
- the RTA faults (`addons/rtafaults.py` gives them), on an RTA operation (a
  shoulder tap for a session template, `Operation.of_tap`) only: `tap:drop` (the
  title never hears of the change), `tap:delay` (it hears TAP_DELAY_S late),
  `rta:resync` (the service asks for a resync after the tap) and `rta:close`
  (the websocket drops, the tap with it). An HTTP fault never applies to a tap,
  nor an RTA fault to a request.

Whether the service can give a fault in a situation is the catalog's call
(`Fault.why_not`, `catalog.why_not`); this module adds only that a lost answer
needs a write. Nothing here spells out what a status means.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy.emulator.config import RateLimit
from mpsdproxy.scenario import Phase
from mpsdproxy.scenario.model import Channel
from mpsdproxy.scenario.model import Fault
from mpsdproxy.scenario.model import FixedDelay
from mpsdproxy.scenario.model import RtaAction
from mpsdproxy.scenario.model import RtaFault
from mpsdproxy.scenario.model import TapAction
from mpsdproxy.scenario.model import TapFault

__all__ = ["SCENARIO_NAME", "HOPED_FOR", "CONNECTION_FAULTS", "LOST_ANSWER", "RTA_FAULTS",
           "RTA_METHOD", "TAP_DELAY_S", "SweepFault", "fault_list", "throttle_body"]

#: The scenario name the sweep's injections carry in the recording's fault note.
SCENARIO_NAME = "sweep"
#: The rows a call hopes for: answering with them is no fault.
HOPED_FOR = frozenset({"200.ok", "201.created"})
CONNECTION_FAULTS = ("drop", "reset", "hang")
LOST_ANSWER = "lost-answer"
#: What a lost answer needs, for `why_not`.
_LOST_NEEDS = f"{LOST_ANSWER} needs a write (PUT, POST or DELETE)"
#: The method an RTA operation is named with (`RTA tap LobbySession`): a tap is no request.
RTA_METHOD = "RTA"
#: How late a `tap:delay` tap arrives.
TAP_DELAY_S = 1.0
RTA_FAULTS: dict[str, Fault] = {
    "tap:drop": Fault(tap=TapFault(TapAction.DROP)),
    "tap:delay": Fault(tap=TapFault(TapAction.DELAY, FixedDelay(TAP_DELAY_S))),
    "rta:resync": Fault(rta=RtaFault(RtaAction.RESYNC)),
    "rta:close": Fault(rta=RtaFault(RtaAction.CLOSE)),
}


@dataclass(frozen=True, slots=True)
class SweepFault:
    """One fault a sweep can give: its stable name, the fault and the phase it acts in."""

    name: str
    fault: Fault
    phase: Phase = Phase.REQUEST

    def why_not(self, situation: catalog.Situation) -> str | None:
        """None when the service can give this fault in `situation`; else why not (one
        line, the catalog's words)."""
        tap = situation.method == RTA_METHOD
        if self.rta and not tap:
            return f"{self.name} acts on a shoulder tap; this is a {situation.method} request"
        if tap and not self.rta:
            return f"{self.name} answers a request; a shoulder tap gets no answer"
        if tap:
            return None  # every tap can be dropped, delayed, resynced or lost with its socket
        if self.name == LOST_ANSWER and situation.method not in ("PUT", "POST", "DELETE"):
            return f"{_LOST_NEEDS}; this request is a {situation.method}"
        return self.fault.why_not(situation)

    @property
    def rta(self) -> bool:
        """Whether the fault acts on the RTA websocket rather than a request."""
        return self.fault.channel is not Channel.HTTP

    @property
    def entry(self) -> catalog.Entry | None:
        """The table's row this fault answers with (None for a connection fault)."""
        return catalog.get(self.fault.entry) if self.fault.entry else None


def throttle_body(retry_after: int) -> bytes:
    """The FGRL message of a 429 to a caller one call past the default burst budget."""
    burst = RateLimit().burst
    decision = fgrl.Decision(ok=False, retry_after=retry_after, current=burst + 1,
                             maximum=burst, period=float(fgrl.BURST_SECONDS))
    return faults.encode_json(fgrl.message(decision))


def _status_fault(entry: catalog.Entry, retry_after: int) -> Fault:
    if entry.body is catalog.BodyKind.FGRL:
        return Fault(status=entry.status, entry=entry.id, retry_after=retry_after,
                     body=throttle_body(retry_after))
    if "Retry-After" in entry.required_headers:
        return Fault(status=entry.status, entry=entry.id, retry_after=retry_after)
    return Fault(status=entry.status, entry=entry.id)


def fault_list(retry_after: int = 1) -> tuple[SweepFault, ...]:
    """Every fault a sweep tries, in table order then the connection faults.
    `retry_after`: the whole seconds 429 and 503 ask for (short, so a pass moves on)."""
    rows = tuple(SweepFault(e.id, _status_fault(e, retry_after))
                 for e in catalog.ENTRIES if e.id not in HOPED_FOR)
    connection = tuple(SweepFault(name, Fault(**{name: True})) for name in CONNECTION_FAULTS)
    lost = SweepFault(LOST_ANSWER, Fault(drop=True), Phase.RESPONSE)
    taps = tuple(SweepFault(name, fault) for name, fault in RTA_FAULTS.items())
    return (*rows, *connection, lost, *taps)
