"""Replayer: answer session-directory requests from recordings, never asking the service.

Matched requests get the recorded answers in recorded order (see
`mpsdproxy.replay`). Unmatched ones, and those past the end of their answers,
follow `mpsd_replay_unmatched` and `mpsd_replay_exhausted`. Every answer is
given in the `request` hook: with mitmproxy's lazy connection strategy (which
this addon turns on) a flow answered there never opens a connection upstream,
not even a TLS handshake.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple
from typing import TypeVar

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.net import encoding

from mpsdproxy import faults
from mpsdproxy import replay
from mpsdproxy.addons import common

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Options that change what counts as the same request: a change rehashes the index.
MATCH_OPTIONS = frozenset({
    "mpsd_replay_ignore_params",
    "mpsd_replay_ignore_payload_params",
    "mpsd_replay_use_headers",
    "mpsd_replay_ignore_host",
})
#: Options with a fixed set of values (mitmproxy checks `choices` only on its command line).
CHOICES: dict[str, tuple[str, ...]] = {
    "mpsd_replay_exhausted": replay.EXHAUSTED_CHOICES,
    "mpsd_replay_unmatched": replay.UNMATCHED_CHOICES,
    "mpsd_replay_pace": replay.PACE_CHOICES,
}


def request_of(flow: http.HTTPFlow) -> replay.Request:
    """The flow's request as matching sees it, with the URL the router saw (and the
    recorder wrote) before any redirect to an upstream."""
    info = common.mark(flow) or {}
    r = flow.request
    headers = tuple((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                    for k, v in r.headers.fields)  # what headers.items(multi=True) gives
    body = (r.get_content(strict=False) or b"") if r.raw_content else b""
    return replay.Request(r.method, info.get("url") or r.url, headers, body)


def _decodes(body: bytes, content_encoding: str) -> bool:
    try:
        encoding.decode(body, content_encoding)
    except ValueError:
        return False
    return True


class Wire(NamedTuple):
    """A Reply as mitmproxy sends it: bytes, headers fit for the body given."""

    status: int
    reason: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes


def wire(reply: faults.Reply) -> Wire:
    """The parts of a response to `reply`, its body sent exactly as given.

    Recordings keep bodies decoded; a recorded Content-Encoding the body no
    longer carries is dropped, so the title never gets identity bytes labelled gzip.
    """
    fields = tuple(
        (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
        for k, v in reply.headers
    )
    content_encoding = common.header(fields, b"content-encoding") if reply.body else None
    if content_encoding and not _decodes(reply.body, content_encoding):
        # As `del headers["content-encoding"]` would: every such field goes.
        fields = tuple(f for f in fields if f[0].lower() != b"content-encoding")
    return Wire(reply.status, reply.reason.encode("iso-8859-1", "replace"), fields, reply.body)


#: Made once by mitmproxy's own constructor, which type-checks every field of a new
#: response (in a replay that check cost more than all the rest of an answer).
#: Answers are copies of it with their own fields, of the types it was checked with.
_PROTOTYPE = http.Response(b"HTTP/1.1", 200, b"", (), b"", None, 0.0, 0.0)


def _copy(obj: _T) -> _T:
    """A shallow copy of a plain object (what copy.copy does, at a fifth of its cost)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def response_of(parts: Wire, http_version: bytes, now: float) -> http.Response:
    """A mitmproxy response of its own: new data and Headers (sharing only immutable
    bytes and the fields tuple), so changing it changes nothing else."""
    headers = object.__new__(http.Headers)  # a Headers is its fields, nothing else
    headers.fields = parts.fields
    data = _copy(_PROTOTYPE.data)
    data.http_version = http_version
    data.status_code = parts.status
    data.reason = parts.reason
    data.headers = headers
    data.content = parts.body
    data.timestamp_start = data.timestamp_end = now
    response = _copy(_PROTOTYPE)
    response.data = data
    return response


def to_response(reply: faults.Reply, http_version: str) -> http.Response:
    """A Reply as a mitmproxy response, its body sent exactly as given (see `wire`)."""
    return response_of(wire(reply), http_version.encode(), time.time())


class _Wires:
    """The Wire of each recorded answer served last, bounded as the player's decoded
    answers are; an entry's Wire is reused only while the player hands out the very
    same Reply for it."""

    def __init__(self) -> None:
        self.recent: replay.Recent[tuple[faults.Reply, Wire]] = replay.Recent(
            replay.ANSWER_CACHE_ENTRIES, replay.ANSWER_CACHE_BYTES)

    def get(self, entry: int, reply: faults.Reply) -> Wire:
        known = self.recent.get(entry)
        if known is None or known[0] is not reply:
            known = (reply, wire(reply))
            self.recent.put(entry, known, len(reply.body))
        return known[1]

    def clear(self) -> None:
        self.recent.clear()


def _parse_each(option: str, values: Sequence[str], parse: Callable[[str], Any]) -> list[Any]:
    """Each value parsed; the first ValueError becomes an OptionsError naming option and value."""
    out = []
    for value in values:
        try:
            out.append(parse(value))
        except ValueError as e:
            raise exceptions.OptionsError(f"Cannot parse {option} option {value}: {e}") from e
    return out


def match_options() -> replay.MatchOptions:
    """MatchOptions from the mpsd_replay_* options; OptionsError names the bad value."""
    return replay.MatchOptions(
        ignore_params=frozenset(ctx.options.mpsd_replay_ignore_params),
        ignore_payload=tuple(_parse_each("mpsd_replay_ignore_payload_params",
                                         ctx.options.mpsd_replay_ignore_payload_params,
                                         replay.parse_key_pattern)),
        use_headers=tuple(_parse_each("mpsd_replay_use_headers",
                                      ctx.options.mpsd_replay_use_headers,
                                      replay.parse_header_name)),
        ignore_host=ctx.options.mpsd_replay_ignore_host,
    )


class Replayer:
    def __init__(self) -> None:
        self.player: replay.Player | None = None
        self.emulator: replay.Emulating | None = None
        #: mpsd_replay_pace, kept here: an option lookup per answer is not free.
        self.pace = "fast"
        #: Whether each answer is logged at debug level. With the termlog it follows
        #: termlog_verbosity (as mitmproxy's per-connection chatter does in `mpsdproxy
        #: run`): a record nobody shows still costs an event round through every addon.
        self.debug_answers = True
        self._wires = _Wires()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_replay", Sequence[str], [],
            "Answer session-directory requests from these recordings (JSON Lines, as "
            "written by mpsd_record) instead of the service. Identical requests get the "
            "recorded answers in recorded order.",
        )
        loader.add_option(
            "mpsd_replay_exhausted", str, "repeat-last",
            "What a request gets once every recorded answer to it was served: the last "
            "one again (repeat-last), a 502 from the proxy saying so (error), or the "
            "service (forward).",
            choices=list(replay.EXHAUSTED_CHOICES),
        )
        loader.add_option(
            "mpsd_replay_unmatched", str, "error",
            "What a request the recordings do not hold gets: a 502 from the proxy naming "
            "the closest recorded request (error), an answer from the built-in stand-in "
            "seeded with the recorded sessions (emulate), or the service (forward). With "
            "error and emulate the service is never contacted.",
            choices=list(replay.UNMATCHED_CHOICES),
        )
        loader.add_option(
            "mpsd_replay_pace", str, "fast",
            "Answer at once (fast), or hold each replayed answer until its recorded "
            "latency has passed (recorded), to reproduce timing bugs.",
            choices=list(replay.PACE_CHOICES),
        )
        loader.add_option(
            "mpsd_replay_ignore_params", Sequence[str], list(replay.DEFAULT_IGNORE_PARAMS),
            "Query parameters left out when matching requests against the recording "
            "(nonces and cache busters by default).",
        )
        loader.add_option(
            "mpsd_replay_ignore_payload_params", Sequence[str],
            list(replay.DEFAULT_IGNORE_PAYLOAD_PARAMS),
            "JSON body keys left out when matching: a key name matches at any depth, a "
            "dotted path (members.*.properties.system.connection) from the root, * standing "
            "for any one key. By default correlation ids, timestamps and a title's per-run "
            "RTA connection, subscription and device address.",
        )
        loader.add_option(
            "mpsd_replay_use_headers", Sequence[str], [],
            "Request headers that must also match (If-Match and If-None-Match always do; "
            "Authorization and Signature never can, being redacted in recordings).",
        )
        loader.add_option(
            "mpsd_replay_ignore_host", bool, False,
            "Match requests whatever host and port they name (e.g. a recording made "
            "against the stand-in, replayed to a title aimed at the real host).",
        )

    def configure(self, updated: set[str]) -> None:
        for name in sorted(CHOICES.keys() & updated):
            _parse_each(name, [getattr(ctx.options, name)],
                        functools.partial(replay.parse_choice, choices=CHOICES[name]))
        # Kept on self, read again on every change of any option (configure sees only
        # the changed ones, and an option left at its default never changes).
        self.pace = ctx.options.mpsd_replay_pace
        if "termlog_verbosity" in ctx.options:
            self.debug_answers = ctx.options.termlog_verbosity == "debug"
        if not ({"mpsd_replay"} | MATCH_OPTIONS | CHOICES.keys()) & updated:
            return
        options = match_options()
        if "mpsd_replay" in updated:
            self._load(ctx.options.mpsd_replay, options)
        elif MATCH_OPTIONS & updated and self.player is not None:
            self._rehash(options)
        if self.player is None:
            return
        self.player.exhausted = ctx.options.mpsd_replay_exhausted
        self.player.unmatched = ctx.options.mpsd_replay_unmatched
        if {"mpsd_replay", "mpsd_replay_unmatched"} & updated:
            self.emulator = self._make_emulator()
        self._never_connect_early()

    def _load(self, paths: Sequence[str], options: replay.MatchOptions) -> None:
        """Index new recordings; the old replay stays in force if they cannot be read."""
        if not paths:
            self.done()
            return
        started = time.perf_counter()
        index = _load_index(paths, options)
        self.done()
        self.player = replay.Player(index)
        gc.freeze()  # the index lives as long as the proxy: keep full GCs from walking it
        logger.info(
            f"Replaying {len(index)} exchanges from {', '.join(paths)} "
            f"(indexed in {time.perf_counter() - started:.2f} s)"
        )

    def _rehash(self, options: replay.MatchOptions) -> None:
        """Regroup the same recordings under new match options, keeping what was served."""
        assert self.player is not None
        index = _load_index(self.player.index.paths, options)
        try:
            self.player.rebind(index)
        except ValueError as e:
            index.close()
            raise exceptions.OptionsError(f"Cannot rehash mpsd_replay: {e}") from e
        gc.freeze()

    def _make_emulator(self) -> replay.Emulating | None:
        if ctx.options.mpsd_replay_unmatched != "emulate":
            return None
        try:
            from mpsdproxy import emulator
        except ImportError as e:
            raise exceptions.OptionsError(
                f"mpsd_replay_unmatched=emulate needs the stand-in (mpsdproxy.emulator): {e}"
            ) from e
        return emulator.Emulator(emulator.EmulatorConfig.load(None))

    def _never_connect_early(self) -> None:
        """Replay answers in the request hook; lazy connections make that mean no
        connection to the service at all (mitmproxy's default, eager, connects first)."""
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            logger.info("mpsd_replay sets connection_strategy=lazy: replayed requests must "
                        "never open a connection to the service")
            ctx.options.connection_strategy = "lazy"

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        if self.player is None or common.mark(flow) is None:
            return None
        try:
            return self._answer(flow, self.player)
        except Exception as e:  # noqa: BLE001 - a failing replay must still not reach the service
            logger.exception(f"{flow.request.method} {flow.request.url}: the replay failed: {e}")
            if flow.response is None and flow.error is None:
                self._refuse(flow, replay.Pass("error", "failed", f"the replay failed: {e}"))
            return None

    def _answer(self, flow: http.HTTPFlow, player: replay.Player) -> Awaitable[None] | None:
        request = request_of(flow)
        decision = player.decide(request)
        if isinstance(decision, replay.Serve):
            return self._serve(flow, decision)
        if decision.action == "forward":
            logger.warning(decision.message)
            common.set_provenance(flow, source="forwarded", replay=decision.reason,
                                  note=decision.message)
        elif decision.action == "emulate":
            self._emulate(flow, request, decision)
        else:
            logger.warning(decision.message)
            self._refuse(flow, decision)
        return None

    def _serve(self, flow: http.HTTPFlow, decision: replay.Serve) -> Awaitable[None] | None:
        assert self.player is not None
        reply = self.player.answer(decision.entry)
        provenance: dict[str, Any] = {"record": decision.seq, "file": decision.file}
        if decision.repeat:
            provenance["repeat"] = True
        common.set_provenance(flow, source="replayed", **provenance)
        if self.debug_answers and logger.isEnabledFor(logging.DEBUG):
            logger.debug(f"{flow.request.method} {flow.request.url}: replayed record "
                         f"#{decision.seq}{' again' if decision.repeat else ''}")
        if reply is None:
            flow.kill()  # the recorded exchange got no response: neither does this one
        else:
            flow.response = response_of(self._wires.get(decision.entry, reply),
                                        flow.request.data.http_version, time.time())
            flow.is_replay = "response"
        return self._hold(flow, decision.entry)

    def _hold(self, flow: http.HTTPFlow, entry: int) -> Awaitable[None] | None:
        """With recorded pace, an awaitable that waits out the rest of the recorded
        latency (mitmproxy awaits it without blocking other flows)."""
        if self.pace != "recorded":
            return None
        assert self.player is not None
        duration = self.player.index.duration_ms(entry)
        if duration is None:
            return None
        remaining = duration / 1000 - (time.time() - flow.request.timestamp_start)
        return asyncio.sleep(remaining) if remaining > 0 else None

    def _emulate(self, flow: http.HTTPFlow, request: replay.Request,
                 decision: replay.Pass) -> None:
        assert self.player is not None and self.emulator is not None
        logger.warning(f"{decision.message}; the stand-in answers")
        reply = self.player.emulate(request, self.emulator)
        flow.response = to_response(reply, flow.request.http_version)
        common.set_provenance(flow, source="emulated", replay=decision.reason,
                              note=decision.message)

    def _refuse(self, flow: http.HTTPFlow, decision: replay.Pass) -> None:
        flow.response = to_response(replay.error_reply(decision), flow.request.http_version)
        common.set_provenance(flow, source="replay-error", replay=decision.reason,
                              note=decision.message)

    def done(self) -> None:
        self._wires.clear()
        if self.player is not None:
            self.player.close()
            self.player = None
        self.emulator = None


def _load_index(paths: Sequence[str], options: replay.MatchOptions) -> replay.Index:
    """Index the recordings; a corrupt line stops the load, a truncated last line (what a
    killed recorder leaves) is only reported."""
    try:
        index = replay.Index.load(paths, options)
    except OSError as e:
        raise exceptions.OptionsError(f"Cannot read mpsd_replay file {e.filename}: "
                                      f"{e.strerror}") from e
    for issue in index.issues:
        if not issue.truncated:
            index.close()
            raise exceptions.OptionsError(f"Cannot read mpsd_replay file {issue}")
        logger.warning(f"mpsd_replay skips {issue}")
    return index

