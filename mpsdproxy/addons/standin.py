"""StandIn: the built-in stand-in answers what a replay left to it.

Under `mpsd_replay_unmatched=emulate` the Replayer answers no request the
recordings lack: it marks the flow (`replay.HANDOFF_KEY`) with the session
documents the title has seen, and this addon, next in the chain, seeds an
in-process `mpsdproxy.emulator.Emulator` with them and lets it answer. The
ETag it hands out goes back into the mark, for the Replayer to learn.

The stand-in starts afresh (knowing nothing) whenever `mpsd_replay` or
`mpsd_replay_unmatched` changes, as the Replayer's hand-over does. A marked
flow never reaches the service: if the stand-in cannot answer, the proxy
answers 502 itself.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

from mpsdproxy import model
from mpsdproxy import replay
from mpsdproxy.addons import common
from mpsdproxy.addons import flows

logger = logging.getLogger(__name__)

#: The Replayer's options this addon follows (it declares none of its own).
OPTIONS = frozenset({"mpsd_replay", "mpsd_replay_unmatched"})


def _wanted() -> bool:
    """Whether a replay is on and leaves unmatched requests to the stand-in."""
    options = ctx.options
    return ("mpsd_replay" in options and bool(options.mpsd_replay)
            and options.mpsd_replay_unmatched == "emulate")


class StandIn:
    def __init__(self) -> None:
        #: The in-process stand-in (`mpsdproxy.emulator.Emulator`), while one is wanted.
        self.emulator: Any = None

    def configure(self, updated: set[str]) -> None:
        if not OPTIONS & updated:
            return
        self.emulator = self._make() if _wanted() else None

    @staticmethod
    def _make() -> Any:
        try:
            from mpsdproxy import emulator
        except ImportError as e:
            raise exceptions.OptionsError(
                f"mpsd_replay_unmatched=emulate needs the stand-in (mpsdproxy.emulator): {e}"
            ) from e
        return emulator.Emulator(emulator.EmulatorConfig.load(None))

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        handoff = flow.metadata.get(replay.HANDOFF_KEY)
        if handoff is None or "etag" in handoff:
            return
        reason, note = str(handoff.get("reason", "unmatched")), str(handoff.get("note", ""))
        try:
            response = self._handle(flow, handoff)
        except Exception as e:  # noqa: BLE001 - a marked flow must still not reach the service
            logger.exception(f"{flow.request.method} {flow.request.url}: the stand-in "
                             f"failed: {e}")
            failed = replay.Pass("error", reason, f"{note}; the stand-in failed: {e}")
            flow.response = flows.to_mitmproxy(replay.error_response(failed),
                                               flow.request.http_version)
            common.set_provenance(flow, source="replay-error", replay=reason, note=failed.message)
            return
        logger.warning(f"{note}; the stand-in answers")
        flow.response = flows.to_mitmproxy(response, flow.request.http_version)
        handoff["etag"] = response.headers.first("ETag") or ""
        common.set_provenance(flow, source="emulated", replay=reason, note=note)

    def _handle(self, flow: http.HTTPFlow, handoff: dict[str, Any]) -> model.Response:
        """Seed what the title has seen, then let the stand-in answer."""
        if self.emulator is None:
            raise RuntimeError("no stand-in is running (mpsd_replay_unmatched is not emulate)")
        for path, document, etag in handoff.pop("seeds", ()):
            try:
                self.emulator.seed(path, document, etag)
            except ValueError as e:
                logger.warning(f"The stand-in cannot hold the recorded session {path}: {e}")
        return self.emulator.handle(flows.request_of(flow))

    def done(self) -> None:
        self.emulator = None
