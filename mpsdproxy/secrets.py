"""Credential shapes, found in any text: the one place that says what a secret looks like.

The Xbox stack carries credentials in many places besides `Authorization`:
XBL3.0 authorization values, JWT/JWE tokens (`eyJ...`, dot separated), MSA
compact tickets (`t=EwA...`, `GwA...`, URL-encoded or not), the XSTS request
`Signature` (`AAAAAQ...`), DER blobs (`MII...`: AAD tokens, certificates),
`Bearer`/`Negotiate`/`Kerberos` credentials, SOAP WS-Security blocks
(`wsse:Security`, `BinarySecurityToken`, `CipherValue`), query parameters and
JSON fields whose name says token, ticket, proof, secret or password.

`find(text)` returns where they are; the recording's `Redactor` replaces them
and `scan` reports them. What is not a credential stays readable: GUIDs,
ETags, correlation ids, change numbers, session names, and the few fields
whose name says "token" or "ticket" but which hold identifiers (`TokenType`,
MPSD's `deviceToken`, matchmaking's `ticketId`, `continuationToken`, ...).
A value already redacted (`redacted:` and 12 hex digits) is never a finding.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mpsdproxy import model
from mpsdproxy.identity import REDACTED
from mpsdproxy.identity import is_redacted

__all__ = ["Finding", "Shape", "SHAPES", "SECRET_WORDS", "REDACTED", "find", "suspicious",
           "may_hold", "secret_key", "is_redacted"]

#: A name holding one of these words (any case) names a credential.
SECRET_WORDS: tuple[str, ...] = ("token", "ticket", "proof", "secret", "password", "passwd")

#: Names that hold a secret word yet an identifier or a setting, not a credential: the
#: token's type, the session directory's device token (the value a session's `host`
#: property repeats, so two members' devices can be told apart), matchmaking tickets'
#: ids, attributes and session references, paging cursors.
NOT_SECRET_NAMES: frozenset[str] = frozenset({
    "tokentype", "devicetoken", "continuationtoken", "skiptoken", "nexttoken", "pagetoken",
    "synctoken", "ticketid", "ticketattributes", "ticketsessionref", "tokenexpiry",
})
#: Endings of names that hold identifiers or metadata about a credential, not one.
_NOT_SECRET_ENDINGS: tuple[str, ...] = ("id", "ids", "type", "ref", "attributes", "expiry",
                                        "expires", "count")


class Finding(NamedTuple):
    """A credential in a text: its kind and where it is (`text[start:end]`)."""

    kind: str
    start: int
    end: int


def secret_key(name: str) -> bool:
    """Whether a JSON field or query parameter of this name holds a credential."""
    low = name.lower()
    if not any(word in low for word in SECRET_WORDS):
        return low in ("sig", "signature", "proofkey")
    return low not in NOT_SECRET_NAMES and not low.endswith(_NOT_SECRET_ENDINGS)


class Shape(NamedTuple):
    """One credential shape: `pattern` is only tried when the text holds one of `anchors`
    (plain substring tests cost far less than a regex over a body); the secret is
    `group` of the match; `named` says the match's `name` group must pass `secret_key`,
    and that the anchors (lower case) are sought in the case-folded text, as the name's
    words match in any case (`ToKeN=`)."""

    kind: str
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]
    group: int | str = 0
    named: bool = False


_B64 = r"A-Za-z0-9+/"
_WORDS = r"(?i:token|ticket|proof|secret|passw(?:or)?d|sig(?:nature)?)"
_WORD_ANCHORS = ("token", "ticket", "proof", "secret", "passw", "sig")

SHAPES: tuple[Shape, ...] = (
    Shape("xbl3", re.compile(r"XBL[23]\.0 x=[^;\s\"',]*;[A-Za-z0-9._+/=-]{40,}"), ("XBL",)),
    Shape("jwt", re.compile(
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{10,}(?:\.[A-Za-z0-9_-]*){2}"
        r"(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?"), ("eyJ",)),
    Shape("msa-ticket", re.compile(
        r"(?<![A-Za-z0-9])[tdp](?:=|%3[dD])((?:Ew|Gw)[A-Za-z0-9+/_%-]{40,}={0,2})"),
        ("Ew", "Gw"), 1),
    Shape("msa-ticket", re.compile(
        r"(?<![A-Za-z0-9+/_%-])(?:Ew|Gw)[A-D][A-Za-z0-9+/_%-]{100,}={0,2}"), ("Ew", "Gw")),
    Shape("xbl-signature", re.compile(rf"(?<![{_B64}])AAAAAQ[{_B64}]{{60,}}={{0,2}}"),
          ("AAAAAQ",)),
    Shape("der-blob", re.compile(rf"(?<![{_B64}])MII[{_B64}]{{100,}}={{0,2}}"), ("MII",)),
    Shape("auth-scheme", re.compile(
        r"\b(?:Bearer|Negotiate|Kerberos|NTLM|Basic)\s+"
        r"([A-Za-z0-9+/=._~-]{40,})"),
        ("Bearer", "Negotiate", "Kerberos", "NTLM", "Basic"), 1),
    Shape("soap-security", re.compile(
        r"<(?P<tag>(?:[\w.-]+:)?(?:Security|BinarySecurityToken|CipherValue|SignatureValue"
        r"|Assertion|EncryptedAssertion))\b[^>]*>(?P<inner>.*?)</(?P=tag)\s*>", re.DOTALL),
        ("Security", "CipherValue", "SignatureValue", "Assertion"), "inner"),
    Shape("soap-security", re.compile(
        r"&lt;(?P<tag>(?:[\w.-]+:)?(?:BinarySecurityToken|CipherValue|SignatureValue))\b"
        r".*?&gt;(?P<inner>.*?)&lt;/(?P=tag)&gt;", re.DOTALL),
        ("&lt;",), "inner"),
    Shape("query-token", re.compile(
        rf"(?<![^?&;\s\"'])(?P<name>[A-Za-z0-9_.-]*{_WORDS}[A-Za-z0-9_.-]*)="
        r"(?P<value>[^&\s\"'<>#]{8,})"), _WORD_ANCHORS, "value", True),
    Shape("json-field", re.compile(
        rf"\"(?P<name>[A-Za-z0-9_.$-]{{0,40}}{_WORDS}[A-Za-z0-9_.$-]{{0,40}})\"\s*:\s*"
        r"\"(?P<value>(?:[^\"\\]|\\.)+)\""), _WORD_ANCHORS, "value", True),
)


#: Every credential shape but a named field and a JWT (`eyJ`, looked for apart) is a
#: run of this many token characters at least; `suspicious` looks for one with two
#: C-speed passes (a table and a substring search) instead of a regex, which costs ten
#: times more per character.
RUN = 40
#: Letters, digits, `+` and `%` (URL-encoded tickets): `/`, `-`, `_`, `.` and `=` end a
#: run, so URL paths, GUIDs, dates and host names never make one, while every real
#: token (hundreds of characters of base64) holds many.
_RUN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+%")
_RUN_MAP = bytes(ord("a") if i in _RUN_CHARS else ord(" ") for i in range(256))
_RUN = b"a" * RUN
#: Lower-case words a secret field or parameter name holds, and the names holding
#: "token" that are not secret (subtracted before deciding).
_NAME_WORDS = (b"ticket", b"proof", b"secret", b"passw", b"sig")
#: Below this length one regex finds any of the words faster; above, substring searches.
_SHORT = 256
_WORDS_LONG = (*_NAME_WORDS, b"token")  # `_worded` spells them out: keep them in step
_WORDS = re.compile(b"|".join(_WORDS_LONG))
#: The rarest letter of each word, and `Q`, as ints: `int in bytes` is one memchr, where
#: `bytes in bytes` first tries the needle as an int and builds and drops a TypeError
#: (so longer needles are looked for with `find`).
_K, _G, _F, _W, _Q = b"kgfwQ"
_NOT_SECRET_TOKENS = tuple(n.encode() for n in sorted(NOT_SECRET_NAMES) if "token" in n)


def _token_word(low: bytes) -> bool:
    """Whether `token` occurs in `low` other than in a name that is not secret."""
    count = low.count(b"token")
    return count > 0 and count > sum(low.count(name) for name in _NOT_SECRET_TOKENS)


def _shaped(raw: bytes) -> bool:
    """A short XSTS signature, a JWT's opening (`eyJ`: a short JWT's dots, dashes and
    underscores can break every run), or a run of token characters as long as the
    shortest token."""
    # `Q` first: one memchr, and most texts hold no capital Q at all.
    return (_Q in raw and raw.find(b"AAAAAQ") >= 0) or raw.find(b"eyJ") >= 0 or (
        len(raw) >= RUN and raw.translate(_RUN_MAP).find(_RUN) >= 0)


def _worded(low: bytes) -> bool:
    """Whether lower-case `low` holds a word a secret's name holds ("token" included)."""
    if len(low) < _SHORT:  # one regex pass beats six substring searches on a header value
        return _WORDS.search(low) is not None
    # Spelt out: a generator over _WORDS_LONG costs a frame switch for each word. Each
    # word but "secret" is looked for only when its rarest letter is there (a memchr,
    # ten times cheaper than a substring search): no `k`, no "token" nor "ticket".
    return ((_K in low and (low.find(b"token") >= 0 or low.find(b"ticket") >= 0))
            or (_G in low and low.find(b"sig") >= 0) or low.find(b"secret") >= 0
            or (_F in low and low.find(b"proof") >= 0)
            or (_W in low and low.find(b"passw") >= 0))


def suspicious(text: str | bytes) -> bool:
    """Whether `text` may hold a credential: a long run of token characters, or a word
    a secret's name holds. False means `find(text)` is empty; a few C-speed passes."""
    raw = text if isinstance(text, bytes) else model.to_bytes(text)
    if _shaped(raw):
        return True
    low = raw.lower()
    if not _worded(low):
        return False
    return any(low.find(word) >= 0 for word in _NAME_WORDS) or _token_word(low)


def may_hold(text: str | bytes) -> bool:
    """Whether any piece of `text` may be `suspicious`: False clears every piece at once,
    so several short texts joined by a line break cost one call instead of one each.

    `suspicious` itself cannot answer for pieces: a name that is not secret in one piece
    ("deviceTokenType" counts two) would hide a token word in another. This test is the
    same less that subtraction, so a piece's credential is never missed."""
    raw = text if isinstance(text, bytes) else model.to_bytes(text)
    return _shaped(raw) or _worded(raw.lower())


def _matches(shape: Shape, text: str) -> list[Finding]:
    found = []
    for match in shape.pattern.finditer(text):
        if shape.named and not secret_key(match.group("name")):
            continue
        start, end = match.span(shape.group)
        value = text[start:end]
        if value.strip() and not REDACTED.fullmatch(value.strip()):
            found.append(Finding(shape.kind, start, end))
    return found


def _merged(found: list[Finding]) -> list[Finding]:
    """Findings in order, overlapping ones joined (the first one's kind names them)."""
    out: list[Finding] = []
    for item in sorted(found, key=lambda f: (f.start, -f.end)):
        if out and item.start < out[-1].end:
            last = out[-1]
            out[-1] = Finding(last.kind, last.start, max(last.end, item.end))
        else:
            out.append(item)
    return out


def find(text: str) -> list[Finding]:
    """Every credential-shaped part of `text`, in order, overlaps joined."""
    if not suspicious(text):
        return []
    found: list[Finding] = []
    low: str | None = None
    for shape in SHAPES:
        if shape.named:
            low = text.casefold() if low is None else low
        if any(anchor in (low if shape.named else text) for anchor in shape.anchors):
            found += _matches(shape, text)
    return _merged(found) if len(found) > 1 else found
