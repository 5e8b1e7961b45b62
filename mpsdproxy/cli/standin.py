"""`mpsdproxy emulate`: the local stand-in as a command of its own (no mitmproxy in it)."""

from __future__ import annotations

import errno
import ipaddress

import click

from mpsdproxy.cli.base import CONTEXT
from mpsdproxy.cli.base import LISTEN_HOST
from mpsdproxy.cli.base import BadInput
from mpsdproxy.cli.base import InputFile
from mpsdproxy.cli.base import cli
from mpsdproxy.cli.base import one_line
from mpsdproxy.cli.base import validate_port


@cli.command(context_settings=CONTEXT)
@LISTEN_HOST
@click.option("--allow-remote", is_flag=True,
              help="Allow --listen-host beyond loopback; the control API then needs a token "
                   "(--control-token, or one generated and printed at start).")
@click.option("--control-token", metavar="TOKEN", default="",
              help="Require `X-Emulator-Token: TOKEN` on the control API (/_emulator/*), 403 "
                   "without. Default: the config's control_token; else none on loopback, a "
                   "generated one beyond it.")
@click.option("--listen-port", default=8081, show_default=True, callback=validate_port,
              help="Port to listen on (0 picks a free one).")
@click.option("--config", "config", metavar="FILE", default=None,
              type=InputFile(),
              help="YAML file of SCIDs, templates, hoppers and limits (default: the shipped one).")
@click.option("--world-from", "worlds", metavar="RECORDING", multiple=True, type=InputFile(),
              help="Add every SCID, session template (with the constants the service "
                   "reported for it) and hopper this recording's calls name, and the "
                   "gamertags and title id its answers show, so the capture re-sent here "
                   "meets them (repeatable; what the config says stays).")
def emulate(listen_host: str, allow_remote: bool, control_token: str, listen_port: int,
            config: str | None, worlds: tuple[str, ...]) -> None:
    """Run the local MPSD stand-in: every row of the status table, no network needed.

    It answers as the client library sees the service: documents with the fields the
    service writes (gamertag, deviceToken, large sessions' "me"), timers, handles and
    queries against a social graph, matchmaking tickets that reach "found", and rate
    limits per caller and service. Every request needs `Authorization: XBL3.0
    x=<userhash>;<token>` (403 without) and `x-xbl-contract-version` (400 without).

    \b
    The config (--config; the default is mpsdproxy/data/emulator.yaml, commented):
      scids:              SCIDs, their session templates (constants merged into every
                          new session) and hoppers
      read_only_users:    callers that may read, not write (403 with the session)
      server_principals:  callers that may delete other members
      require_signature:  refuse requests without a Signature header (403)
      control_token:      the control API's token (--control-token wins)
      gamertags, friends, title_id, matchmaking, rate_limit, overload

    \b
    The control API, for scripts (never throttled or overloaded):
      POST /_emulator/overload   {"retry_after": 2, "requests": 1}: answer 503
      POST /_emulator/recover    stop answering 503
      POST /_emulator/reset      forget every session, handle and ticket
      GET  /_emulator/sessions   key, path, changeNumber and ETag of each session
      POST /_emulator/change     {"session": PATH}: another console changed it
    Beyond loopback (--allow-remote) each needs `X-Emulator-Token: TOKEN` (403 without);
    with a token given (--control-token, or control_token: in the config) it needs it
    on loopback too.

    \b
    Example:
      mpsdproxy emulate --listen-port 8081
      mpsdproxy conformance --target http://127.0.0.1:8081   # check it as the library would
      mpsdproxy emulate --world-from capture.jsonl           # then, beside it:
      mpsdproxy resend capture.jsonl --to http://127.0.0.1:8081 --rename --record again.jsonl
      mpsdproxy emulate --listen-host 0.0.0.0 --allow-remote --control-token s3cret
    """
    import secrets

    from mpsdproxy import emulator
    from mpsdproxy.emulator import world

    try:
        settings = emulator.EmulatorConfig.load(config)
        if worlds:
            settings = world.with_world_of(settings, world.world_of_files(worlds))
    except ValueError as e:
        raise BadInput(one_line(e)) from None
    token = control_token or settings.control_token
    given = token is not None
    remote = not _loopback(listen_host)
    if remote and not allow_remote:
        raise BadInput(f"--listen-host {listen_host}: the stand-in would listen beyond this "
                       "machine; add --allow-remote if anyone on that network may use it")
    if remote and token is None:
        token = secrets.token_urlsafe(18)

    def ready(port: int) -> None:
        click.echo(f"MPSD stand-in listening on http://{listen_host}:{port}", err=True)
        if remote:
            click.secho(f"Reachable from other machines: {listen_host}, port {port}. Anyone on "
                        "that network can use the stand-in; its control API needs the token.",
                        fg="yellow", err=True)
        if token and not given:
            click.echo(f"Control API token: {token} (send it as X-Emulator-Token)", err=True)

    try:
        emulator.run(listen_host, listen_port, settings, ready=ready, control_token=token)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise BadInput(f"port {listen_port} on {listen_host} is already in use: choose "
                           "another with --listen-port (0 picks a free one)") from None
        raise BadInput(one_line(e)) from None
    except ValueError as e:
        raise BadInput(one_line(e)) from None


def _loopback(host: str) -> bool:
    """Whether the stand-in's host keeps it on this machine (without importing mitmproxy,
    which the stand-in does not need)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
