"""What every part of the stand-in shares: how an answer is built and how a request is read.

Answers are rows of the status table built by `faults.build` (so their content
type, body kind and required headers come from the catalog), plus what the
service adds around every answer (`Date`, `X-XblCorrelationId`; protocol notes
§2.2). A handler deep in a request answers at once by raising `Refusal`.
"""

from __future__ import annotations

import email.utils
import json
import uuid
from collections.abc import Iterable
from typing import Any
from typing import NamedTuple
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

from mpsdproxy import faults
from mpsdproxy import jsonbody
from mpsdproxy import model

__all__ = [
    "NO_STORE",
    "REVALIDATE",
    "check_signature",
    "Refusal",
    "Identity",
    "standard_headers",
    "reply",
    "refused",
    "path_of",
    "query_of",
    "flag",
    "json_object",
    "require_object",
]

NO_STORE = ("Cache-Control", "no-cache, no-store")
REVALIDATE = ("Cache-Control", "max-age=0, must-revalidate")


class Refusal(Exception):
    """Answers the request at once with a row of the table (raised deep in a handler)."""

    def __init__(self, entry_id: str, message: str | bytes | None = None, *,
                 session: Any = None, etag: str | None = None, retry_after: int | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(entry_id, message)
        self.entry_id = entry_id
        self.message = message
        self.session = session
        self.etag = etag
        self.retry_after = retry_after
        self.headers = list(headers)


class Identity(NamedTuple):
    """Who is calling: the user hash of `Authorization: XBL3.0 x=<userhash>;<token>`
    and the contract version the request names."""

    user: str
    contract: int


def standard_headers(wallclock: float) -> list[tuple[str, str]]:
    """What the service puts on every response (protocol notes §2.2)."""
    return [
        ("Date", email.utils.formatdate(wallclock, usegmt=True)),
        ("X-XblCorrelationId", str(uuid.uuid4())),
        ("X-Content-Type-Options", "nosniff"),
    ]


def reply(entry_id: str, wallclock: float, *, session: Any = None, etag: str | None = None,
          message: str | bytes | None = None, retry_after: int | None = None,
          headers: Iterable[tuple[str, str]] = ()) -> model.Response:
    """The row `entry_id` as the service sends it at `wallclock` (epoch seconds)."""
    extra = standard_headers(wallclock)
    extra.extend(headers)
    return faults.build(entry_id, session=session, etag=etag, message=message,
                        retry_after=retry_after, extra_headers=extra)


def refused(refusal: Refusal, wallclock: float) -> model.Response:
    """The answer a Refusal stands for."""
    return reply(refusal.entry_id, wallclock, session=refusal.session, etag=refusal.etag,
                 message=refusal.message, retry_after=refusal.retry_after,
                 headers=refusal.headers)


def path_of(request: model.Request) -> str:
    """The request's path without its query."""
    return urlsplit(request.url).path or "/"


def query_of(request: model.Request) -> dict[str, str]:
    """Query arguments with lower-case names; the first of a repeated name wins."""
    args: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(request.url).query, keep_blank_values=True):
        args.setdefault(key.lower(), value)
    return args


def flag(request: model.Request, name: str) -> bool:
    """Whether the query switches `name` on (`?nocommit=true`)."""
    return query_of(request).get(name, "").strip().lower() == "true"


def _json_problem(body: bytes) -> str:
    """Why a body is not JSON, in the json module's words (only asked once it failed)."""
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return str(e) or type(e).__name__
    return "it could not be read"


def json_object(request: model.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or 400 saying what is wrong with it.

    The value is the request's shared parse: read it, never change it.
    """
    if not request.body.strip():
        if empty_ok:
            return {}
        raise Refusal("400.bad-request",
                      "The request body is empty; it must be a JSON object ({} is valid).")
    value = request.json
    if value is jsonbody.INVALID:
        raise Refusal("400.bad-request",
                      f"The request body is not valid JSON: {_json_problem(request.body)}")
    if not isinstance(value, dict):
        raise Refusal("400.bad-request",
                      f"The request body must be a JSON object, not {jsonbody.json_kind(value)}.")
    if not jsonbody.all_finite(value):  # else the stand-in would answer `Infinity`: no JSON
        raise Refusal("400.bad-request", "The request body is not valid JSON: NaN, "
                                         "Infinity or a number too large for a double.")
    return value


def check_signature(request: model.Request, *, required: bool) -> None:
    """403 for a request without a `Signature` header when signatures are required.

    The service refuses unsigned requests from a title (a client must sign method,
    path, Authorization and body, protocol notes §2.1); the stand-in checks only that
    the header is there, so a title that forgets to sign fails here as it would there.
    """
    if not required:
        return
    signature = request.headers.first("Signature")
    if signature is None or not signature.strip():
        raise Refusal("403.forbidden", "Authorization failed: the request is not signed "
                                       "(it needs a Signature header).")


def require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refusal("400.bad-request",
                      f"{where} must be a JSON object, not {jsonbody.json_kind(value)}.")
    return value
