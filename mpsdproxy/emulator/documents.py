"""Session documents: how a PUT's delta merges into one, and what members look like.

Pure functions over plain JSON data (protocol notes §3): no stored state, no
clock but the time they are given. A write that the service would refuse
raises `Refusal` with the row it would answer. What the service writes itself
(gamertags, device tokens, turn flags, role counts) is `members.py`; how a
caller sees a document (its contract's names, large sessions) is `views.py`.

What a write may carry, as the library sends it (its unit tests' request
bodies, MultiplayerTests.cpp): a member's `constants.custom` is any JSON value
(`Join()` sends a string), a `servers` entry is any JSON value, `roleTypes` and
a member's `roles` are kept and answered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy.emulator.config import DEFAULT_TITLE_ID
from mpsdproxy.emulator.members import Writer
from mpsdproxy.emulator.members import refresh_service_fields
from mpsdproxy.emulator.members import session_defaults
from mpsdproxy.emulator.members import stamp_joined
from mpsdproxy.emulator.members import stamp_reserved
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.protocol import require_object
from mpsdproxy.emulator.views import CURRENT_CONTRACT
from mpsdproxy.emulator.views import is_large
from mpsdproxy.emulator.views import upgrade
from mpsdproxy.resources import Resource

__all__ = [
    "HANDLE_TYPES",
    "is_large",
    "require_sections",
    "member_xuid",
    "find_member",
    "member_status",
    "complete",
    "new_document",
    "Merge",
    "element_delta",
    "etag_matches",
    "named_xuid",
    "derived_xuid",
    "session_ref",
    "handle_type",
    "take",
]

_RESERVE = re.compile(r"reserve_\d+", re.IGNORECASE)
HANDLE_TYPES = ("activity", "invite", "transfer", "search")
#: Member constants a write may repeat without conflict and the service does not store
#: as sent: the caller's identity (checked before the merge), the index it assigns, the
#: one-shot `initialize` request (absent from real responses, protocol notes §3.2), and
#: the console's `deviceToken` (answered as the member's own `deviceToken`).
_MEMBER_DIRECTIVES = ("xuid", "index", "initialize", "deviceToken")


def require_sections(value: Any, where: str) -> dict[str, Any]:
    """An object whose `system` and `custom` parts, when present, are objects (or null)."""
    data = require_object(value, where)
    for part in ("system", "custom"):
        if data.get(part) is not None:
            require_object(data[part], f"{where}.{part}")
    return data


def _part(container: dict[str, Any], key: str) -> dict[str, Any]:
    """container[key] as an object, made one if missing (seeded documents may be partial)."""
    value = container.get(key)
    if not isinstance(value, dict):
        value = container[key] = {}
    return value


def _deep_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge a delta into a document part: objects merge, null removes, the rest replaces.
    Values are copied: the delta is the request's shared parse."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            _deep_merge(_part(target, key), value)
        else:
            target[key] = copy.deepcopy(value)


def _conflict(current: Mapping[str, Any], requested: Mapping[str, Any], where: str,
              *, new_keys: bool) -> str | None:
    """The first requested constant that differs from the stored one (None: compatible).

    Constants are fixed once set: a key the stored constants lack is a conflict
    too, unless `new_keys` (the session or member is being created).
    """
    for key, value in requested.items():
        here = f"{where}.{key}"
        if key not in current:
            if new_keys:
                continue
            return f"{here} is not set and can't be added once the session exists"
        stored = current[key]
        if isinstance(value, dict) and isinstance(stored, dict):
            found = _conflict(stored, value, here, new_keys=new_keys)
            if found:
                return found
        elif value != stored:
            return f"{here} is {json.dumps(stored)}, not {json.dumps(value)}"
    return None


def member_xuid(member: Any) -> str | None:
    try:
        xuid = member["constants"]["system"]["xuid"]
    except (KeyError, TypeError):
        return None
    if isinstance(xuid, bool) or not isinstance(xuid, str | int):
        return None
    return str(xuid)


def find_member(document: Mapping[str, Any], xuid: str) -> str | None:
    """The index of the member with this XUID, if any."""
    for index, member in document.get("members", {}).items():
        if member_xuid(member) == xuid:
            return index
    return None


def _index_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _is_active(member: Mapping[str, Any]) -> bool:
    properties = member.get("properties")
    system = properties.get("system") if isinstance(properties, dict) else None
    return isinstance(system, dict) and system.get("active") is True


def member_status(member: Mapping[str, Any]) -> str:
    if member.get("reserved"):
        return "reserved"
    return "active" if _is_active(member) else "inactive"


def _refresh_members(document: dict[str, Any]) -> None:
    """Recompute membersInfo and each member's `next` link after the members changed."""
    members = document["members"]
    order = sorted(members, key=_index_order)
    info = document["membersInfo"]
    indices = [int(k) for k in order if k.isdigit()]
    info["next"] = max([int(info.get("next", 0)), *(i + 1 for i in indices)])
    info["first"] = indices[0] if indices else info["next"]
    info["count"] = len(order)
    info["accepted"] = sum(1 for k in order if not members[k].get("reserved"))
    info["active"] = sum(1 for k in order if _is_active(members[k]))
    document["members"] = {k: members[k] for k in order}
    for position, index in enumerate(indices):
        following = indices[position + 1] if position + 1 < len(indices) else info["next"]
        members[str(index)]["next"] = following


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Give a document (a seeded one may be partial) every top-level key the core needs."""
    for key, default in (("constants", {}), ("properties", {}), ("members", {}),
                         ("servers", {}), ("membersInfo", {})):
        if not isinstance(document.get(key), dict):
            document[key] = copy.deepcopy(default)
    for part in ("constants", "properties"):
        _part(document[part], "system")
        _part(document[part], "custom")
    document["members"] = {str(k): v for k, v in document["members"].items()
                           if isinstance(v, dict)}
    if not isinstance(document.get("changeNumber"), int):
        document["changeNumber"] = 0
    document.setdefault("branch", str(uuid.uuid4()))
    document.setdefault("correlationId", str(uuid.uuid4()))
    return document


def new_document(constants: Mapping[str, Any], contract: int, now: str) -> dict[str, Any]:
    """A session before its first write: the template's constants (in contract 107 names,
    whichever the config used) and nothing else."""
    start = copy.deepcopy(dict(constants))
    start["system"] = upgrade(start.get("system") or {})
    start.setdefault("custom", {})
    return {
        "contractVersion": contract,
        "branch": str(uuid.uuid4()),
        "changeNumber": 0,
        "correlationId": str(uuid.uuid4()),
        "startTime": now,
        "constants": start,
        "properties": {"system": {}, "custom": {}},
        "members": {},
        "membersInfo": {"first": 0, "next": 0, "count": 0, "accepted": 0, "active": 0},
        "servers": {},
    }


class Merge:
    """Applies a PUT body (a delta, protocol notes §3.3) to a copy of a session document.

    Raises Refusal for wrong types (400), changed constants and, on large
    sessions, members other than the caller added or removed (409), and member
    references that need a server principal (403). `contract` is the request's:
    older contracts' constant names are read as 107's (`views.upgrade`).
    """

    def __init__(self, document: dict[str, Any], *, now: str, creating: bool,
                 writer: Writer | None = None, contract: int = CURRENT_CONTRACT) -> None:
        # Without a writer the service itself writes (a timer): no caller, no console.
        self.document = document
        self.writer = writer or Writer(xuid="", device_token="", title_id=DEFAULT_TITLE_ID)
        self.caller = self.writer.xuid
        self.now = now
        self.creating = creating
        self.contract = contract

    @property
    def large(self) -> bool:
        """Large per the session's own constants (template or request), read after the
        request's constants merged."""
        return is_large(self.document)

    def apply(self, delta: Mapping[str, Any]) -> dict[str, Any]:
        if delta.get("constants") is not None:
            self._constants(delta["constants"])
        if delta.get("properties") is not None:
            self._properties(delta["properties"])
        if delta.get("roleTypes") is not None:
            self._role_types(delta["roleTypes"])
        if delta.get("servers") is not None:
            self._servers(delta["servers"])
        if delta.get("members") is not None:
            self._members(delta["members"])
        if self.creating:
            system = self.document["properties"]["system"]
            for key, value in session_defaults(self.document["constants"]).items():
                system.setdefault(key, value)
        _refresh_members(self.document)
        refresh_service_fields(self.document)
        return self.document

    def _constants(self, value: Any) -> None:
        requested = require_sections(value, "constants")
        if self.contract < CURRENT_CONTRACT and isinstance(requested.get("system"), dict):
            requested = {**requested, "system": upgrade(requested["system"])}
        found = _conflict(self.document["constants"], requested, "constants",
                          new_keys=self.creating)
        if found:
            source = "the session template" if self.creating else "the session"
            raise Refusal("409.conflict", f"Constants conflict with {source}: {found}.")
        _deep_merge(self.document["constants"], requested)

    def _properties(self, value: Any) -> None:
        _deep_merge(self.document["properties"], require_sections(value, "properties"))
        self.document["properties"].setdefault("system", {})
        self.document["properties"].setdefault("custom", {})

    def _role_types(self, value: Any) -> None:
        """`roleTypes` {type: {roles: {name: {max, target}}}} (the library's
        roleTypesRequestJson shape); counts are the service's, so a request's are
        recomputed."""
        for name, role_type in require_object(value, "roleTypes").items():
            if role_type is None:
                continue
            roles = require_object(role_type, f"roleTypes.{name}").get("roles")
            if roles is not None:
                for role, spec in require_object(roles, f"roleTypes.{name}.roles").items():
                    if spec is not None:
                        require_object(spec, f"roleTypes.{name}.roles.{role}")
        _deep_merge(_part(self.document, "roleTypes"), value)

    def _servers(self, value: Any) -> None:
        """Servers entries are any JSON (the library's serversJson writes a number)."""
        servers = self.document["servers"]
        for name, server in require_object(value, "servers").items():
            if server is None:
                servers.pop(name, None)
            elif isinstance(server, dict):
                _deep_merge(_part(servers, name), server)
            else:
                servers[name] = copy.deepcopy(server)

    def _members(self, value: Any) -> None:
        for key, member in require_object(value, "members").items():
            if key.lower() == "me":
                self._me(member)
            elif _RESERVE.fullmatch(key):
                self._reserve(key, member)
            elif key.isdigit():
                self._other(key, member)
            else:
                raise Refusal("400.bad-request", f"members.{key}: member keys are 'me', "
                                                 "'reserve_<n>' or a member index.")

    def _me(self, member: Any) -> None:
        members = self.document["members"]
        index = find_member(self.document, self.caller)
        if member is None:
            if index is not None:
                del members[index]
            return
        token = _device_token(require_object(member, "members.me"))
        joining = index is None or bool(members[index].get("reserved"))
        if index is None:
            index = self._add(self.caller, reserved=False)
        members[index].pop("reserved", None)
        target = members[index]
        if joining:
            stamp_joined(target, self.writer, self.now, token)
        elif token is not None and token.lower() != str(target.get("deviceToken", "")).lower():
            raise Refusal("409.conflict", f"Member constants conflict: members.me.constants."
                                          f"system.deviceToken is "
                                          f"{json.dumps(target.get('deviceToken'))}, "
                                          f"not {json.dumps(token)}.")
        self._merge_member(target, member, "members.me", joining)

    def _reserve(self, key: str, member: Any) -> None:
        if self.large:
            raise Refusal("409.conflict", f"members.{key}: members other than the caller "
                                          "can't be added to a large session.")
        xuid = member_xuid(require_object(member, f"members.{key}"))
        if xuid is None:
            raise Refusal("400.bad-request", f"members.{key}.constants.system.xuid is required.")
        if find_member(self.document, xuid) is None:
            index = self._add(xuid, reserved=True)
            self._merge_member(self.document["members"][index], member, f"members.{key}", True)

    def _other(self, key: str, member: Any) -> None:
        """`"<index>": null` deletes a member: the caller's own, or (a server principal
        only, protocol notes §3.3) anyone's; never another's on a large session (409).
        Any other value references an existing member: a server principal's only."""
        index = str(int(key))
        own = index == find_member(self.document, self.caller)
        if member is not None:
            if not self.writer.server:
                raise Refusal("403.forbidden", "The request body can't contain existing member "
                                               "references unless the authentication "
                                               "principal includes a server.")
            target = self.document["members"].get(index)
            if target is not None:
                self._merge_member(target, require_object(member, f"members.{key}"),
                                   f"members.{key}", False)
            return
        if self.large and not own:
            raise Refusal("409.conflict", f"members.{key}: members other than the caller "
                                          "can't be removed from a large session.")
        if not own and not self.writer.server and index in self.document["members"]:
            raise Refusal("403.forbidden", f"members.{key}: only a server principal may "
                                           "remove another member from the session.")
        self.document["members"].pop(index, None)

    def _add(self, xuid: str, *, reserved: bool) -> str:
        info = self.document["membersInfo"]
        taken = [int(k) + 1 for k in self.document["members"] if k.isdigit()]
        index = max([int(info.get("next", 0)), *taken])
        info["next"] = index + 1
        member: dict[str, Any] = {
            "constants": {"system": {"xuid": xuid, "index": index}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
        }
        if reserved:
            member["reserved"] = True
            stamp_reserved(member, xuid, self.writer)
        self.document["members"][str(index)] = member
        return str(index)

    def _merge_member(self, member: dict[str, Any], value: Mapping[str, Any], where: str,
                      fresh: bool) -> None:
        if value.get("constants") is not None:
            self._member_constants(member, value["constants"], f"{where}.constants", fresh)
        if value.get("properties") is not None:
            _deep_merge(_part(member, "properties"),
                        require_sections(value["properties"], f"{where}.properties"))
        if value.get("roles") is not None:
            _merge_roles(member, value["roles"], f"{where}.roles")

    def _member_constants(self, member: dict[str, Any], value: Any, where: str,
                          fresh: bool) -> None:
        """A member's constants: `system` an object, `custom` any JSON value; fixed once the
        member joined (409), set freely while it joins."""
        requested = copy.deepcopy(require_object(value, where))
        if requested.get("system") is not None:
            require_object(requested["system"], f"{where}.system")
            for directive in _MEMBER_DIRECTIVES:
                requested["system"].pop(directive, None)
        constants = _part(member, "constants")
        custom = requested.get("custom")
        if fresh and "custom" in requested and not (
                isinstance(custom, dict) and isinstance(constants.get("custom"), dict)):
            constants["custom"] = requested.pop("custom")
        found = _conflict(constants, requested, where, new_keys=fresh)
        if found:
            raise Refusal("409.conflict", f"Member constants conflict: {found}.")
        _deep_merge(constants, requested)


def _device_token(member: Mapping[str, Any]) -> str | None:
    """The console's device token a member write names (constants.system.deviceToken)."""
    constants = member.get("constants")
    system = constants.get("system") if isinstance(constants, dict) else None
    token = system.get("deviceToken") if isinstance(system, dict) else None
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or len(token) > 64:
        raise Refusal("400.bad-request", "members.me.constants.system.deviceToken should be "
                                         f"a non-empty string, not {json.dumps(token)}.")
    return token.strip()


def _merge_roles(member: dict[str, Any], value: Any, where: str) -> None:
    """A member's `roles` {role type: role name}; null removes one."""
    roles = _part(member, "roles")
    for role_type, role in require_object(value, where).items():
        if role is None:
            roles.pop(role_type, None)
        elif isinstance(role, str):
            roles[role_type] = role
        else:
            raise Refusal("400.bad-request", f"{where}.{role_type} should be a role name, "
                                             f"not {jsonbody.json_kind(role)}.")
    if not roles:
        member.pop("roles", None)


def element_delta(resource: Resource, value: Any) -> dict[str, Any]:
    """The session-level delta that a PUT or DELETE of an element stands for."""
    part, _, rest = (resource.element or "").partition("/")
    match part.lower():
        case "members":
            return {"members": {"me" if rest.lower() == "me" else rest: value}}
        case "servers":
            return {"servers": {rest: value}}
    return {"properties": value}


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an If-Match / If-None-Match value names this ETag (or is `*`)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in (v.strip() for v in header.split(","))


def named_xuid(delta: Mapping[str, Any]) -> str | None:
    """The XUID a write names for the caller (members.me.constants.system.xuid)."""
    members = delta.get("members")
    if not isinstance(members, dict):
        return None
    me = next((v for k, v in members.items() if k.lower() == "me"), None)
    return member_xuid(me)


def derived_xuid(user: str) -> str:
    """A caller's XUID before a write names one: the user hash when it is all digits,
    else a stable number derived from it."""
    if user.isdigit() and len(user) <= 20:
        return user
    digest = int(hashlib.sha256(user.encode()).hexdigest()[:12], 16)
    return str(2_533_274_000_000_000 + digest % 1_000_000_000_000)


def session_ref(value: Any, where: str) -> dict[str, str]:
    data = require_object(value, where)
    for key in ("scid", "templateName", "name"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise Refusal("400.bad-request", f"{where}.{key} is required (a string).")
    return {"scid": data["scid"], "templateName": data["templateName"], "name": data["name"]}


def handle_type(body: Mapping[str, Any]) -> str:
    """The handle `type` of a request body; 400 when it is not one MPSD knows."""
    kind = body.get("type")
    if kind not in HANDLE_TYPES:
        raise Refusal("400.bad-request", f"type should be one of {', '.join(HANDLE_TYPES)}, "
                                         f"not {json.dumps(kind)}.")
    return kind


def take(value: str | None) -> int:
    """The `take` query argument: how many results a query returns (at most 100)."""
    if value is None:
        return 100
    if not value.isdigit() or int(value) > 100:
        raise Refusal("400.bad-request", f"take should be a whole number 0-100, not {value!r}.")
    return int(value)
