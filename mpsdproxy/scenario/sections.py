"""A rule's sections (`match`, `when`, `fault`) -> the records of `model.py`.

These parsers take data the JSON Schema already accepted and check what a
schema cannot say: a `for` without `after`, a status combined with `drop`,
globs that do not compile, a throttle with a status of its own. They raise
`FieldError` with the key below the section, so `load.py` can place every
problem at its line and column. Status knowledge comes from the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import rta
from mpsdproxy.resources import Kind
from mpsdproxy.scenario.model import SESSION_KINDS
from mpsdproxy.scenario.model import THROTTLE_ENTRY
from mpsdproxy.scenario.model import Channel
from mpsdproxy.scenario.model import Delay
from mpsdproxy.scenario.model import Fault
from mpsdproxy.scenario.model import FixedDelay
from mpsdproxy.scenario.model import Glob
from mpsdproxy.scenario.model import HeaderMatch
from mpsdproxy.scenario.model import LognormalDelay
from mpsdproxy.scenario.model import Match
from mpsdproxy.scenario.model import Origin
from mpsdproxy.scenario.model import Per
from mpsdproxy.scenario.model import Phase
from mpsdproxy.scenario.model import RtaAction
from mpsdproxy.scenario.model import RtaFault
from mpsdproxy.scenario.model import Rule
from mpsdproxy.scenario.model import TapAction
from mpsdproxy.scenario.model import TapFault
from mpsdproxy.scenario.model import UniformDelay
from mpsdproxy.scenario.model import When
from mpsdproxy.scenario.model import parse_duration
from mpsdproxy.scenario.model import parse_glob
from mpsdproxy.yamlfile import FieldError
from mpsdproxy.yamlfile import show

__all__ = [
    "parse_match",
    "parse_when",
    "parse_delay",
    "parse_fault",
    "parse_rule",
    "rule_parts",
]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- match ------------------------------------------------------------------------------


def _globs(raw: Mapping[str, Any], key: str) -> tuple[Glob, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    out = []
    for i, text in enumerate(as_list(value)):
        where = (key, i) if isinstance(value, list) else (key,)
        try:
            glob = parse_glob(text)
        except ValueError as e:
            raise FieldError(where, str(e)) from None
        if key == "path" and not text.startswith(("/", "*", "?", "[")):
            raise FieldError(where, (
                f"a path glob matches the whole path, which starts with '/': "
                f"write '*{text}' or '/{text}', not {show(text)}"))
        if key == "host" and "/" in text:
            raise FieldError(where, f"a host name, not a URL: {show(text)}")
        out.append(glob)
    return tuple(out)


def _header_matches(raw: Mapping[str, Any] | None) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    seen: dict[str, str] = {}
    for name, value in (raw or {}).items():
        first = seen.setdefault(name.lower(), name)
        if first != name:
            raise FieldError(("headers", name),
                             f"repeats header {first!r} (header names ignore case)")
        if isinstance(value, bool):
            out.append(HeaderMatch(name, present=value))
            continue
        try:
            glob = parse_glob(value)
        except ValueError as e:
            raise FieldError(("headers", name), str(e)) from None
        out.append(HeaderMatch(name, glob=None if value == "*" else glob))
    return tuple(out)


def parse_match(raw: Mapping[str, Any] | None) -> Match:
    """`match:` mapping -> Match (None or {} matches every request)."""
    raw = raw or {}
    methods = raw.get("method")
    names = raw.get("resource")
    return Match(
        methods=frozenset(m.upper() for m in as_list(methods)) if methods is not None else None,
        resources=tuple(as_list(names)) if names is not None else (),
        paths=_globs(raw, "path"),
        hosts=_globs(raw, "host"),
        headers=_header_matches(raw.get("headers")),
    )


# --- when -------------------------------------------------------------------------------


def _duration_field(raw: Mapping[Any, Any], key: str | int) -> float | None:
    if key not in raw:
        return None
    try:
        return parse_duration(raw[key])
    except ValueError as e:
        raise FieldError((key,), str(e)) from None


def _check_when(raw: Mapping[str, Any], after: float | None) -> None:
    counters = [k for k in ("nth", "first", "every") if k in raw]
    if len(counters) > 1:
        raise FieldError((counters[1],), (
            f"{counters[0]} and {counters[1]} cannot be combined: choose one of nth "
            f"(exactly once), first (the first N) or every (every Nth)"))
    if "times" in raw and "nth" in raw:
        raise FieldError(("times",), "times has no effect with nth, which fires only once")
    if "for" in raw and after is None:
        raise FieldError(("for",), (
            "for needs after: it is the length of the window that opens at after "
            "(write after: 0s for a window from the start)"))
    if "from" in raw and after is None:
        raise FieldError(("from",), "from says where after counts from, but there is no after")
    if after == 0 and "for" not in raw:
        raise FieldError(("after",), (
            "after: 0 without for changes nothing; give a later start or a window with for"))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_when(raw: Mapping[str, Any] | None) -> When:
    """`when:` mapping -> When (None or {} fires on every match)."""
    raw = raw or {}
    after = _duration_field(raw, "after")
    window = _duration_field(raw, "for")
    _check_when(raw, after)
    probability = raw.get("probability")
    if probability is not None and not 0 <= probability <= 1:
        raise FieldError(("probability",),
                         f"a probability is between 0 and 1, not {show(probability)}")
    return When(
        nth=_int_or_none(raw.get("nth")),
        first=_int_or_none(raw.get("first")),
        every=_int_or_none(raw.get("every")),
        probability=float(probability) if probability is not None else None,
        after=after,
        for_=window,
        times=_int_or_none(raw.get("times")),
        from_=Origin(raw.get("from", Origin.START)),
    )


# --- delay ------------------------------------------------------------------------------


def _lognormal(raw: Mapping[str, Any]) -> LognormalDelay:
    median = _duration_field(raw, "median")
    maximum = _duration_field(raw, "max")
    assert median is not None and maximum is not None  # required by the schema
    if median <= 0:
        raise FieldError(("median",), "a log-normal median must be more than 0")
    if maximum < median:
        raise FieldError(("max",), f"max ({raw['max']}) is below the median ({raw['median']})")
    sigma = raw["sigma"]
    if not math.isfinite(sigma):
        raise FieldError(("sigma",), f"sigma must be finite, not {show(sigma)}")
    return LognormalDelay(median, float(sigma), maximum)


def _uniform(bounds: list[Any]) -> UniformDelay:
    low, high = (_duration_field(dict(enumerate(bounds)), i) for i in (0, 1))
    assert low is not None and high is not None  # two items, by the schema
    if high < low:
        raise FieldError((1,), f"the high bound ({bounds[1]}) is below the low one ({bounds[0]})")
    return UniformDelay(low, high)


def parse_delay(value: Any) -> Delay:
    """`1500ms` | `{uniform: [low, high]}` | `{lognormal: {median, sigma, max}}` -> Delay."""
    if isinstance(value, Mapping):
        try:
            if "uniform" in value:
                return _uniform(value["uniform"])
            if "lognormal" in value:
                return _lognormal(value["lognormal"])
        except FieldError as e:
            raise e.within(next(iter(value))) from None
        raise FieldError((), "a delay mapping holds uniform or lognormal")
    try:
        return FixedDelay(parse_duration(value))
    except ValueError as e:
        raise FieldError((), str(e)) from None


# --- fault ------------------------------------------------------------------------------


def _body(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return faults.encode_json(value)


def _statuses(raw: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """The status and explicit row, consistent with each other."""
    status, entry = raw.get("status"), raw.get("entry")
    if entry is None:
        return status, None
    row = catalog.get(entry)
    if status is not None and status != row.status:
        raise FieldError(("entry",), f"{entry} is a row of {row.status}, but status is {status}")
    return row.status, entry


def _truncates(raw: Mapping[str, Any]) -> bool:
    """`truncate: true` or a byte count (0 included); `false` or no key mean no cut."""
    return "truncate" in raw and raw["truncate"] is not False


def _all_rows_bodiless(status: int) -> bool:
    return all(e.body is catalog.BodyKind.NONE for e in catalog.for_status(status))


def _check_connection(raw: Mapping[str, Any]) -> None:
    closing = [k for k in ("drop", "reset", "hang") if raw.get(k)]
    if len(closing) > 1:
        raise FieldError((closing[1],), f"{closing[0]} and {closing[1]} cannot be combined")
    if not closing:
        return
    answer = [k for k in ("status", "entry", "body", "headers", "retry_after", "content_type",
                          "throttle") if k in raw] + (["truncate"] if _truncates(raw) else [])
    if answer:
        listed = ", ".join(answer)
        raise FieldError((closing[0],), (
            f"{closing[0]} gives no answer, so it cannot be combined with {listed}"))
    if closing[0] == "hang" and "delay" in raw:
        raise FieldError(("delay",), "delay has no effect with hang, which never answers")


def _check_throttle(raw: Mapping[str, Any], phase: Phase) -> None:
    spec = raw["throttle"]
    if spec["sustained"] < spec["burst"]:
        raise FieldError(("throttle", "sustained"), (
            f"sustained ({spec['sustained']} per {fgrl.SUSTAINED_SECONDS} s) is below burst "
            f"({spec['burst']} per {fgrl.BURST_SECONDS} s), so burst could never be reached"))
    if phase is Phase.RESPONSE:
        raise FieldError(("throttle",), (
            "throttling answers instead of the service: use phase: request"))
    own = catalog.get(THROTTLE_ENTRY).status
    status, entry = raw.get("status"), raw.get("entry")
    if status not in (None, own) or (entry is not None and catalog.get(entry).status != own):
        key = "status" if "status" in raw else "entry"
        raise FieldError((key,), f"throttle answers {own} by itself: remove the other status")
    if "retry_after" in raw:
        raise FieldError(("retry_after",), (
            "throttle computes a truthful Retry-After itself: remove retry_after"))


def _check_answer(raw: Mapping[str, Any], status: int | None, phase: Phase) -> None:
    answers = status is not None or "throttle" in raw
    overrides = [k for k in ("body", "headers", "content_type", "retry_after") if k in raw]
    if overrides and not answers and phase is Phase.REQUEST:
        raise FieldError((overrides[0],), (
            f"{overrides[0]} needs a status: in phase request nothing has answered yet "
            f"(add status, or use phase: response to change the real answer)"))
    if "retry_after" in raw and status is not None and status not in catalog.RETRY_AFTER_STATUSES:
        carriers = ", ".join(str(s) for s in sorted(catalog.RETRY_AFTER_STATUSES))
        raise FieldError(("retry_after",), (
            f"retry_after applies to the rows that carry Retry-After ({carriers}), not "
            f"{status}; to send one anyway use headers: {{Retry-After: ...}}"))
    if _truncates(raw):
        if not answers and phase is Phase.REQUEST:
            raise FieldError(("truncate",), (
                "truncate needs an answer to cut: give a status, or use phase: response "
                "to cut the real answer"))
        if status is not None and "body" not in raw and _all_rows_bodiless(status):
            raise FieldError(("truncate",), (
                f"nothing to truncate: the table lists no body for {status}"))


def _does_something(raw: Mapping[str, Any], phase: Phase, delay: Delay | None) -> bool:
    acts = ("status", "entry", "throttle")
    if any(k in raw for k in acts) or any(raw.get(k) for k in ("drop", "reset", "hang")):
        return True
    if _truncates(raw):
        return True
    if delay is not None and delay != FixedDelay(0.0):
        return True
    edits = ("body", "headers", "content_type", "retry_after")
    return phase is Phase.RESPONSE and any(k in raw for k in edits)


def _budget(raw: Mapping[str, Any] | None) -> fgrl.Budget | None:
    """`throttle: {burst, sustained}` -> the FGRL budget (the schema keeps both >= 1)."""
    if not raw:
        return None
    return fgrl.Budget(burst=int(raw["burst"]), sustained=int(raw["sustained"]))


def parse_fault(raw: Mapping[str, Any], phase: Phase = Phase.REQUEST) -> Fault:
    """`fault:` mapping -> Fault, checking that its keys make sense together."""
    if "tap" in raw or "rta" in raw:
        return _websocket_fault(raw)
    status, entry = _statuses(raw)
    delay = None
    if "delay" in raw:
        try:
            delay = parse_delay(raw["delay"])
        except FieldError as e:
            raise e.within("delay") from None
    _check_connection(raw)
    if "throttle" in raw:
        _check_throttle(raw, phase)
    _check_answer(raw, status, phase)
    if raw.get("force") and (status is None or "throttle" in raw):
        raise FieldError(("force",), (
            "force lets a status the service could not give for the request answer anyway; "
            "this fault gives no status of its own, so it has nothing to force"))
    if not _does_something(raw, phase, delay):
        raise FieldError((), (
            "this fault does nothing: give a status, a delay, drop, reset, hang, truncate "
            "or throttle"))
    truncate = raw.get("truncate", False)
    return Fault(
        status=status,
        entry=entry,
        body=_body(raw.get("body")),
        headers=tuple((k, None if v is None else str(v))
                      for k, v in (raw.get("headers") or {}).items()),
        retry_after=raw.get("retry_after"),
        content_type=raw.get("content_type"),
        delay=delay,
        drop=bool(raw.get("drop")),
        reset=bool(raw.get("reset")),
        hang=bool(raw.get("hang")),
        truncate=_truncates(raw),
        truncate_to=None if isinstance(truncate, bool) else int(truncate),
        throttle=_budget(raw.get("throttle")),
        force=bool(raw.get("force")),
    )


# --- RTA faults -------------------------------------------------------------------------

#: The subscribe statuses a fault may give: every `rta.Status` but success.
SUBSCRIBE_ERRORS = tuple(int(s) for s in rta.Status if s is not rta.Status.SUCCESS)


def _tap_fault(value: Any) -> TapFault:
    """`drop` | `duplicate` | `reorder` | `stale` | `{delay: 5s}` -> TapFault."""
    if isinstance(value, Mapping):
        try:
            delay = parse_delay(value["delay"])
        except FieldError as e:
            raise e.within("tap", "delay") from None
        if delay == FixedDelay(0.0):
            raise FieldError(("tap", "delay"), "a delay of 0 changes nothing: give a longer one")
        return TapFault(TapAction.DELAY, delay)
    if value == TapAction.DELAY.value or value not in {a.value for a in TapAction}:
        raise FieldError(("tap",), f"{show(value)} is not a tap fault; valid ones are: drop, "
                                   f"duplicate, reorder, stale, {{delay: 5s}}")
    return TapFault(TapAction(value))


def _rta_fault(value: Any) -> RtaFault:
    """`close` | `resync` | `{subscribe_status: N}` -> RtaFault (N an `rta.Status`)."""
    if isinstance(value, Mapping):
        status = value.get("subscribe_status")
        if status not in SUBSCRIBE_ERRORS or isinstance(status, bool):
            listed = ", ".join(f"{int(s)} ({s.name.lower()})" for s in rta.Status
                               if int(s) in SUBSCRIBE_ERRORS)
            raise FieldError(("rta", "subscribe_status"), (
                f"a subscribe status the service gives for a failed subscribe: {listed}; "
                f"not {show(status)}"))
        return RtaFault(RtaAction.SUBSCRIBE_STATUS, int(status))
    if value not in (RtaAction.CLOSE.value, RtaAction.RESYNC.value):
        raise FieldError(("rta",), f"{show(value)} is not an rta fault; valid ones are: close, "
                                   f"resync, {{subscribe_status: N}}")
    return RtaFault(RtaAction(value))


def _websocket_fault(raw: Mapping[str, Any]) -> Fault:
    """A fault with `tap` or `rta`: it acts on the RTA websocket, so it takes no other key
    (an HTTP answer, delay or connection fault would have no request to act on)."""
    if "tap" in raw and "rta" in raw:
        raise FieldError(("rta",), "tap and rta cannot be combined: write two rules")
    key = "tap" if "tap" in raw else "rta"
    others = [k for k in raw if k != key]
    if others:
        hint = " (write tap: {delay: 5s} for a late tap)" if "delay" in others else ""
        raise FieldError((others[0],), (
            f"{key} acts on the RTA websocket, not on an HTTP request: it cannot be combined "
            f"with {', '.join(others)}{hint}"))
    if key == "tap":
        return Fault(tap=_tap_fault(raw["tap"]))
    return Fault(rta=_rta_fault(raw["rta"]))


def _check_websocket_rule(rule: Rule, raw: Mapping[str, Any]) -> None:
    """What an RTA rule's sections cannot say: it has no response phase, a websocket
    message has no method or headers to match, and what it may name."""
    key = "tap" if rule.channel is Channel.TAP else "rta"
    if raw.get("phase") == Phase.RESPONSE.value:
        raise FieldError(("phase",), (
            f"a {key} rule acts on websocket messages, which have no response phase: "
            f"remove phase"))
    for name, present in (("method", rule.match.methods is not None),
                          ("headers", bool(rule.match.headers))):
        if present:
            raise FieldError(("match", name), (
                f"a {key} rule matches websocket messages, which have no {name}: match the "
                f"tap's session by path or resource (or the subscribed URI by path)"))
    kinds = rule.match.kinds
    if rule.channel is Channel.TAP and kinds is not None and Kind.SESSION not in kinds:
        raise FieldError(("match", "resource"), (
            f"a tap names a session, so resource {', '.join(rule.match.resources)} never "
            f"matches one: use session (or leave resource out)"))
    if rule.channel is Channel.SUBSCRIBE:
        if kinds is not None:
            raise FieldError(("match", "resource"), (
                "a subscribe names no session: match the subscribed URI by path "
                "(such as /connections/*) instead of resource"))
        if rule.per is Per.SESSION:
            raise FieldError(("per",), (
                "per: session counts taps by their session, but a subscribe names none: "
                "use global or client"))


# --- rule -------------------------------------------------------------------------------


def _check_scope(rule: Rule) -> None:
    kinds = rule.match.kinds
    if rule.per is Per.SESSION and kinds is not None and not kinds & SESSION_KINDS:
        names = ", ".join(rule.match.resources)
        raise FieldError(("per",), (
            f"per: session counts requests to sessions, but resource {names} never names one"))


def rule_parts(raw: Mapping[str, Any], index: int) -> tuple[Rule | None, list[FieldError]]:
    """Parse a rule's sections independently, so one bad section hides no other problem."""
    errors: list[FieldError] = []
    phase = Phase(raw.get("phase", Phase.REQUEST))
    parts: dict[str, Any] = {}
    for key, parse in (("match", parse_match), ("when", parse_when),
                       ("fault", lambda r: parse_fault(r, phase))):
        try:
            parts[key] = parse(raw.get(key))
        except FieldError as e:
            errors.append(e.within(key))
    if errors:
        return None, errors
    rule = Rule(raw["name"], parts["match"], parts["when"], parts["fault"], phase,
                Per(raw.get("per", Per.GLOBAL)), index, raw.get("description", ""),
                raw.get("enabled", True))
    try:
        _check_scope(rule)
        if rule.channel is not Channel.HTTP:
            _check_websocket_rule(rule, raw)
    except FieldError as e:
        return None, [e]
    return rule, []


def parse_rule(raw: Mapping[str, Any], index: int = 0) -> Rule:
    """One schema-valid `rules[]` mapping -> Rule; FieldError (a ValueError) on the first
    problem, its `key` relative to the rule."""
    rule, errors = rule_parts(raw, index)
    if errors:
        raise errors[0]
    assert rule is not None
    return rule
