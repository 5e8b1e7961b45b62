"""The `mpsdproxy` command line: assembles addons and options, holds no logic of its own."""

from __future__ import annotations

import sys
from typing import Any

import click

from mpsdproxy.addons.router import DEFAULT_INTERCEPT_HOSTS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _validate_port(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 0 <= value <= 65535:
        raise click.BadParameter(f"should be in range [0, 65535], not {value}")
    return value


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="mpsdproxy")
def cli() -> None:
    """Record, replay and fault-inject Xbox Multiplayer Session Directory (MPSD) traffic.

    Start with `mpsdproxy demo`, then put a title behind `mpsdproxy run`.
    """


@cli.command(context_settings=CONTEXT)
@click.option("--record", "record", metavar="FILE", default="",
              help="Append every session-directory exchange to this JSON Lines recording.")
@click.option("--mode", "modes", metavar="MODE", multiple=True,
              help="A mitmproxy mode spec: regular (default), reverse:URL, upstream:URL, "
                   "wireguard, local, ... Repeat to listen in several modes at once.")
@click.option("--listen-host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --set proxyauth=USER:PASS.")
@click.option("--listen-port", default=8080, show_default=True, callback=_validate_port,
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
@click.option("--scenario", "scenarios", metavar="FILE", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Inject faults from this YAML scenario (repeatable). Checked before the "
                   "proxy listens; edits while it runs are reloaded.")
@click.option("--replay", "replays", metavar="FILE", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Answer from this recording instead of the service (repeatable).")
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
@click.option("--limits", metavar="FILE", default="", type=click.Path(dir_okay=False),
              help="YAML call-rate budgets and verdict thresholds, merged over the defaults.")
@click.option("--no-verdicts", is_flag=True,
              help="Do not judge the title's behaviour live (verdict lines in the log).")
@click.option("--quiet", "-q", is_flag=True, help="No live log line per exchange.")
@click.option("--confdir", metavar="DIR", default="",
              help="mitmproxy configuration directory (CA certificate); default ~/.mitmproxy.")
@click.option("--set", "sets", metavar="OPTION=VALUE", multiple=True,
              help="Set any mitmproxy or mpsdproxy option, as `mitmdump --set` does "
                   "(e.g. proxyauth=user:pass).")
def run(record: str, modes: tuple[str, ...], listen_host: str, listen_port: int,
        intercept_hosts: tuple[str, ...], upstream: str, redact: tuple[str, ...],
        no_redact: bool, scenarios: tuple[str, ...], replays: tuple[str, ...],
        exhausted: str, unmatched: str, pace: str, limits: str, no_verdicts: bool,
        quiet: bool, confdir: str, sets: tuple[str, ...]) -> None:
    """Run the proxy: classify, record (and later inject and replay) session traffic.

    \b
    Examples:
      mpsdproxy run --record recordings/playtest.jsonl
      mpsdproxy run --mode reverse:http://127.0.0.1:8081 --record run.jsonl
      mpsdproxy run --upstream http://127.0.0.1:8081   # a console against the stand-in
      mpsdproxy run --scenario scenarios/outage.yaml --record pass.jsonl
      mpsdproxy run --replay playtest.jsonl --unmatched emulate   # offline, no network
    """
    from mpsdproxy.addons import master as proxy

    modes = modes or ("regular",)
    if upstream and any(m.startswith("reverse") for m in modes):
        raise click.BadParameter("reverse mode already names its upstream", param_hint="--upstream")
    try:
        routing = proxy.routing_options(modes, intercept_hosts or DEFAULT_INTERCEPT_HOSTS)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--mode") from None
    settings: dict[str, Any] = {
        "mode": list(modes),
        "listen_host": listen_host,
        "listen_port": listen_port,
        "mpsd_record": record,
        "mpsd_upstream": upstream,
        "mpsd_redact": list(redact),
        "mpsd_no_redact": no_redact,
        "mpsd_quiet": quiet,
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
    if not proxy.is_loopback(listen_host):
        click.secho(
            f"Warning: listening on {listen_host} exposes the proxy beyond this machine. "
            "Protect it with --set proxyauth=USER:PASS (mitmproxy's proxyauth option).",
            fg="yellow", err=True,
        )
    try:
        proxy.serve(settings, sets)
    except proxy.ProxyError as e:
        raise click.ClickException(str(e)) from None


@cli.command(context_settings=CONTEXT)
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--listen-port", default=8081, show_default=True, callback=_validate_port,
              help="Port to listen on (0 picks a free one).")
@click.option("--config", "config", metavar="FILE", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="YAML file of SCIDs, templates, hoppers and limits (default: the shipped one).")
def emulate(listen_host: str, listen_port: int, config: str | None) -> None:
    """Run the local MPSD stand-in: every row of the status table, no network needed."""
    from mpsdproxy import emulator

    def ready(port: int) -> None:
        click.echo(f"MPSD stand-in listening on http://{listen_host}:{port}", err=True)

    try:
        emulator.run(listen_host, listen_port, config, ready=ready)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@cli.command(context_settings=CONTEXT)
@click.option("--record", "record", metavar="FILE", default="",
              help="Where the recording goes (default: a new file under recordings/).")
def demo(record: str) -> None:
    """Start the stand-in and the proxy on free loopback ports, drive a scripted title
    through a session lifecycle that produces every row of the status table, and show
    the live log and where the recording went. Finishes in seconds."""
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
    exits 1 when there is any; exits 0 when every file is valid.
    """
    from mpsdproxy import scenario

    problems = scenario.check(files)
    for line in problems:
        click.echo(line)
    if problems:
        sys.exit(1)
    click.echo(f"{len(files)} scenario file{'s' if len(files) != 1 else ''} valid")


@cli.command("report", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html", "junit"]),
              default="text", show_default=True,
              help="text for people, json for CI (stable, versioned), junit for CI test "
                   "views, html for one self-contained page.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout.")
@click.option("--fail-on", type=click.Choice(["fail", "anomaly"]), default=None,
              help="Exit 1 when a verdict failed (fail), or also on any anomaly (anomaly).")
@click.option("--limits", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML call-rate budgets and thresholds, merged over the defaults.")
def report_command(file: str, fmt: str, output: str | None, fail_on: str | None,
                   limits: str | None) -> None:
    """Summarise a recording and judge what the title did after each fault.

    Totals by status and table row, per resource and operation; injected vs organic
    vs replayed; anomalies; latency percentiles; verdicts (Retry-After honoured,
    backoff, 412 handled, 409 not blindly retried, polling, call-rate budgets, the
    Trace Analyzer's call-pattern rules); and which rows of the table the pass reached.
    """
    from mpsdproxy import report
    from mpsdproxy import verdicts

    try:
        budgets = verdicts.load_limits(limits) if limits else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--limits") from None
    try:
        built = report.build_report(file, budgets)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    text = report.render(built, fmt)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"Wrote the {fmt} report to {output}", err=True)
    else:
        click.echo(text, nl=False)
    sys.exit(report.exit_code(built, fail_on))


def _existing_file() -> click.Path:
    return click.Path(exists=True, dir_okay=False)


@cli.command(context_settings=CONTEXT)
@click.argument("old", type=_existing_file())
@click.argument("new", type=_existing_file())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Report format; the JSON form is stable.")
@click.option("--ignore", multiple=True, metavar="PATH",
              help="Also ignore this dotted field path (glob, repeatable), e.g. "
                   "'members.*.properties.custom' or 'header:x-custom'.")
@click.option("--no-default-ignores", is_flag=True,
              help="Compare the volatile fields too (correlationId, ETag, Date, ...).")
@click.option("--strict-timestamps", is_flag=True, help="Compare date-time values too.")
def diff(old: str, new: str, fmt: str, ignore: tuple[str, ...], no_default_ignores: bool,
         strict_timestamps: bool) -> None:
    """Pair the exchanges of two recordings and report what changed.

    Per pair: status, classification, new anomalies and changed JSON fields;
    plus exchanges only one side has. Exit 0 when nothing regressed, 1 otherwise.
    """
    from mpsdproxy import diff as diff_module

    patterns = (*(() if no_default_ignores else diff_module.DEFAULT_IGNORES), *ignore)
    try:
        result = diff_module.diff(old, new, patterns, ignore_timestamps=not strict_timestamps)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(result.to_json() if fmt == "json" else diff_module.render_text(result))
    sys.exit(diff_module.exit_code(result))


def _target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from mpsdproxy import resend as resend_module

    try:
        resend_module.parse_target(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return value


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=_existing_file())
@click.option("--to", "to_url", required=True, callback=_target, metavar="URL",
              help="Service to re-send to: http(s)://host[:port][/base], e.g. the stand-in.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None,
              help="Append the answers to this recording (then `mpsdproxy diff` it).")
@click.option("--rename", is_flag=True,
              help="Give every session a fresh unique name so runs do not collide.")
@click.option("--keep-host", is_flag=True, help="Send the recorded Host header, not the target's.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--insecure", is_flag=True, help="Do not verify the target's TLS certificate.")
def resend(file: str, to_url: str, record_path: str | None, rename: bool, keep_host: bool,
           timeout: float, insecure: bool) -> None:
    """Re-issue a recording's requests, in order, against a stand-in or test service.

    Redacted tokens are replaced by stand-in tokens derived from their hash, so
    distinct users stay distinct. Exit 1 when any request got no answer.
    """
    from mpsdproxy import resend as resend_module

    def show(outcome: resend_module.ResentExchange) -> None:
        answer = outcome.status if outcome.status is not None else f"failed: {outcome.error}"
        click.echo(f"#{outcome.record:<5} {outcome.method:<6} {outcome.url}  {answer}")

    try:
        result = resend_module.resend(file, to_url, record_path, rename, keep_host=keep_host,
                                      timeout=timeout, verify=not insecure, on_exchange=show)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    for issue in result.issues:
        click.secho(f"skipped {issue}", fg="yellow", err=True)
    click.echo(f"{result.sent} sent, {result.answered} answered, {result.failed} failed"
               + (f"; recorded to {record_path}" if record_path else ""))
    sys.exit(0 if result.ok else 1)


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=_existing_file())
@click.option("--format", "fmt", type=click.Choice(["har", "mitm", "saz"]), required=True,
              help="har (browser devtools, mitmweb), mitm (mitmproxy flows), saz (Fiddler, "
                   "the Xbox Live Trace Analyzer).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="File to write.")
def export(file: str, fmt: str, output: str) -> None:
    """Write a recording as HAR, a mitmproxy flow file, or a Fiddler SAZ archive."""
    from mpsdproxy import interchange
    from mpsdproxy.addons import flowfile

    try:
        result = interchange.export_file(file, output, fmt, flowfile.FORMATS)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    for line in (*map(str, result.issues), *result.skipped):
        click.secho(f"skipped {line}", fg="yellow", err=True)
    click.echo(f"Exported {result.count} exchanges to {output}")


@cli.command("import", context_settings=CONTEXT)
@click.argument("file", type=_existing_file())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Recording to append to.")
@click.option("--format", "fmt", type=click.Choice(["har", "mitm", "saz"]), default=None,
              help="Default: guessed from the file name.")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Keep only exchanges with this host (repeatable).")
@click.option("--redact", multiple=True, metavar="HEADER", help="More headers to redact.")
@click.option("--no-redact", is_flag=True, help="Keep secrets (private captures only).")
def import_(file: str, output: str, fmt: str | None, hosts: tuple[str, ...],
            redact: tuple[str, ...], no_redact: bool) -> None:
    """Turn a HAR, mitmproxy flow file (e.g. from `mitmdump -w`) or Fiddler SAZ capture
    into a classified, redacted recording."""
    from mpsdproxy import interchange
    from mpsdproxy import recording
    from mpsdproxy.addons import flowfile

    redactor = recording.Redactor((*recording.DEFAULT_REDACT, *redact), enabled=not no_redact)
    try:
        result = interchange.import_file(file, output, fmt, redactor=redactor,
                                         hosts=list(hosts) or None, formats=flowfile.FORMATS)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    for line in result.skipped:
        click.secho(f"skipped {line}", fg="yellow", err=True)
    click.echo(f"Imported {result.count} exchanges into {output}")


def main() -> None:
    cli(prog_name="mpsdproxy")


if __name__ == "__main__":
    main()
