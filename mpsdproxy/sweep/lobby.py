"""A scripted lobby title for the sweep demo: it plays turn after turn while a sweep injects.

Each turn writes the lobby (as its member) and reads it back, on a `title.Sender`.
The well-behaved title adopts a 412's session and ETag (as the client library
does: multiplayer_session.cpp ~L1241, multiplayer_session_writer.cpp ~L378) and,
after any other failed write, re-reads and writes again once, as
MultiplayerManager retries its pending change. The misbehaving one resends the
ETag a 412 refused, so it never gets a write through again: the sweep matrix
shows that cell not recovered.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from dataclasses import field

from mpsdproxy import title

__all__ = ["LobbyTitle"]


@dataclass
class LobbyTitle:
    send: title.Sender
    lobby: str
    user: str
    xuid: str
    blind_resend: bool = False
    etag: str | None = None
    refused: str | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return title.session_path(self.lobby)

    def _call(self, method: str, body: object = None,
              extra: tuple[tuple[str, str], ...] = ()) -> tuple[int | None, dict[str, str], bool]:
        """(status, headers, whether it had a body); no status when no answer came."""
        headers = [title.CONTRACT, ("Authorization", title.authorization(self.user)),
                   ("Content-Type", "application/json; charset=utf-8"), *extra]
        data = json.dumps(body).encode() if body is not None else b""
        try:
            status, got, content = self.send(method, self.path, headers, data, False)
        except (OSError, http.client.HTTPException):
            return None, {}, False
        return status, got, bool(content)

    def write(self, turn: int) -> bool:
        """PUT the lobby with If-Match once it has an ETag; whether it went through."""
        etag = self.refused if self.blind_resend and self.refused else self.etag
        body = {"members": {"me": {"constants": {"system": {"xuid": self.xuid,
                                                            "initialize": True}},
                                   "properties": {"system": {"active": True}}}},
                "properties": {"custom": {"turn": turn}}}
        status, headers, whole = self._call("PUT", body,
                                            (("If-Match", etag),) if etag else ())
        if status == 412 and whole:  # the session, with its ETag: adopt it, as the library does
            self.refused = etag
            self.etag = headers.get("etag", self.etag)
            return True
        if status in (200, 201):
            self.etag = headers.get("etag", self.etag)
            return True
        return False

    def read(self) -> int | None:
        status, headers, _ = self._call("GET")
        if status == 200:
            self.etag = headers.get("etag", self.etag)
        elif status == 204:
            self.etag = None  # gone: the next write creates it again
        return status

    def play(self, turns: int, pause: float = 0.05) -> None:
        for turn in range(turns):
            if not self.write(turn):
                self.read()
                self.write(turn)
            self.read()
            time.sleep(pause)
