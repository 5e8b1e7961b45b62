"""Redaction: a secret never reaches a file the tool writes.

A redacted value reads `redacted:` plus 12 hex digits of its SHA-256: secret,
yet two users (or two tokens) stay distinguishable. Redaction is idempotent,
and it is applied by whoever turns an exchange into a record (`codec`), never
cached apart from the redactor that decided it.

What is redacted (`Redactor.exchange`): header values by name (`DEFAULT_REDACT`
and any name holding a `SECRET_WORDS` word) and, in any other header, the URL,
the error and the bodies, whatever `secrets.find` calls credential-shaped. In
a JSON body every string under a field whose name says token, ticket, proof,
secret or password is redacted too (`secrets.secret_key`), so `ProofKey` and
`UserTokens` go whole while `DisplayClaims` stay readable. A changed body
loses its wire bytes (`encoded`): they would still hold the secret.

Most exchanges hold no credential outside their secret-named headers and bodies, so
their other texts are looked at one by one only when one pass over them all
(`secrets.may_hold` over the URL, the reason, the error and the other header values,
joined) finds something that could be a credential: the same answer for less work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import secrets
from mpsdproxy.identity import REDACTED_PREFIX
from mpsdproxy.identity import redact_value
from mpsdproxy.identity import user_of

__all__ = ["DEFAULT_REDACT", "SECRET_WORDS", "REDACTED_PREFIX", "redact_value", "user_of",
           "Redactor"]

#: Headers that carry credentials (protocol notes §2.1, §2.3, and the Xbox stack's own
#: token headers seen in real captures): never written raw.
DEFAULT_REDACT: tuple[str, ...] = (
    "Authorization", "Proxy-Authorization", "Signature", "Cookie", "Set-Cookie",
    "X-AuthXToken", "X-Tickets", "X-Aad-Token",
)
#: A header whose name holds one of these words carries a credential, whatever its name.
SECRET_WORDS: tuple[str, ...] = secrets.SECRET_WORDS

_SECRET_NAME = re.compile("|".join(SECRET_WORDS))


def _replaced(text: str, found: list[secrets.Finding]) -> str:
    out, at = [], 0
    for item in found:
        out += [text[at:item.start], redact_value(text[item.start:item.end])]
        at = item.end
    out.append(text[at:])
    return "".join(out)


def _length(headers: model.Headers, body: bytes) -> model.Headers:
    """Headers for a redacted body: a Content-Length that counted the body counts the new
    one (with a Content-Encoding it counted the wire bytes, which an export re-encodes)."""
    if "Content-Length" not in headers or "Content-Encoding" in headers:
        return headers
    return headers.with_value("Content-Length", str(len(body)))


def _plain(fields: Sequence[tuple[str, str]], secret: list[bool]) -> list[str]:
    """The values of the fields not under a secret name (`secret`, field by field)."""
    return [value for (_, value), hidden in zip(fields, secret, strict=True) if not hidden]


class Redactor:
    """Replaces credentials with `redact_value`s. Header names compare case-insensitively;
    `enabled=False` leaves everything as it is."""

    def __init__(self, names: Iterable[str] = DEFAULT_REDACT, enabled: bool = True) -> None:
        self.names = frozenset(n.lower() for n in names)
        self.enabled = enabled

    def secret(self, name: str) -> bool:
        """Whether a header of this name is never written raw: a named one, or one whose
        name says it holds a token, a ticket or a proof."""
        if not self.enabled:
            return False
        low = name.lower()
        return low in self.names or _SECRET_NAME.search(low) is not None

    def text(self, value: str) -> str:
        """`value` with every credential shape in it redacted."""
        if not self.enabled or not secrets.suspicious(value):
            return value
        found = secrets.find(value)
        return _replaced(value, found) if found else value

    def value(self, name: str, value: str) -> str:
        """`value` as it may be written for a header called `name`."""
        return redact_value(value) if self.secret(name) else self.text(value)

    def headers(self, pairs: Iterable[Sequence[str]]) -> list[list[str]]:
        """[name, value] pairs (Headers or any pairs) with secret values redacted."""
        return [[k, self.value(k, v)] for k, v in pairs]

    def apply(self, headers: model.Headers) -> model.Headers:
        """The same Headers with secret values redacted (the same object when none is)."""
        if not self.enabled:
            return headers
        return self._redacted(headers, "", self._secret_names(headers.fields), True)[0]

    def _secret_names(self, fields: Sequence[tuple[str, str]]) -> list[bool]:
        """`secret` of each field's name, with one regex pass over all the names (a
        pass for each name only when one of them holds a secret word)."""
        if not fields:
            return []
        # One lower() over the joined names, split back: a header name never holds a
        # line break (the model refuses one), so the pieces are the names, lower-cased.
        joined = "\n".join([name for name, _ in fields]).lower()
        lows = joined.split("\n")
        names = self.names
        if _SECRET_NAME.search(joined) is None:
            return [low in names for low in lows]
        return [low in names or _SECRET_NAME.search(low) is not None for low in lows]

    def _redacted(self, headers: model.Headers, line: str, secret: list[bool],
                  shaped: bool) -> tuple[model.Headers, str]:
        """A message's headers and its URL or reason (`line`), redacted as `value` and
        `text` would one by one: a value under a secret name (`secret`) always; the
        others and the line only when they may be credential-shaped (`shaped`, then
        one pass over them all, `secrets.may_hold`), which most messages' never are."""
        fields = headers.fields
        if shaped:
            shaped = secrets.may_hold("\n".join([line, *_plain(fields, secret)]))
            if shaped:
                line = self.text(line)
        if not shaped and True not in secret:
            return headers, line  # nothing to redact: most responses
        changed: list[tuple[str, str]] | None = None
        for i, ((name, value), hidden) in enumerate(zip(fields, secret, strict=True)):
            if hidden:
                new = redact_value(value)
            elif shaped:
                new = self.text(value)
            else:
                continue
            if new != value:
                if changed is None:
                    changed = list(fields)
                changed[i] = (name, new)
        return (headers if changed is None else model.Headers.derived(changed)), line

    def exchange(self, exchange: model.Exchange) -> model.Exchange:
        """A copy of `exchange` with every credential redacted (the same object when it
        holds none, or when this redactor is disabled)."""
        request, response, error = self.parts(exchange)
        if (request is exchange.request and response is exchange.response
                and error == exchange.error):
            return exchange
        return dataclasses.replace(exchange, request=request, response=response, error=error)

    def parts(self, exchange: model.Exchange
              ) -> tuple[model.Request, model.Response | None, str | None]:
        """The request, response and error of `exchange` with every credential redacted
        (the same objects where none is), for whoever needs no new Exchange (a record).

        Secret-named header values are always hashed and each body has a pass of its
        own (`_body`); a credential anywhere else is rare, so one pass over all the
        other texts (`_shaped`) tells whether to look at them one by one."""
        request, response, error = exchange.request, exchange.response, exchange.error
        if not self.enabled:
            return request, response, error
        asked = len(request.headers.fields)
        told = response.headers.fields if response is not None else ()
        fields = (*request.headers.fields, *told)
        secret = self._secret_names(fields)  # one pass over both messages' names
        shaped = self._shaped(exchange, fields, secret)
        request = self._request(request, secret[:asked], shaped)
        if response is not None:
            response = self._response(response, secret[asked:], shaped)
        return request, response, self.error(error) if shaped else error

    @staticmethod
    def _shaped(exchange: model.Exchange, fields: Sequence[tuple[str, str]],
                secret: list[bool]) -> bool:
        """Whether the URL, the reason, the error or a header value not under a secret
        name (`fields` of the request and the response, in order) may hold a credential
        shape: one pass over them all. (A body has a pass of its own, `_body`: a session
        document's `deviceToken` must not send its exchange down the slow path.)"""
        request, response = exchange.request, exchange.response
        texts = [request.url, exchange.error or "", response.reason if response else "",
                 *_plain(fields, secret)]
        return secrets.may_hold("\n".join(texts))

    def error(self, error: str | None) -> str | None:
        """An exchange's error message with credential shapes redacted."""
        return self.text(error) if error else error

    def _request(self, request: model.Request, secret: list[bool],
                 shaped: bool) -> model.Request:
        headers, url = self._redacted(request.headers, request.url, secret, shaped)
        body, value = self._body(request)
        if headers is request.headers and url == request.url and body is None:
            return request
        if body is None and url == request.url:
            return request.with_headers(headers)
        if body is None:
            return request.replace(url=url, headers=headers)
        return request.replace(url=url, headers=_length(headers, body), body=body,
                               encoded=None).knowing(json=value)

    def _response(self, response: model.Response, secret: list[bool],
                  shaped: bool) -> model.Response:
        headers, reason = self._redacted(response.headers, response.reason, secret, shaped)
        body, value = self._body(response)
        if headers is response.headers and reason == response.reason and body is None:
            return response
        if body is None and reason == response.reason:
            return response.with_headers(headers)
        if body is None:
            return response.replace(reason=reason, headers=headers)
        return response.replace(reason=reason, headers=_length(headers, body), body=body,
                                encoded=None).knowing(json=value)

    def _body(self, message: model.Request | model.Response) -> tuple[bytes | None, Any]:
        """The redacted body and its JSON value, or (None, INVALID) when nothing in it is
        a credential. Cheap when nothing is: a few substring tests over the text."""
        raw = message.body
        if not raw:
            return None, jsonbody.INVALID
        if not secrets.suspicious(raw):
            return None, jsonbody.INVALID
        text = model.from_bytes(raw)
        if raw[:1] in (b"{", b"[") and (value := message.json) is not jsonbody.INVALID:
            try:
                redacted, changed = self._json(value)
                if not changed:
                    return None, jsonbody.INVALID
                return jsonbody.compact(redacted, strict=False).encode("utf-8"), redacted
            except RecursionError:
                pass  # too deep to walk: its text is redacted instead
        found = secrets.find(text)
        if not found:
            return None, jsonbody.INVALID
        return model.to_bytes(_replaced(text, found)), jsonbody.INVALID

    def _json(self, value: Any, secret: bool = False) -> tuple[Any, bool]:
        """A JSON value with its credentials redacted, and whether any was. Under a
        secret field (`secret`) every string goes."""
        if isinstance(value, str):
            new = redact_value(value) if secret and value else self.text(value)
            return new, new != value
        if isinstance(value, list):
            items = [self._json(item, secret) for item in value]
            if not any(changed for _, changed in items):
                return value, False
            return [item for item, _ in items], True
        if isinstance(value, dict):
            pairs = [(key, self._json(item, secret or secrets.secret_key(str(key))))
                     for key, item in value.items()]
            if not any(changed for _, (_, changed) in pairs):
                return value, False
            return {key: item for key, (item, _) in pairs}, True
        return value, False
