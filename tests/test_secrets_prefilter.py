"""The cheap tests in front of the credential regexes never change what is found.

`secrets.find` runs a shape's regex only when `suspicious` says the text may hold a
credential and the text holds one of the shape's literal anchors; `suspicious` itself
looks for a word only when the word's rarest letter is there. These tests hold both
to the plain answers: every regex over a suspicious text, and each word searched for
as is.
"""

from __future__ import annotations

import re

import hypothesis.strategies as st
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from test_secrets import FOUND
from test_secrets import NOT_FOUND

from mpsdproxy import model
from mpsdproxy import secrets

#: Pieces texts are made of: credentials, their anchors and words in every case, names
#: that hold a word yet are not secret, and the characters that start or end a shape.
PIECES = [text for _, text in FOUND] + NOT_FOUND + [
    "token", "TOKEN", "ToKeN", "ticket", "Ticket", "proof", "PROOF", "secret", "SeCrEt",
    "passw", "Passwd", "password", "sig", "SIG", "Signature", "devicetoken", "deviceToken",
    "ticketId", "k", "g", "f", "w", "Q", "AAAAAQ", "AAAAA", "XBL3.0 x=1;", "eyJ", "Ew", "Gw",
    "MII", "Bearer ", "<wsse:Security>", "</wsse:Security>", "&lt;", "&gt;", "=", "&", "?",
    "\"", ":", " ", ".", "-", "_", "/", "+", "%3D", "a" * 39, "A1" * 30, "x.y-z" * 10,
    "caf\udce9", "é",
]


def every_regex(text: str) -> list[tuple[int, int]]:
    """Where every shape's regex finds a credential in `text`, tried without any
    prefilter, overlaps joined: what `find` must give."""
    spans = []
    for shape in secrets.SHAPES:
        for match in shape.pattern.finditer(text):
            if shape.named and not secrets.secret_key(match.group("name")):
                continue
            start, end = match.span(shape.group)
            value = text[start:end].strip()
            if value and not secrets.is_redacted(value):
                spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda span: (span[0], -span[1])):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


_RUN = re.compile(b"[A-Za-z0-9+%%]{%d}" % secrets.RUN)
_WORDS = ("token", "ticket", "sig", "secret", "proof", "passw")


def worded(text: str) -> bool:
    """Each word searched for as is, in the lower-case text."""
    low = model.to_bytes(text).lower()
    return any(word.encode() in low for word in _WORDS)


texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)


@settings(max_examples=600, deadline=None)
@given(texts)
@example("AAAAAQ" + "A1" * 30)
@example("{\"proofKey\": \"abcdefgh12345678\"}")
@example("ToKeN=Authorization: x")  # a name's word in any case: no anchor spelt that way
@example("PaSsWd=abcdefgh12345678&sIgNaTuRe=abcdefgh12345678")
def test_the_anchors_find_exactly_what_every_regex_finds(text: str) -> None:
    """Of a suspicious text; one that is not (no word, no run of token characters as
    long as the shortest real token, no XSTS signature, no JWT) holds no credential by
    design."""
    expected = every_regex(text) if secrets.suspicious(text) else []
    assert [(f.start, f.end) for f in secrets.find(text)] == expected


@settings(max_examples=600, deadline=None)
@given(texts)
def test_a_text_without_a_word_or_a_token_run_is_not_suspicious(text: str) -> None:
    raw = model.to_bytes(text)
    run = _RUN.search(raw) is not None
    if not (worded(text) or run or b"AAAAAQ" in raw or b"eyJ" in raw):
        assert not secrets.suspicious(text)
        assert not secrets.may_hold(text)
    else:
        assert secrets.may_hold(text)


@settings(max_examples=300, deadline=None)
@given(texts.map(lambda text: text * 10))
def test_long_texts_take_the_same_answers(text: str) -> None:
    """Past the short-text regex, the gated substring searches answer the same."""
    raw = model.to_bytes(text)
    run = _RUN.search(raw) is not None
    assert secrets.may_hold(text) == (worded(text) or run or b"AAAAAQ" in raw
                                      or b"eyJ" in raw)


SHORT_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefgh-_x"


def test_a_short_jwt_outside_a_secret_name_is_found() -> None:
    """Its dots, dashes and underscores break every run of token characters, and no
    secret word names it: the `eyJ` opening alone makes the text worth the regexes."""
    for text in (f'{{"blob": "{SHORT_JWT}"}}', f"https://example.test/a?q={SHORT_JWT}"):
        assert secrets.suspicious(text)
        assert [text[f.start:f.end] for f in secrets.find(text)] == [SHORT_JWT]
