"""The commands that run something: the proxy, the stand-in, the demo, and the scenario check."""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import click

from mpsdproxy import safefiles
from mpsdproxy.addons.router import DEFAULT_INTERCEPT_HOSTS
from mpsdproxy.cli.base import CONTEXT
from mpsdproxy.cli.base import LISTEN_HOST
from mpsdproxy.cli.base import BadInput
from mpsdproxy.cli.base import InputFile
from mpsdproxy.cli.base import cli
from mpsdproxy.cli.base import one_line
from mpsdproxy.cli.base import validate_port

FLAGS = {
    "mode": "--mode",
    "listen_host": "--listen-host",
    "listen_port": "--listen-port",
    "confdir": "--confdir",
    "mpsd_record": "--record",
    "mpsd_upstream": "--upstream",
    "mpsd_redact": "--redact",
    "mpsd_no_redact": "--no-redact",
    "mpsd_quiet": "--quiet",
    "mpsd_verdicts": "--no-verdicts",
    "mpsd_limits": "--limits",
    "mpsd_intercept_hosts": "--intercept-host",
    "mpsd_scenario": "--scenario",
    "mpsd_replay": "--replay",
    "mpsd_replay_exhausted": "--exhausted",
    "mpsd_replay_unmatched": "--unmatched",
    "mpsd_replay_pace": "--pace",
    "stream_large_bodies": "--body-cap",
    "mpsd_client_header": "--client-header",
    "mpsd_allow_client": "--allow-client",
    "mpsd_client_cert_ca": "--client-cert-ca",
    "mpsd_tag": "--tag",
    "mpsd_sweep": "--sweep",
    "mpsd_sweep_state": "--sweep-state",
    "mpsd_sweep_only": "--sweep-only",
    "mpsd_sweep_again": "--sweep-again",
    "mpsd_sweep_seed": "--sweep-seed",
    "mpsd_sweep_gap": "--sweep-gap",
}
"""The mitmproxy and mpsdproxy options `run` sets, and the flag the user typed for each:
an error about an option must name what the user can change."""

MODES = ("regular", "transparent", "socks5", "upstream:URL", "reverse:URL", "dns",
         "wireguard", "local", "tun", "osproxy")
"""mitmproxy's proxy modes, each optionally followed by @[HOST:]PORT."""

_TCP_MODES = ("regular", "transparent", "socks5", "upstream", "reverse")


def user_words(message: str, flags: Mapping[str, str]) -> str:
    """`message` with each option name in `flags` replaced by its flag:
    "Cannot parse mpsd_upstream option x: ..." -> "Cannot parse --upstream x: ..."."""
    if not flags:
        return message
    names = "|".join(re.escape(n) for n in sorted(flags, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w-])({names})(?![\w-])( option\b|=)?")

    def flag(m: re.Match[str]) -> str:
        return flags[m[1]] + (" " if m[2] == "=" else "")

    return pattern.sub(flag, message)


def typed_flags(settings: Mapping[str, Any], sets: Sequence[str]) -> dict[str, str]:
    """FLAGS for the options `run` set from a flag; an option the user set with
    `--set NAME=...` keeps its name (that is what they typed)."""
    by_set = {pair.partition("=")[0].strip() for pair in sets}
    return {n: f for n, f in FLAGS.items() if n in settings and n not in by_set}


def bad_mode(mode: str, error: str) -> click.BadParameter:
    """A --mode that mitmproxy refused: the value, why, and the modes there are."""
    return click.BadParameter(
        f"{mode!r}: {error.strip().rstrip(':.') or 'not a mode'}. Valid modes: {', '.join(MODES)} "
        "(each optionally followed by @[HOST:]PORT)", param_hint="--mode")


class Listen(NamedTuple):
    """Where one mode listens, and the flag that said so (for the message)."""

    host: str
    port: int
    flag: str


def listen_addresses(host: str, port: int, modes: Sequence[str]) -> list[Listen]:
    """The TCP addresses the proxy will listen on: --listen-host/--listen-port, or a mode's
    own `@[HOST:]PORT` (read as mitmproxy reads it: after the last `@`)."""
    found: list[Listen] = []
    for mode in modes:
        head, at, listen_at = mode.rpartition("@")
        kind = (head if at else mode).partition(":")[0]
        if kind not in _TCP_MODES:
            continue
        if not at:
            found.append(Listen(host, port, "--listen-port"))
            continue
        own_host, _, own_port = listen_at.rpartition(":")
        if own_port.isdigit():
            found.append(Listen(own_host.strip("[]") or host, int(own_port),
                                f"--mode {head}@PORT"))
    return found


def refuse_unusable_listen(listen: Listen) -> None:
    """BadInput naming the flag when the proxy could not listen there: a port in use, a
    host that does not resolve or is not this machine's. mitmproxy would log the error,
    suggest one of its own flags and exit 1; checked here first so the user reads the flag
    they typed. (A port taken between this check and the proxy's bind still fails, in
    mitmproxy's words.)"""
    where = "--listen-host" if listen.flag == "--listen-port" else listen.flag
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise BadInput(f"{where} {listen.host}: cannot be resolved ({e})") from None
    with socket.socket(family, kind, proto) as probe:
        if sys.platform != "win32":  # as asyncio binds: a port in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
                raise BadInput(f"port {listen.port} on {listen.host} is already in use: choose "
                               f"another with {listen.flag} (0 picks a free one)") from None
            if e.errno in (errno.EADDRNOTAVAIL, getattr(errno, "WSAEADDRNOTAVAIL", -1)):
                raise BadInput(f"{where} {listen.host}: not an address of this machine "
                               f"({e.strerror})") from None
            return  # another problem (a privileged port, ...): the proxy reports it


def refuse_unusable_confdir(confdir: str) -> None:
    """The confdir mitmproxy would create (and fail on with a traceback): made here, or
    one line naming --confdir."""
    try:
        os.makedirs(os.path.expanduser(confdir), exist_ok=True)
    except OSError as e:
        raise BadInput(f"--confdir {confdir}: {e.strerror or e}") from None


@cli.command(context_settings=CONTEXT)
@click.option("--record", "record", metavar="FILE", default="",
              help="Append every session-directory exchange to this JSON Lines recording.")
@click.option("--tag", "tags", metavar="KEY=VALUE", multiple=True,
              help="Run metadata for the recording's header (repeatable): build=1234, "
                   "title=netrumble, console=devkit-07. `mpsdproxy fleet` groups by it.")
@click.option("--mode", "modes", metavar="MODE", multiple=True,
              help="A mitmproxy mode spec: regular (default), reverse:URL, upstream:URL, "
                   "wireguard, local, ... Repeat to listen in several modes at once.")
@LISTEN_HOST
@click.option("--allow-remote", is_flag=True,
              help="Allow listening beyond loopback (--listen-host, --mode ...@HOST:PORT or "
                   "--set listen_host): anyone on that network can then use the proxy.")
@click.option("--client-header", metavar="NAME=VALUE", default="",
              help="Require this header from the title (403 without) and strip it before "
                   "forwarding; Authorization is left untouched (use it in reverse mode, where "
                   "proxyauth cannot work).")
@click.option("--allow-client", "allow_clients", metavar="CIDR", multiple=True,
              help="Only clients from this address or network may use the proxy (403 for "
                   "others; repeatable).")
@click.option("--client-cert-ca", metavar="FILE", default="",
              help="PEM file of the CA that issues the titles' TLS client certificates: the "
                   "proxy asks for one and refuses (403) a request without one it issued. "
                   "For reverse mode, where the title talks TLS to the proxy itself.")
@click.option("--listen-port", default=8080, show_default=True, callback=validate_port,
              help="Port to listen on.")
@click.option("--intercept-host", "intercept_hosts", metavar="HOST", multiple=True,
              help="A host whose traffic is session-directory traffic (repeatable; replaces "
                   f"the default list: {', '.join(DEFAULT_INTERCEPT_HOSTS)}). Other hosts "
                   "pass through undecrypted.")
@click.option("--upstream", metavar="URL", default="",
              help="Send intercepted session-directory traffic to this server (e.g. the "
                   "stand-in at http://127.0.0.1:8081) instead of the real host.")
@click.option("--redact", "redact", metavar="HEADER", multiple=True,
              help="Another header to redact in recordings (repeatable).")
@click.option("--no-redact", is_flag=True,
              help="Write tokens and signatures to the recording in clear text. Never share "
                   "such a file.")
@click.option("--scenario", "scenarios", metavar="FILE", multiple=True, type=InputFile(),
              help="Inject faults from this YAML scenario (repeatable). Checked before the "
                   "proxy listens; edits while it runs are reloaded.")
@click.option("--replay", "replays", metavar="FILE", multiple=True, type=InputFile(),
              help="Answer from this recording instead of the service (repeatable). An "
                   "empty recording is refused before the proxy starts.")
@click.option("--exhausted", type=click.Choice(["repeat-last", "error", "forward"]),
              default="repeat-last", show_default=True,
              help="Replay: what a request gets once its recorded answers are used up.")
@click.option("--unmatched", type=click.Choice(["forward", "emulate", "error"]),
              default="error", show_default=True,
              help="Replay: what a request the recording does not hold gets: the service, "
                   "the built-in stand-in (seeded from the recording), or a 502 naming the "
                   "closest recorded request. With emulate or error nothing is ever sent "
                   "upstream.")
@click.option("--pace", type=click.Choice(["fast", "recorded"]), default="fast",
              show_default=True,
              help="Replay: answer at once, or hold each answer for its recorded latency.")
@click.option("--sweep", is_flag=True,
              help="Fault sweep: inject every fault the service can give at every call the "
                   "title makes, one at a time (see `mpsdproxy report --matrix`).")
@click.option("--sweep-state", metavar="FILE", default="", type=click.Path(dir_okay=False),
              help="Sweep: JSON file of the cells done, shared by several runs; a cell in it "
                   "is never injected again (delete its entry to redo it).")
@click.option("--sweep-only", metavar="OPS/FAULTS", multiple=True,
              help="Sweep: only these cells, globs, e.g. 'PUT session */412.*,503.*' "
                   "(repeatable).")
@click.option("--sweep-again", metavar="OPS/FAULTS", multiple=True,
              help="Sweep: inject these cells once more though the state file says they are "
                   "done (same globs as --sweep-only; repeatable).")
@click.option("--sweep-seed", default=0, show_default=True, type=int,
              help="Sweep: the seed of the cells' order and quiet windows.")
@click.option("--sweep-gap", default="2s", show_default=True, metavar="DURATION",
              help="Sweep: the quiet window after each fault (e.g. 2s, 500ms).")
@click.option("--body-cap", metavar="SIZE", default="16m", show_default=True,
              help="Stream a response body bigger than this to the title instead of holding "
                   "it, and record only its first 64 KiB, marked truncated (mitmproxy's "
                   "stream_large_bodies; e.g. 512k, 16m).")
@click.option("--limits", metavar="FILE", default="", type=click.Path(dir_okay=False),
              help="YAML call-rate budgets and verdict thresholds, merged over the defaults.")
@click.option("--no-verdicts", is_flag=True,
              help="Do not judge the title's behaviour live (verdict lines in the log).")
@click.option("--quiet", "-q", is_flag=True, help="No live log line per exchange.")
@click.option("--confdir", metavar="DIR", default="",
              help="mitmproxy configuration directory (CA certificate; default ~/.mitmproxy). "
                   "Its config.yaml (and config.yml) is read as mitmdump reads it: options "
                   "there apply unless a flag or --set given here says otherwise.")
@click.option("--set", "sets", metavar="OPTION=VALUE", multiple=True,
              help="Set any mitmproxy or mpsdproxy option, as `mitmdump --set` does "
                   "(e.g. proxyauth=user:pass).")
def run(record: str, tags: tuple[str, ...], modes: tuple[str, ...], listen_host: str,
        allow_remote: bool,
        client_header: str, allow_clients: tuple[str, ...], client_cert_ca: str,
        listen_port: int,
        intercept_hosts: tuple[str, ...], upstream: str, redact: tuple[str, ...],
        no_redact: bool, scenarios: tuple[str, ...], replays: tuple[str, ...],
        exhausted: str, unmatched: str, pace: str, body_cap: str, limits: str,
        no_verdicts: bool,
        quiet: bool, confdir: str, sets: tuple[str, ...], **sweep: Any) -> None:
    """Run the proxy: classify, record, inject faults into and replay session traffic.

    \b
    Examples:
      mpsdproxy run --record recordings/playtest.jsonl
      mpsdproxy run --record nightly.jsonl --tag build=1234 --tag console=devkit-07
      mpsdproxy run --mode reverse:http://127.0.0.1:8081 --record run.jsonl
      mpsdproxy run --upstream http://127.0.0.1:8081   # a console against the stand-in
      mpsdproxy run --scenario scenarios/outage.yaml --record pass.jsonl
      mpsdproxy run --replay playtest.jsonl --unmatched emulate   # offline, no network
      mpsdproxy run --sweep --sweep-state qa-pass.json --record pass1.jsonl
      mpsdproxy run --mode reverse:http://127.0.0.1:8081@0.0.0.0:8080 --allow-remote \\
          --client-header X-Studio-Key=s3cret --allow-client 10.0.0.0/8
      mpsdproxy run --mode reverse:http://127.0.0.1:8081 --client-cert-ca studio-ca.pem
    """
    from mpsdproxy.addons import master as proxy

    modes = modes or ("regular",)
    conf = _mitm_config(proxy, confdir, sets)
    try:
        modes, listen_host, listen_port = conf.listening(
            modes, listen_host, listen_port, lambda m, e: bad_mode(m, e).message)
    except ValueError as e:
        raise BadInput(str(e)) from None
    for path in replays:
        safefiles.refuse_no_records(path)
    _refuse_shared_files(record, sweep.get("sweep_state") or "",
                         [*replays, *scenarios, limits, client_cert_ca])
    if upstream and any(m.startswith("reverse") for m in modes):
        raise click.BadParameter("reverse mode already names its upstream", param_hint="--upstream")
    for mode in modes:
        try:
            proxy.routing_options([mode], intercept_hosts or DEFAULT_INTERCEPT_HOSTS)
        except ValueError as e:
            raise bad_mode(mode, str(e)) from None
    routing = proxy.routing_options(modes, intercept_hosts or DEFAULT_INTERCEPT_HOSTS)
    settings: dict[str, Any] = {
        "mode": list(modes),
        "listen_host": listen_host,
        "listen_port": listen_port,
        "mpsd_record": record,
        "mpsd_upstream": upstream,
        "mpsd_redact": list(redact),
        "mpsd_no_redact": no_redact,
        "mpsd_quiet": quiet,
        "stream_large_bodies": body_cap,
        "mpsd_verdicts": not no_verdicts,
        "mpsd_limits": limits,
        **routing,
    }
    if intercept_hosts:
        settings["mpsd_intercept_hosts"] = list(intercept_hosts)
    if scenarios:
        settings["mpsd_scenario"] = list(scenarios)
    if replays:
        settings.update(mpsd_replay=list(replays), mpsd_replay_exhausted=exhausted,
                        mpsd_replay_unmatched=unmatched, mpsd_replay_pace=pace)
    if confdir:
        settings["confdir"] = confdir
    settings.update(sweep_settings(**sweep))
    if client_header:
        settings["mpsd_client_header"] = client_header
    if allow_clients:
        settings["mpsd_allow_client"] = list(allow_clients)
    if client_cert_ca:
        settings.update(mpsd_client_cert_ca=client_cert_ca, request_client_cert=True)
    if tags:
        from mpsdproxy import recording

        try:
            recording.parse_tags(tags)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--tag") from None
        settings["mpsd_tag"] = list(tags)
    check_remote(proxy.remote_points, modes, listen_host, listen_port, sets, allow_remote,
                 {k: conf.origin(k) for k in ("mode", "listen_host") if k in conf.entries})
    if not any(_sets_listening(pair) for pair in sets):
        for listen in listen_addresses(listen_host, listen_port, modes):
            refuse_unusable_listen(listen)
    if confdir:
        refuse_unusable_confdir(confdir)
    try:
        proxy.serve(settings, sets, config=conf.entries)
    except proxy.ProxyError as e:
        said = conf.explain(one_line(e))
        raise BadInput(said or user_words(one_line(e), typed_flags(settings, sets))) from None


def _refuse_shared_files(record: str, sweep_state: str, reads: Sequence[str]) -> None:
    """The recording and the sweep state are written: neither may be a file the run reads
    (a replay, a scenario, the limits, the CA), nor the other one (a saved sweep state
    would replace the recording whole)."""
    reads = [path for path in reads if path]
    safefiles.refuse_overwrite_of_inputs([record, sweep_state], reads)
    if record and sweep_state and safefiles.same_file(record, sweep_state):
        raise BadInput(f"{sweep_state}: --sweep-state and --record name one file; "
                       "give each its own")


def _mitm_config(proxy: Any, confdir: str, sets: Sequence[str]) -> Any:
    """mitmproxy's config.yaml as mitmdump reads it (`mitmconfig.for_run`), minus what a
    flag typed here or --set gives; one line naming file:line for a bad file."""
    ctx = click.get_current_context()
    by_flag = {opt: p.name for p in ctx.command.params for opt in p.opts if p.name}
    typed = {name for name, flag in FLAGS.items() if flag in by_flag and ctx.get_parameter_source(
        by_flag[flag]) in (click.core.ParameterSource.COMMANDLINE,
                           click.core.ParameterSource.ENVIRONMENT)}
    try:
        return proxy.read_config(confdir, sets, typed)
    except ValueError as e:
        raise BadInput(one_line(e)) from None


def sweep_settings(sweep: bool, sweep_state: str, sweep_only: tuple[str, ...],
                   sweep_again: tuple[str, ...], sweep_seed: int,
                   sweep_gap: str) -> dict[str, Any]:
    """The mpsd_sweep_* options the --sweep flags set (none without --sweep)."""
    if not sweep:
        return {}
    return {"mpsd_sweep": True, "mpsd_sweep_state": sweep_state,
            "mpsd_sweep_only": list(sweep_only), "mpsd_sweep_again": list(sweep_again),
            "mpsd_sweep_seed": sweep_seed,
            "mpsd_sweep_gap": sweep_gap}


def _set_values(sets: Sequence[str], name: str) -> list[str]:
    """The values `--set name=...` gave, in order."""
    return [v.strip() for n, _, v in (p.partition("=") for p in sets) if n.strip() == name]


def check_remote(points: Any, modes: Sequence[str], listen_host: str, listen_port: int,
                 sets: Sequence[str], allow_remote: bool,
                 origin: Mapping[str, str] | None = None) -> None:
    """Refuse (one line naming the address and --allow-remote) any listening address
    beyond loopback, however it was given; with --allow-remote say who can reach it.
    `points` is `master.remote_points` (mitmproxy's reading of the modes); `origin` names
    the config.yaml entry ("file:line: key") of a mode or host that came from there."""
    set_modes, set_hosts = _set_values(sets, "mode"), _set_values(sets, "listen_host")
    set_ports = [p for p in _set_values(sets, "listen_port") if p.isdigit()]
    host = set_hosts[-1] if set_hosts else listen_host
    port = int(set_ports[-1]) if set_ports else listen_port
    try:
        remote = points(set_modes or modes, host, port)
    except ValueError as e:
        raise BadInput(f"--set mode: {one_line(e)}") from None
    for point in remote:
        if not _resolves(point.host):
            continue  # refuse_unusable_listen (or mitmproxy) names the flag and the reason
        said = _said(point, bool(set_modes), set_hosts, origin or {})
        if not allow_remote:
            raise BadInput(f"{said}: the proxy would listen on {point.shown()}, beyond this "
                           "machine; add --allow-remote if anyone on that network may use it")
        click.secho(f"Reachable from other machines: {point.shown()} ({said}). Anyone on that "
                    "network can use the proxy; limit it with --allow-client CIDR and "
                    "--client-header NAME=VALUE (or --set proxyauth=USER:PASS).",
                    fg="yellow", err=True)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _said(point: Any, from_set: bool, set_hosts: Sequence[str],
          origin: Mapping[str, str]) -> str:
    """The flag (as typed), or the config.yaml entry, that put the proxy on `point`."""
    head, at, where = point.mode.rpartition("@")
    if at and where.rpartition(":")[0]:
        if from_set:
            return f"--set mode={point.mode}"
        return f"{origin['mode']}: {point.mode}" if "mode" in origin else f"--mode {point.mode}"
    if set_hosts:
        return f"--set listen_host={set_hosts[-1]}"
    if "listen_host" in origin:
        return f"{origin['listen_host']}: {point.host or repr(point.host)}"
    return f"--listen-host {point.host}"


def _sets_listening(pair: str) -> bool:
    """Whether `--set pair` changes where the proxy listens (then the flags do not say)."""
    return pair.partition("=")[0].strip() in ("listen_host", "listen_port", "mode")


@cli.command(context_settings=CONTEXT)
@click.option("--record", "record", metavar="FILE", default="",
              help="Where the recording goes (default: a new file under recordings/).")
def demo(record: str) -> None:
    """Start the stand-in and the proxy on free loopback ports, drive a scripted title
    through a session lifecycle that produces every row of the status table, and show
    the live log and where the recording went. Finishes in seconds.

    \b
    Example:
      mpsdproxy demo --record demo.jsonl
    """
    from mpsdproxy import demo as demo_module
    from mpsdproxy.addons import master as proxy

    try:
        sys.exit(demo_module.main(record or None))
    except (proxy.ProxyError, OSError) as e:
        raise click.ClickException(str(e)) from None


@cli.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check(files: tuple[str, ...]) -> None:
    """Validate scenario files against the schema and the status table.

    Prints one line per problem, `file:line:column: key.path: what is wrong`, and
    exits 1 when there is any. A rule that can never fire as the service would (its
    match only lets through requests the table says the service cannot give its
    status to, such as a 412 with the session to `If-Match: *`) is a warning
    (`warning: ` before the line; exit 0); in a scenario that says `strict: true` it
    is refused (exit 2). Exits 0 when every file is valid.

    \b
    Example:
      mpsdproxy check scenarios/*.yaml
    """
    from mpsdproxy import scenario

    problems = scenario.check(files)
    findings = scenario.lint(files)
    refused = {str(f) for f in findings if f.refused}
    for line in problems:
        click.echo(one_line(line))
    for finding in findings:
        if not finding.refused:
            click.echo(one_line(f"warning: {finding}"))
    if refused & set(problems):
        sys.exit(2)
    if problems:
        sys.exit(1)
    warned = f", {len(findings)} warning{'s' if len(findings) != 1 else ''}" if findings else ""
    click.echo(f"{len(files)} scenario file{'s' if len(files) != 1 else ''} valid{warned}")
