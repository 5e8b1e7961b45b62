"""Recovery verdicts: after one injected fault, did the title come back, and is its state sane?

A fault sweep (`mpsdproxy.sweep`) injects one fault at a time and marks the
exchange with its cell (provenance `scenario: sweep`, `rule`: the cell). These
two rules are in the engine like every other (`base.RULES`, `engine.RULE_CLASSES`),
so live verdicts, `mpsdproxy report`, JUnit and the matrix (`report/matrix.py`)
all say the same. They judge only a sweep's faults: a recording without one gets
"not applicable" from both, never a failure.

- `recovery.call` - the title made the same call (method, resource kind and
  template, same session, same caller) succeed again within the limit, or gave
  it up cleanly: made no further call of it. The limit is the client library's
  retry window, 20 s from the first attempt (libHttpClient
  Source/HTTP/httpcall.cpp, `ShouldRetry`: a retry is abandoned when the window
  has 5 s or less left), plus the time one more call may take. Later calls of
  it that all failed, or a success only after the limit, fail.
- `recovery.state` - for a fault on a session or member call by a title that
  is a member (a write that succeeded, or the faulted write whose answer was lost,
  put `members/me` with its xuid), the title's next read of that session shows
  it still a member, or it left cleanly first (a successful write removing `me`,
  or a DELETE of members/me). A read after the fault that does not list it
  fails; no read after it (or a title never seen joining): nothing to judge.

Only the first exchange of a cell is its fault (a forced 412's later records
follow from it). Each verdict names the records it rests on (the fault's seq
first) and, for a recovery, the time from the fault to the first success (its
one gap). State is bounded: at most `max_keys` sessions and calls are followed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.resources import Kind
from mpsdproxy.sweep.faultlist import SCENARIO_NAME
from mpsdproxy.sweep.operations import Operation
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.state import Facts

__all__ = ["CALL_LIMIT_S", "RECOVERY_RULES", "STATE_WAIT_S", "Recovery", "RecoveryCallRule",
           "RecoveryStateRule", "sweep_cell"]

#: The library's 20 s retry window plus one call's worth of time (default client timeout).
CALL_LIMIT_S = 20.0 + 10.0
#: How long a state check waits for the title's next read before it stops following it.
STATE_WAIT_S = 600.0
#: The rules' stable ids and titles.
RECOVERY_RULES = {
    "recovery.call": "The call succeeded again (or was given up cleanly) within the limit",
    "recovery.state": "The session state afterwards is consistent",
}
_MEMBER_KINDS = (Kind.SESSION, Kind.MEMBER)


def sweep_cell(exchange: model.Exchange) -> str | None:
    """The sweep cell an exchange's fault was (None when no sweep injected it)."""
    provenance = exchange.provenance or {}
    if provenance.get("source") != "injected" or provenance.get("scenario") != SCENARIO_NAME:
        return None
    rule = provenance.get("rule")
    return rule if isinstance(rule, str) else None


def _success(f: Facts) -> bool:
    """The service answered with a success (an injected answer never is one)."""
    return f.status is not None and catalog.succeeded(f.status) \
        and (f.exchange.provenance or {}).get("source") != "injected"


class _FirstFaults:
    """Which cells' faults were seen already (their later records follow from the first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cells: OrderedDict[str, None] = OrderedDict()

    def first(self, f: Facts) -> str | None:
        cell = sweep_cell(f.exchange)
        if cell is None or cell in self.cells:
            return None
        self.cells[cell] = None
        while len(self.cells) > self.limit:
            self.cells.popitem(last=False)
        return cell


@dataclass
class _Call:
    seq: int
    t0: float
    operation: Operation
    where: str
    failed: list[int] = field(default_factory=list)


class RecoveryCallRule(BaseRule):
    id = "recovery.call"
    nothing = "no fault of a fault sweep (mpsdproxy run --sweep)"

    def __init__(self, *args: Any, limit_s: float = CALL_LIMIT_S, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.limit_s = limit_s
        self.faults = _FirstFaults(self.max_keys)
        self.pending: OrderedDict[tuple[Any, ...], list[_Call]] = OrderedDict()

    def feed(self, ex: Facts) -> Decided:
        if not self.pending and sweep_cell(ex.exchange) is None:
            return NOTHING  # no fault of a sweep, and no call waiting to recover
        op = Operation.of_resource(ex.method, ex.resource)
        if op is None:
            return NOTHING
        key = (op, ex.resource.name, ex.client)
        out: list[Verdict] = []
        waiting = self.pending.get(key)
        if waiting:
            for call in list(waiting):
                if _success(ex):
                    waiting.remove(call)
                    out.append(self._recovered(call, ex))
                else:
                    call.failed.append(ex.seq)
                    del call.failed[:-self.max_keys]
            if not waiting:
                del self.pending[key]
        if self.faults.first(ex) is not None:
            self.seen += 1
            self.pending.setdefault(key, []).append(_Call(ex.seq, ex.start, op, ex.where))
            self.pending.move_to_end(key)
            while len(self.pending) > self.max_keys:
                _, calls = self.pending.popitem(last=False)
                out.extend(self._ended(c) for c in calls)
        return out

    def _recovered(self, call: _Call, ex: Facts) -> Verdict:
        took = ms(ex.end - call.t0)
        records = (call.seq, *call.failed, ex.seq)
        if ex.start - call.t0 > self.limit_s:
            return self.verdict(Status.FAIL, f"{call.operation} succeeded again only after "
                                f"{took / 1000:.1f} s (limit {self.limit_s:g} s)", records,
                                (took,), ex.client, call.where, ex.end)
        return self.verdict(Status.PASS, f"{call.operation} succeeded again after {took:.0f} ms "
                            f"({len(call.failed)} failed call(s) between)", records, (took,),
                            ex.client, call.where, ex.end)

    def _ended(self, call: _Call) -> Verdict:
        if call.failed:
            shown = ", ".join(map(str, call.failed[:12]))
            return self.verdict(Status.FAIL, f"{call.operation} did not succeed again: "
                                f"{len(call.failed)} later call(s) failed (records {shown})",
                                (call.seq, *call.failed), resource=call.where)
        return self.verdict(Status.PASS, f"{call.operation} was given up cleanly: no further "
                            "call of it", (call.seq,), resource=call.where)

    def expire(self, now: float) -> Decided:
        """Past the limit, later calls that all failed decide it (no call yet: it waits,
        as a success after the limit still fails it)."""
        out: list[Verdict] = []
        for key, calls in list(self.pending.items()):
            for call in [c for c in calls if c.failed and now - c.t0 > self.limit_s]:
                calls.remove(call)
                out.append(self._ended(call))
            if not calls:
                del self.pending[key]
        return out

    def finish(self) -> Decided:
        out = [self._ended(c) for calls in self.pending.values() for c in calls]
        self.pending.clear()
        return out

    def summary(self) -> str:
        return f"every one of {self.seen} sweep fault(s) recovered"


def _json_of(message: model.Request | model.Response | None) -> Any:
    if message is None:
        return None
    value = message.json
    return None if value is jsonbody.INVALID else value


def _may_say_of_me(ex: Facts) -> bool:
    """Whether `_me` could find anything in this exchange: a body, or a DELETE."""
    return bool(ex.exchange.request.body) or ex.method == "DELETE"


def _me(ex: Facts) -> tuple[str | None, bool]:
    """(xuid, left) a write says of its caller: `members/me` with a xuid, or removed."""
    if ex.method == "DELETE" and ex.resource.kind is Kind.MEMBER:
        return None, True
    if not ex.exchange.request.body:
        return None, False  # no body: it says nothing of its caller
    body = _json_of(ex.exchange.request)
    members = body.get("members") if isinstance(body, Mapping) else None
    if not isinstance(members, Mapping) or "me" not in members:
        return None, False
    me = members["me"]
    if me is None:
        return None, True
    try:
        return str(me["constants"]["system"]["xuid"]), False
    except (KeyError, TypeError):
        return None, False


def _lists(ex: Facts, xuid: str) -> bool:
    body = _json_of(ex.exchange.response)
    members = body.get("members") if isinstance(body, Mapping) else None
    if not isinstance(members, Mapping):
        return False
    for member in members.values():
        try:
            if str(member["constants"]["system"]["xuid"]) == xuid:
                return True
        except (KeyError, TypeError):
            continue
    return False


class RecoveryStateRule(BaseRule):
    id = "recovery.state"
    nothing = "no fault of a fault sweep on a session the title is a member of"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.faults = _FirstFaults(self.max_keys)
        self.xuids: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.pending: OrderedDict[tuple[str, str], list[tuple[int, float]]] = OrderedDict()

    def feed(self, ex: Facts) -> Decided:
        cell = self.faults.first(ex)
        if cell is None and not self.pending and not _may_say_of_me(ex):
            return NOTHING  # no fault, none waiting, and nothing said of the caller's place
        if ex.resource.kind not in _MEMBER_KINDS or not ex.resource.name:
            return NOTHING
        key = (ex.resource.name, ex.client)
        out = self._judge(key, ex) if key in self.pending else []
        lost = cell is not None and (ex.exchange.provenance or {}).get("phase") == "response"
        if _success(ex) or lost:  # a lost answer: the write was applied
            found, left = _me(ex)
            if left:
                self.xuids.pop(key, None)
            elif found:
                self.xuids[key] = found
                self.xuids.move_to_end(key)
                while len(self.xuids) > self.max_keys:
                    self.xuids.popitem(last=False)
        if cell is not None and key in self.xuids:
            self.seen += 1
            self.pending.setdefault(key, []).append((ex.seq, ex.start))
            while len(self.pending) > self.max_keys:
                self.pending.popitem(last=False)
        return out

    def _judge(self, key: tuple[str, str], ex: Facts) -> list[Verdict]:
        """The first read (or clean leave) after the faults waiting on this session."""
        if (ex.exchange.provenance or {}).get("source") == "injected":
            return []
        faults = self.pending[key]
        _, left = _me(ex)
        if left and _success(ex):
            del self.pending[key]
            return [self.verdict(Status.PASS, "the title left the session cleanly",
                                 (seq, ex.seq), resource=ex.where, time=ex.end)
                    for seq, _ in faults]
        if ex.method != "GET" or ex.resource.kind is not Kind.SESSION:
            return []
        del self.pending[key]
        xuid = self.xuids.get(key)
        if ex.status == 200 and xuid is not None and _lists(ex, xuid):
            return [self.verdict(Status.PASS, "the next read shows the title still a member",
                                 (seq, ex.seq), resource=ex.where, time=ex.end)
                    for seq, _ in faults]
        return [self.verdict(Status.FAIL, f"the next read (record {ex.seq}, {ex.status}) does "
                             "not show the title as a member, and it did not leave",
                             (seq, ex.seq), resource=ex.where, time=ex.end)
                for seq, _ in faults]

    def expire(self, now: float) -> Decided:
        """A fault the title never read the session after: stop following it (no verdict)."""
        for key, faults in list(self.pending.items()):
            faults[:] = [(s, t) for s, t in faults if now - t <= STATE_WAIT_S]
            if not faults:
                del self.pending[key]
        return NOTHING

    def summary(self) -> str:
        return (f"{self.seen} sweep fault(s) on a session the title is a member of; "
                "no read after them contradicted it")


# -- one fault of a recording, for tests and tools --------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """One recovery verdict about one injected fault."""

    rule: str
    status: Status
    reason: str
    records: tuple[int, ...] = ()
    recover_ms: float | None = None

    @classmethod
    def of(cls, verdict: Verdict) -> Recovery:
        took = verdict.gaps_ms[0] if verdict.gaps_ms and verdict.rule == "recovery.call" \
            else None
        return cls(verdict.rule, verdict.status, verdict.reason, verdict.records, took)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "status": self.status.value, "reason": self.reason,
                "records": list(self.records), "recover_ms": self.recover_ms}
