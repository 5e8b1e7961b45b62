"""A session as one caller sees it: in the caller's contract's field names, and for a
large session with only the caller's own member, keyed "me".

Documents are stored with the contract 107 names. Contract 107 renamed three
things in `constants.system` (protocol notes §3.2, from the docs' "Contract
schema update"): `timeouts` {reserved, inactive, ready, sessionEmpty} became
`reservedRemovalTimeout`, `inactiveRemovalTimeout`, `readyRemovalTimeout`,
`sessionEmptyTimeout`; `managedInitialization` became `memberInitialization`;
and in it `autoEvaluate` became `externalEvaluation`, which says the opposite
(the title evaluates instead of the service) [INFERRED from the names]. A
request at an older contract is read in its names (`upgrade`) and answered in
them (`render`); the public capture's contract 105 session carries `timeouts`.

Large sessions (`constants.system.capabilities.large`) answer the caller as
`members.me`: the library reads only that key for them
(`multiplayer_session.cpp` `_Deserialize`, the `capabilities_large()` branch;
~L1478 in the current C API); with index keys it finds no current user.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["CURRENT_CONTRACT", "is_large", "upgrade", "downgrade", "render"]

CURRENT_CONTRACT = 107
#: contract 105 name inside `timeouts` -> contract 107 name in `constants.system`
_TIMEOUTS = {"reserved": "reservedRemovalTimeout", "inactive": "inactiveRemovalTimeout",
             "ready": "readyRemovalTimeout", "sessionEmpty": "sessionEmptyTimeout"}


def is_large(document: Mapping[str, Any]) -> bool:
    """Whether a session is large: its `constants.system.capabilities.large`."""
    constants = document.get("constants")
    system = constants.get("system") if isinstance(constants, dict) else None
    capabilities = system.get("capabilities") if isinstance(system, dict) else None
    return isinstance(capabilities, dict) and capabilities.get("large") is True


def _flip(section: dict[str, Any], old: str, new: str) -> None:
    if isinstance(section.get(old), bool):
        section[new] = not section.pop(old)


def upgrade(system: Mapping[str, Any]) -> dict[str, Any]:
    """`constants.system` in contract 107 names (a copy; 107 names pass unchanged)."""
    out = copy.deepcopy(dict(system))
    timeouts = out.pop("timeouts", None)
    if isinstance(timeouts, dict):
        for old, new in _TIMEOUTS.items():
            if old in timeouts:
                out[new] = timeouts[old]
    elif timeouts is not None:
        out["timeouts"] = timeouts  # not the 105 shape: kept as sent
    managed = out.pop("managedInitialization", None)
    if isinstance(managed, dict):
        _flip(managed, "autoEvaluate", "externalEvaluation")
        out["memberInitialization"] = managed
    elif managed is not None:
        out["managedInitialization"] = managed
    return out


def downgrade(system: Mapping[str, Any]) -> dict[str, Any]:
    """`constants.system` in contract 105 names (a copy)."""
    out = copy.deepcopy(dict(system))
    timeouts = {old: out.pop(new) for old, new in _TIMEOUTS.items() if new in out}
    if timeouts:
        out["timeouts"] = timeouts
    member = out.pop("memberInitialization", None)
    if isinstance(member, dict):
        _flip(member, "externalEvaluation", "autoEvaluate")
        out["managedInitialization"] = member
    elif member is not None:
        out["memberInitialization"] = member
    return out


def _mine(members: Mapping[str, Any], xuid: str) -> dict[str, Any]:
    for member in members.values():
        system = member.get("constants", {}).get("system", {}) if isinstance(member, dict) else {}
        if isinstance(system, dict) and str(system.get("xuid")) == xuid:
            return {"me": member}
    return {}


def render(document: dict[str, Any], *, xuid: str, contract: int) -> dict[str, Any]:
    """The document as the caller (XUID, contract) reads it. The stored document itself
    when nothing differs, so an answer to the writer is the stored session."""
    view = document
    if is_large(document):
        view = {**view, "members": _mine(document.get("members", {}), xuid)}
    if view.get("contractVersion") != contract:
        view = {**view, "contractVersion": contract}
    if contract < CURRENT_CONTRACT:
        constants = view.get("constants")
        if isinstance(constants, dict) and isinstance(constants.get("system"), dict):
            view = {**view, "constants": {**constants,
                                          "system": downgrade(constants["system"])}}
    return view
