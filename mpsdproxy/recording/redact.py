"""Redaction: a secret never reaches a file the tool writes.

A redacted value reads `redacted:` plus 12 hex digits of its SHA-256: secret,
yet two users (or two tokens) stay distinguishable. Redaction is idempotent,
and it is applied by whoever turns an exchange into a record (`codec`), never
cached apart from the redactor that decided it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from collections.abc import Sequence

from mpsdproxy import model

__all__ = ["DEFAULT_REDACT", "SECRET_WORDS", "REDACTED_PREFIX", "redact_value", "Redactor"]

#: Headers that carry credentials (protocol notes §2.1, §2.3, and the Xbox stack's own
#: token headers seen in real captures): never written raw.
DEFAULT_REDACT: tuple[str, ...] = (
    "Authorization", "Proxy-Authorization", "Signature", "Cookie", "Set-Cookie",
    "X-AuthXToken", "X-Tickets", "X-Aad-Token",
)
#: A header whose name holds one of these words carries a credential, whatever its name.
SECRET_WORDS: tuple[str, ...] = ("token", "ticket", "proof")

REDACTED_PREFIX = "redacted:"
_REDACTED = re.compile(r"redacted:[0-9a-f]{12}")


def redact_value(value: str) -> str:
    """`redacted:` + a short stable hash, so equal secrets stay recognisably equal."""
    if _REDACTED.fullmatch(value):
        return value  # never hash a hash: redaction is idempotent
    digest = hashlib.sha256(model.to_bytes(value)).hexdigest()
    return REDACTED_PREFIX + digest[:12]


class Redactor:
    """Replaces the values of secret headers. Names compare case-insensitively."""

    def __init__(self, names: Iterable[str] = DEFAULT_REDACT, enabled: bool = True) -> None:
        self.names = frozenset(n.lower() for n in names)
        self.enabled = enabled

    def secret(self, name: str) -> bool:
        """Whether a header of this name is never written raw: a named one, or one whose
        name says it holds a token, a ticket or a proof."""
        if not self.enabled:
            return False
        low = name.lower()
        return low in self.names or any(word in low for word in SECRET_WORDS)

    def value(self, name: str, value: str) -> str:
        """`value` as it may be written for a header called `name`."""
        return redact_value(value) if self.secret(name) else value

    def headers(self, pairs: Iterable[Sequence[str]]) -> list[list[str]]:
        """[name, value] pairs (Headers or any pairs) with secret values redacted."""
        return [[k, self.value(k, v)] for k, v in pairs]

    def apply(self, headers: model.Headers) -> model.Headers:
        """The same Headers with secret values redacted."""
        return model.Headers(self.headers(headers))
