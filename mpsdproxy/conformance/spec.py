"""What a conformance call is: the request the client library sends and the answer shape
its parser needs, written as data.

A `Call` is one call kind. Its request is a template: `{name}` in the path, in header
values and in any string of the JSON body is replaced before sending, from the run's
`Setup` (SCID, templates, users) and from what earlier answers gave (`saves`: an ETag,
a handle id, a ticket id). A string that is exactly `{name}` takes the saved value
with its JSON type.

An answer is checked against `Expect`: the status, headers that must be there, and
`fields`, each a `(path, kind)` pair. A path is dotted (`members.0.gamertag`); `*`
stands for every key of an object or every item of a list, and an empty object or
list under `*` is a difference unless the call says `may_be_empty`. Kinds:

- a JSON type: `string`, `int`, `number`, `bool`, `object`, `array`, `present`
  (any value, null included);
- `digits` (a string of decimal digits: XUIDs and title ids travel as strings),
  `datetime` (an ISO 8601 string);
- `absent`: the field must not be there;
- `one of a|b|c`: a string among these;
- `=<JSON>`: equal to this JSON value (`="followed"`, `=[0]`, `=true`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from dataclasses import field
from typing import Any

MPSD_CONTRACT = "107"  # multiplayer_service.cpp: MULTIPLAYER_SERVICE_CONTRACT_VERSION
SMARTMATCH_CONTRACT = "103"  # matchmaking_service.cpp: set_xbox_contract_version_header_value

DEFAULT_SCID = "7492baca-c1b4-440d-a391-b7ef00000001"


@dataclass(frozen=True)
class Expect:
    status: tuple[int, ...]
    headers: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    may_be_empty: bool = False


@dataclass(frozen=True)
class Call:
    """One call kind: the request (a template) and what its answer must look like."""

    kind: str
    tests: tuple[str, ...]  # the library's unit tests that exercise it
    method: str
    path: str
    expect: Expect
    body: Any = None
    who: str = "host"
    headers: tuple[tuple[str, str], ...] = ()
    contract: str = MPSD_CONTRACT
    saves: tuple[tuple[str, str], ...] = ()  # (name, "header:ETag" | "json:<path>")


@dataclass(frozen=True)
class Setup:
    """Where the suite runs: the target's SCID, templates, hopper and callers."""

    scid: str = DEFAULT_SCID
    lobby_template: str = "LobbySession"
    game_template: str = "GameSession"
    large_template: str = "LargeSession"
    hopper: str = "QuickMatch"
    host_xuid: str = "2533274800000001"
    guest_xuid: str = "2533274800000002"
    reserved_xuid: str = "2533274800000003"
    title_id: str = "1234567890"
    run: str = "conformance"  # a per-run suffix that keeps session names unique
    users: dict[str, str] = field(default_factory=dict)  # who -> user hash, when not the XUID

    def values(self) -> dict[str, Any]:
        return {
            "scid": self.scid, "lobby_template": self.lobby_template,
            "game_template": self.game_template, "large_template": self.large_template,
            "hopper": self.hopper, "host_xuid": self.host_xuid,
            "guest_xuid": self.guest_xuid, "reserved_xuid": self.reserved_xuid,
            "title_id": self.title_id,
            "lobby": f"lobby-{self.run}", "game": f"game-{self.run}",
            "built": f"built-{self.run}", "large": f"large-{self.run}",
        }

    def user_hash(self, who: str) -> str:
        xuid = {"host": self.host_xuid, "guest": self.guest_xuid}[who]
        return self.users.get(who, xuid)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class Missing(KeyError):
    """A template names a value no earlier answer gave."""


def fill(template: Any, values: dict[str, Any]) -> Any:
    """The template with every `{name}` replaced; a bare `{name}` keeps the value's type."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return _value(whole.group(1), values)
        return _PLACEHOLDER.sub(lambda m: str(_value(m.group(1), values)), template)
    if isinstance(template, dict):
        return {fill(k, values): fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(item, values) for item in template]
    return template


def _value(name: str, values: dict[str, Any]) -> Any:
    if name not in values:
        raise Missing(name)
    return values[name]


_ABSENT = object()


def lookup(document: Any, path: str) -> list[tuple[str, Any]]:
    """Every (concrete path, value) `path` reaches; a missing step yields `_ABSENT`.

    Raises ValueError naming the container when `*` meets an empty one."""
    found: list[tuple[str, Any]] = [("", document)]
    for step in path.split("."):
        after: list[tuple[str, Any]] = []
        for where, value in found:
            here = f"{where}.{step}" if where else step
            if step == "*":
                after.extend(_every(where, value))
            elif isinstance(value, dict) and step in value:
                after.append((here, value[step]))
            elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
                after.append((here, value[int(step)]))
            else:
                after.append((here, _ABSENT))
        found = after
    return found


def _every(where: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [(f"{where}.{k}" if where else k, v) for k, v in value.items()]
    if isinstance(value, list) and value:
        return [(f"{where}.{i}" if where else str(i), v) for i, v in enumerate(value)]
    raise ValueError(where or "the answer")


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "present": lambda v: True,
    "digits": lambda v: isinstance(v, str) and v.isdigit(),
    "datetime": lambda v: isinstance(v, str)
    and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", v) is not None,
}


def check_field(document: Any, path: str, kind: str, may_be_empty: bool) -> list[str]:
    """The differences of one field rule, as sentences (none when it holds)."""
    try:
        found = lookup(document, path)
    except ValueError as e:
        return [] if may_be_empty else [f"{e}: empty, nothing to check for {path}"]
    problems = []
    for where, value in found:
        problem = _judge(value, kind)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def _judge(value: Any, kind: str) -> str | None:
    if kind == "absent":
        return None if value is _ABSENT else f"expected no such field, got {_show(value)}"
    if value is _ABSENT:
        return f"missing (expected {kind})"
    if kind.startswith("="):
        wanted = json.loads(kind[1:])
        return None if value == wanted else f"expected {_show(wanted)}, got {_show(value)}"
    if kind.startswith("one of "):
        choices = kind[len("one of "):].split("|")
        return None if value in choices else f"expected one of {choices}, got {_show(value)}"
    return None if _TYPES[kind](value) else f"expected {kind}, got {_show(value)}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."
