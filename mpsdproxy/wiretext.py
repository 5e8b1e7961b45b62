"""Wire bytes and text, both ways: the package's one rule (`model` says why).

Text is decoded as UTF-8 with `surrogateescape`, the rule mitmproxy applies to header
fields: a byte that is not UTF-8 becomes one lone surrogate, and `to_bytes` gives the
exact bytes back. It lives below every other module (the model and the redacted form of
a credential, `identity`, both build on it); callers reach it as `model.from_bytes` and
`model.to_bytes`.
"""

from __future__ import annotations

__all__ = ["ENCODING", "ERRORS", "from_bytes", "to_bytes"]

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def from_bytes(raw: bytes) -> str:
    """Wire bytes -> text, by the package's one rule (UTF-8, surrogateescape)."""
    return raw.decode(ENCODING, ERRORS)


def to_bytes(text: str) -> bytes:
    """Text -> the exact wire bytes it was decoded from (inverse of `from_bytes`)."""
    return text.encode(ENCODING, ERRORS)
