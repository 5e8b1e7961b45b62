"""The redacted form of a credential, and who sent a request, never in clear.

A redacted value reads `redacted:` plus 12 hex digits of its SHA-256: secret, yet two
users (or two tokens) stay distinguishable. An XBL authorization value keeps its shape
(`XBL3.0 x=redacted:…;redacted:…`), so the user it names (`user_of`) reads the same from
a live request, where the injector's throttling and the verdicts' budgets key by it
(`model.Request.user`), and from its record. Below the model and the recording's
`Redactor`, which both build on it.
"""

from __future__ import annotations

import hashlib
import re

from mpsdproxy import wiretext

__all__ = ["REDACTED_PREFIX", "REDACTED", "is_redacted", "redact_value", "user_of"]

REDACTED_PREFIX = "redacted:"

#: What a redacted value looks like (`redact_value` writes it): a hash, or an XBL
#: authorization value with its user hash and its token each hashed.
REDACTED = re.compile(r"redacted:[0-9a-f]{12}"
                      r"|XBL[23]\.0 x=redacted:[0-9a-f]{12};redacted:[0-9a-f]{12}")

#: An Xbox Live authorization value: `XBL3.0 x=<user hash>;<token>` (protocol notes §2.1).
_XBL_AUTHORIZATION = re.compile(r"(XBL[23]\.0 x=)([^;]*);(.*)", re.DOTALL)


def is_redacted(value: str) -> bool:
    return REDACTED.fullmatch(value) is not None


def _hashed(value: str) -> str:
    digest = hashlib.sha256(wiretext.to_bytes(value)).hexdigest()
    return REDACTED_PREFIX + digest[:12]


def redact_value(value: str) -> str:
    """`redacted:` + a short stable hash, so equal secrets stay recognisably equal.

    An XBL authorization value keeps its shape, with the user hash (`x=`) and the token
    hashed apart: `XBL3.0 x=redacted:…;redacted:…`. The user's part survives a token
    refresh, so budgets and verdicts keyed by user (`user_of`) read the same from a live
    request and from its record.
    """
    if is_redacted(value):
        return value  # never hash a hash: redaction is idempotent
    xbl = _XBL_AUTHORIZATION.fullmatch(value)
    if xbl is not None:
        return f"{xbl[1]}{_hashed(xbl[2])};{_hashed(xbl[3])}"
    return _hashed(value)


def user_of(authorization: str) -> str:
    """Who sends a request, from its Authorization value, raw or redacted, never in
    clear: `x=redacted:…` (the XBL user hash, hashed) when there is one, else the
    redacted value itself (a token refresh then looks like a new user)."""
    xbl = _XBL_AUTHORIZATION.fullmatch(authorization)
    if xbl is None:
        return redact_value(authorization)
    user = xbl[2]
    return f"x={user}" if is_redacted(user) else f"x={_hashed(user)}"
