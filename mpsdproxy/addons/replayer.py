"""Replayer: answer session-directory requests from recordings, never asking the service.

Matched requests get the recorded answers in recorded order (see
`mpsdproxy.replay`). Unmatched ones, and those past the end of their answers,
follow `mpsd_replay_unmatched` and `mpsd_replay_exhausted`. Every answer is
given in the `request` hook: with mitmproxy's lazy connection strategy (which
this addon turns on) a flow answered there never opens a connection upstream,
not even a TLS handshake.

Under `mpsd_replay_unmatched=emulate` the replayer answers nothing itself: it
marks the flow (`replay.HANDOFF_KEY` in flow.metadata) with the session
documents the title has seen, and the StandIn addon, next in the chain,
answers. Both start afresh when `mpsd_replay` or `mpsd_replay_unmatched`
changes: a new stand-in is handed every session again.

The RTA websocket is replayed too (`replay.rta`): a handshake the replay matches
to a recorded one is not answered here but sent to the replay's own loopback
websocket server (`replay.rtaserver`, started on first use), which answers the
title's subscribes with the recorded results and sends the recorded server
messages as the exchanges recorded before them are served (this addon's
`response` hook tells it). mitmproxy relays that socket like any other, so every
frame is recorded, logged and judged as it is live.
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
from urllib.parse import urlsplit

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.log import ALERT

from mpsdproxy import replay
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.replay import rta as rta_replay
from mpsdproxy.replay import rtaserver

logger = logging.getLogger(__name__)

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
#: Options after whose change the stand-in starts afresh (see the module docstring).
FRESH_STANDIN = frozenset({"mpsd_replay", "mpsd_replay_unmatched"})
#: flow.metadata keys: the recorded entry a flow was answered with (its serving releases
#: the RTA messages recorded after it), and the URL of a handshake sent to the RTA server.
ENTRY_KEY = "mpsd_replay_entry"
RTA_KEY = "mpsd_replay_rta"


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


def load_index(paths: Sequence[str], options: replay.MatchOptions) -> replay.Index:
    """Index the recordings. A bad line stops the load with `FILE:LINE: problem` (a
    record no wire could carry too); a truncated last line (what a killed recorder
    leaves) is only reported."""
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


class Replayer:
    def __init__(self) -> None:
        self.player: replay.Player | None = None
        #: mpsd_replay_pace, kept here: an option lookup per answer is not free.
        self.pace = "fast"
        #: Whether each answer is logged at debug level. With the termlog it follows
        #: termlog_verbosity (as mitmproxy's per-connection chatter does in `mpsdproxy
        #: run`): a record nobody shows still costs an event round through every addon.
        self.debug_answers = True
        #: The RTA side of the replay, and the loopback server its websockets go to.
        self.rta: rta_replay.RtaReplay | None = None
        self.rta_server = rtaserver.Server()

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
        if FRESH_STANDIN & updated:
            self.player.forget_handoffs()
        self._never_connect_early()

    def _load(self, paths: Sequence[str], options: replay.MatchOptions) -> None:
        """Index new recordings; the old replay stays in force if they cannot be read."""
        if not paths:
            self.done()
            return
        started = time.perf_counter()
        index = load_index(paths, options)
        self.done()
        self.player = replay.Player(index)
        self.rta = rta_replay.RtaReplay(index)
        gc.freeze()  # the index lives as long as the proxy: keep full GCs from walking it
        logger.info(
            f"Replaying {len(index)} exchanges from {', '.join(paths)} "
            f"(indexed in {time.perf_counter() - started:.2f} s)"
            + (f", and {len(self.rta)} RTA messages on {len(self.rta.streams)} websockets"
               if self.rta.streams else "")
        )

    def _rehash(self, options: replay.MatchOptions) -> None:
        """Regroup the same recordings under new match options, keeping what was served."""
        assert self.player is not None
        index = load_index(self.player.index.paths, options)
        try:
            self.player.rebind(index)
        except ValueError as e:
            index.close()
            raise exceptions.OptionsError(f"Cannot rehash mpsd_replay: {e}") from e
        gc.freeze()

    def _never_connect_early(self) -> None:
        """Replay answers in the request hook; lazy connections make that mean no
        connection to the service at all (mitmproxy's default, eager, connects first)."""
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            logger.info("mpsd_replay sets connection_strategy=lazy: replayed requests must "
                        "never open a connection to the service")
            ctx.options.connection_strategy = "lazy"

    # -- commands ------------------------------------------------------------------------

    @command.command("mpsd.replay.remaining")
    def remaining(self) -> int:
        """How many recorded answers have not been served yet (0 without a replay)."""
        count = self.player.remaining() if self.player is not None else 0
        logger.log(ALERT, f"{count} recorded answers not served yet")
        return count

    # -- hooks ---------------------------------------------------------------------------

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
                flow.metadata.pop(replay.HANDOFF_KEY, None)
                self._refuse(flow, replay.Pass("error", "failed", f"the replay failed: {e}"))
            return None

    def response(self, flow: http.HTTPFlow) -> None:
        """Release the RTA messages recorded after a served exchange; point a replayed
        handshake back at the URL the title asked for; learn the ETag the stand-in handed
        out, so a precondition naming it matches."""
        self._released(flow)
        handoff = flow.metadata.get(replay.HANDOFF_KEY)
        if handoff is None or self.player is None:
            return
        etag = handoff.get("etag")
        if isinstance(etag, str) and etag:
            self.player.learn(etag)

    def error(self, flow: http.HTTPFlow) -> None:
        self._released(flow)

    def done(self) -> None:
        if self.player is not None:
            self.player.close()
            self.player = None
        self.rta = None
        self.rta_server.close()

    # -- answering -----------------------------------------------------------------------

    def _answer(self, flow: http.HTTPFlow, player: replay.Player) -> Awaitable[None] | None:
        decision = player.decide(flows.request_of(flow))
        if isinstance(decision, replay.Serve):
            if self.rta is not None and self.rta.is_handshake(decision.entry) \
                    and _is_websocket_handshake(flow):
                return self._to_rta_server(flow, self.rta, decision)
            return self._serve(flow, player, decision)
        if decision.action == "forward":
            logger.warning(decision.message)
            common.set_provenance(flow, source="forwarded", replay=decision.reason,
                                  note=decision.message)
        elif decision.action == "emulate":
            flow.metadata[replay.HANDOFF_KEY] = replay.handoff_mark(decision, player.handoff())
        else:
            logger.warning(decision.message)
            self._refuse(flow, decision)
        return None

    def _serve(self, flow: http.HTTPFlow, player: replay.Player,
               decision: replay.Serve) -> Awaitable[None] | None:
        response = player.answer(decision.entry)
        provenance: dict[str, Any] = {"record": decision.seq, "file": decision.file}
        if decision.repeat:
            provenance["repeat"] = True
        common.set_provenance(flow, source="replayed", **provenance)
        if self.debug_answers and logger.isEnabledFor(logging.DEBUG):
            logger.debug(f"{flow.request.method} {flow.request.url}: replayed record "
                         f"#{decision.seq}{' again' if decision.repeat else ''}")
        if response is None:
            flow.kill()  # the recorded exchange got no response: neither does this one
            self._release(decision.entry)
        else:
            flow.response = flows.to_mitmproxy(response, flow.request.http_version)
            flow.is_replay = "response"
            flow.metadata[ENTRY_KEY] = decision.entry
        return self._hold(flow, player, decision.entry)

    # -- the RTA websocket ---------------------------------------------------------------

    async def _to_rta_server(self, flow: http.HTTPFlow, rta: rta_replay.RtaReplay,
                             decision: replay.Serve) -> None:
        """Send a replayed RTA handshake to the replay's websocket server, with the feed
        of the recorded websocket it matched."""
        port = await self.rta_server.start()
        feed = rta.feed(decision.entry, repeat=decision.repeat)
        flow.metadata[RTA_KEY] = flow.request.url
        flow.request.headers[rtaserver.FEED_HEADER] = self.rta_server.expect(feed)
        flow.request.data.scheme = b"http"
        flow.request.data.host = self.rta_server.host
        flow.request.data.port = port
        provenance: dict[str, Any] = {"record": decision.seq, "file": decision.file}
        if decision.repeat:
            provenance["repeat"] = True
        common.set_provenance(flow, source="replayed", **provenance)
        logger.info(f"RTA websocket {flow.request.path}: replaying recorded websocket "
                    f"#{decision.seq} ({len(feed.cues)} server messages"
                    f"{', results only' if decision.repeat else ''})")

    def _released(self, flow: http.HTTPFlow) -> None:
        """A flow's answer went out: release what was recorded after it; a handshake
        sent to the RTA server shows the title's own URL again from here on."""
        entry = flow.metadata.pop(ENTRY_KEY, None)
        if isinstance(entry, int):
            self._release(entry)
        url = flow.metadata.pop(RTA_KEY, None)
        if isinstance(url, str):
            original = urlsplit(url)
            flow.request.data.scheme = original.scheme.encode()
            flow.request.data.host = original.hostname or flow.request.data.host
            flow.request.data.port = original.port or (443 if original.scheme == "https"
                                                       else 80)
            flow.request.headers.pop(rtaserver.FEED_HEADER, None)

    def _release(self, entry: int) -> None:
        if self.rta is not None:
            self.rta.served(entry)
            self.rta_server.nudge()

    def _hold(self, flow: http.HTTPFlow, player: replay.Player,
              entry: int) -> Awaitable[None] | None:
        """With recorded pace, an awaitable that waits out the rest of the recorded
        latency (mitmproxy awaits it without blocking other flows)."""
        if self.pace != "recorded":
            return None
        duration = player.index.duration_ms(entry)
        if duration is None:
            return None
        remaining = duration / 1000 - (time.time() - flow.request.timestamp_start)
        return asyncio.sleep(remaining) if remaining > 0 else None

    @staticmethod
    def _refuse(flow: http.HTTPFlow, decision: replay.Pass) -> None:
        flow.response = flows.to_mitmproxy(replay.error_response(decision),
                                           flow.request.http_version)
        common.set_provenance(flow, source="replay-error", replay=decision.reason,
                              note=decision.message)


def _is_websocket_handshake(flow: http.HTTPFlow) -> bool:
    return "websocket" in flow.request.headers.get("Upgrade", "").lower()
