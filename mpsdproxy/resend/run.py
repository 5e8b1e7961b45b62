"""Re-sending a recording, request by request, and recording what came back."""

from __future__ import annotations

import dataclasses
import functools
import http.client
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import classify
from mpsdproxy import encoding
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.recording import messages as ws
from mpsdproxy.resend import sockets
from mpsdproxy.resend.carry import Carry
from mpsdproxy.resend.carry import Renamer
from mpsdproxy.resend.carry import request_body
from mpsdproxy.resend.carry import request_headers
from mpsdproxy.resend.client import Client
from mpsdproxy.resend.client import answer_of
from mpsdproxy.resend.target import Target
from mpsdproxy.resend.target import parse_target
from mpsdproxy.resend.target import request_target

__all__ = ["ResentExchange", "ResendResult", "resend_records", "resend"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResentExchange:
    """One re-sent request: the record it came from and what came back."""

    record: int
    method: str
    url: str
    status: int | None
    error: str | None = None
    seq: int | None = None  # in the new recording, when one is written
    unreachable: bool = False  # no connection to the target (refused, reset, timed out)


@dataclass
class ResendResult:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    record_path: str | None = None
    renames: dict[str, str] = field(default_factory=dict)
    issues: list[recording.ReadIssue] = field(default_factory=list)
    stopped: str | None = None  # why it gave up early: one line, None when it went through
    not_sent: int = 0  # records left unsent when it stopped early
    #: Websocket messages sent and heard on the re-opened websockets (the RTA's).
    messages: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.issues and self.stopped is None


@dataclass(frozen=True)
class _Sent:
    """A request as it went: `exchange.request` holds the recorded headers (a redacted
    Authorization stays redacted), `headers` what was on the wire."""

    exchange: model.Exchange
    path: str
    headers: list[tuple[str, str]]
    unreachable: bool = False


def _send(original: model.Exchange, target: Target, client: Client, carry: Carry,
          keep_host: bool) -> _Sent:
    """Send one recorded request; the exchange of what went and what came back."""
    request = original.request
    path = request_target(carry.path(request.path))
    headers = request_headers(request.headers, carry, None if keep_host else target.netloc)
    body = request_body(request, carry)
    method = request.method.upper()
    sent = model.Request(method, target.url(path), headers.record, body)
    start = time.time()
    response, error, unreachable = None, None, False
    try:
        reply = client.send(method, path, headers.send,
                            encoding.wire_body(body, sent.headers.get("content-encoding")))
        response = answer_of(reply)
    except (OSError, http.client.HTTPException) as e:
        error, unreachable = f"{type(e).__name__}: {e}", True
    except model.ModelError as e:
        error = f"invalid response from the target: {e}"
    if response is not None:
        carry.learn(method, path, original.response, response)
    exchange = model.Exchange(request=sent, response=response, error=error, start=start,
                              end=time.time(), client=client.local,
                              provenance={"source": "resent", "record": original.seq})
    return _Sent(exchange, path, headers.send, unreachable)


def _record(sent: _Sent, target: Target, redactor: recording.Redactor) -> dict[str, Any]:
    """The new record. Classified (and its resource named) by the path the service
    would see, without the target's base path."""
    exchange = sent.exchange
    judged = exchange
    if target.base_path:
        request = exchange.request
        judged = dataclasses.replace(exchange, request=model.Request(
            request.method, target.origin + sent.path, request.headers, request.body))
    record = recording.to_record(exchange, redactor, classify.classify(judged))
    record["resource"] = judged.resource.to_dict()
    return record


def _refused(record: Mapping[str, Any], error: Exception) -> ResentExchange:
    """The outcome of a record no wire could carry: reported as failed, not sent."""
    request = record.get("request") or {}
    message = f"not sent: {error}"
    # debug only: the caller reports each outcome once (on_exchange), a warning would double it
    logger.debug(f"resend of record {record.get('seq')}: {message}")
    return ResentExchange(record.get("seq") or 0, str(request.get("method")),
                          model.printable(str(request.get("url"))), None, message)


def resend_records(
    records: Iterable[dict[str, Any]],
    to_url: str,
    *,
    rename: bool = False,
    keep_host: bool = False,
    timeout: float = 10.0,
    verify: bool = True,
    redactor: recording.Redactor | None = None,
    writer: recording.Writer | None = None,
    renamer: Renamer | None = None,
    heard: Callable[[ws.WebsocketMessage], None] | None = None,
) -> Iterator[ResentExchange]:
    """Re-send records one by one, yielding each outcome as it comes back. Websocket
    handshakes open websockets at the target, and the recorded client messages go on them
    in their places (`sockets`); each message sent or received is recorded and handed to
    `heard`."""
    target = parse_target(to_url)
    redactor = redactor or recording.Redactor()
    carry = Carry(renamer or Renamer(rename))
    client = Client(target, timeout, verify)
    conversations = sockets.Conversations()

    def heard_on(handshake: int | None) -> Callable[[ws.WebsocketMessage], None]:
        provenance = {"source": "resent", "record": handshake}

        def hear(message: ws.WebsocketMessage) -> None:
            message = dataclasses.replace(message, provenance=provenance)
            if writer is not None:
                writer.write(ws.to_record(message, redactor))
            if heard is not None:
                heard(message)
        return hear

    try:
        for record in records:
            if ws.is_message(record):
                _follow(record, conversations, carry)
                conversations.read()
                continue
            try:
                original = recording.to_exchange(record)
            except (ValueError, KeyError, TypeError) as e:
                yield _refused(record, e)
                continue
            if original.request.opens_websocket:
                sent = _open(original, target, carry, keep_host, conversations,
                             functools.partial(sockets.Conversation, target,
                                               heard=heard_on(original.seq), timeout=timeout,
                                               verify=verify))
            else:
                sent = _send(original, target, client, carry, keep_host)
            exchange = sent.exchange
            seq = writer.write(_record(sent, target, redactor)) if writer is not None else None
            conversations.read()  # what the target sent meanwhile: a tap after a write
            if exchange.error:  # debug: the caller reports each outcome once
                logger.debug(f"resend of record {original.seq} to {exchange.request.url} "
                               f"failed: {exchange.error}")
            yield ResentExchange(record["seq"], exchange.request.method, exchange.request.url,
                                 exchange.status, exchange.error, seq, sent.unreachable)
    finally:
        conversations.finish()
        client.close()


def _follow(record: dict[str, Any], conversations: sockets.Conversations,
            carry: Carry) -> None:
    """A recorded message on a re-opened websocket: the title's is sent; at the server's,
    the target is given a moment to say as much, and a ConnectionId it handed out
    is carried over for the one the original run got (the title writes it into its
    member, and the target taps only connections it knows). A message whose socket did
    not open goes nowhere."""
    try:
        message = ws.from_record(record)
    except ValueError as e:
        logger.debug(f"resend: {e}")
        return
    if message.dropped:
        return
    if message.direction == "client":
        conversation = conversations.of(message)
        if conversation is not None:
            conversation.send(message)
        return
    conversation = conversations.heard_in_recording(message)
    said = ws.rta_of(record)
    if conversation is not None and said is not None and said.sequence is not None \
            and said.connection_id:
        new = conversation.connection_ids.get(said.sequence)
        if new:
            carry.same_as(said.connection_id, new)


def _open(original: model.Exchange, target: Target, carry: Carry, keep_host: bool,
          conversations: sockets.Conversations,
          new: Callable[[str], sockets.Conversation]) -> _Sent:
    """Open a recorded websocket at the target (`new(url)`, kept in `conversations` for
    the messages that follow); the exchange of the handshake. The recorded key is not
    what goes (each handshake has its own), so the record leaves it out."""
    request = original.request
    path = request_target(carry.path(request.path))
    headers = request_headers(request.headers, carry, None if keep_host else target.netloc)
    said = [(n, v) for n, v in headers.record if n.lower() not in sockets.FRESH]
    sent = model.Request("GET", target.url(path),
                         [*said, ("Upgrade", "websocket"), ("Connection", "Upgrade")])
    conversation = new(sent.url)
    start = time.time()
    response, error, unreachable = None, None, False
    try:
        response = conversation.connect(target.base_path + path, headers.send)
    except OSError as e:
        error, unreachable = f"{type(e).__name__}: {e}", True
    except (sockets.ProtocolError, model.ModelError) as e:
        error = f"invalid websocket handshake from the target: {e}"
    if conversation.open:
        conversations.add(request.url, original.client, conversation)
    exchange = model.Exchange(request=sent, response=response, error=error, start=start,
                              end=time.time(), client=conversation.local,
                              provenance={"source": "resent", "record": original.seq})
    return _Sent(exchange, path, headers.send, unreachable)


def resend(
    path: str,
    to_url: str,
    record_path: str | None = None,
    rename: bool = False,
    *,
    keep_host: bool = False,
    timeout: float = 10.0,
    verify: bool = True,
    redactor: recording.Redactor | None = None,
    on_exchange: Callable[[ResentExchange], None] | None = None,
    max_failures: int = 0,
) -> ResendResult:
    """Re-issue the requests of the recording at `path`, in order, against `to_url`.

    Answers are appended to `record_path` (a recording; nothing is written
    when it is None). Raises ValueError for a bad `to_url`; unreadable lines of
    the recording are skipped and listed in `issues`, and for a `record_path`
    that is `path` itself (it would read its own answers). `on_exchange` sees each
    outcome as it happens (the CLI prints progress with it).

    With `max_failures` N > 0 it stops after N requests in a row found no connection to
    the target (a dead target would otherwise fail every request, each after its
    timeout): `stopped` says why in one line and `not_sent` counts the records left.
    """
    parse_target(to_url)  # fail before opening anything
    if record_path and os.path.exists(record_path) and os.path.samefile(path, record_path):
        raise ValueError(f"{record_path} is the recording being re-sent: choose another")
    result = ResendResult(record_path=record_path)
    renamer = Renamer(rename)
    writer = recording.Writer(record_path) if record_path else None
    try:
        records = recording.read(path, issues=result.issues, messages=True)

        def count(_: ws.WebsocketMessage) -> None:
            result.messages += 1

        outcomes = resend_records(records, to_url, keep_host=keep_host, timeout=timeout,
                                  verify=verify, redactor=redactor, writer=writer,
                                  renamer=renamer, heard=count)
        in_a_row = 0
        for outcome in outcomes:
            _count(result, outcome)
            if on_exchange is not None:
                on_exchange(outcome)
            in_a_row = in_a_row + 1 if outcome.unreachable else 0
            if max_failures and in_a_row >= max_failures:
                outcomes.close()
                result.not_sent = sum(1 for r in records if not ws.is_message(r))
                result.stopped = (f"stopped after {in_a_row} connection failures in a row "
                                  f"to {to_url} (last: {outcome.error}); "
                                  f"{result.not_sent} not sent")
                break
    finally:
        if writer is not None:
            writer.close()
    result.renames = dict(renamer.names)
    return result


def _count(result: ResendResult, outcome: ResentExchange) -> None:
    result.sent += 1
    if outcome.status is None:
        result.failed += 1
    else:
        result.answered += 1
