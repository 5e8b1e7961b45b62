"""The `mpsdproxy` command line: assembles addons and options, holds no logic of its own.

Exit codes, the same for every command, so a CI gate can trust them:

- 0: pass;
- 1: a finding (a failed verdict under `--fail-on`, a regression, a credential
  found by `scan`, a request that got no answer);
- 2: bad input: a missing, empty or unreadable file, a file that is not a
  recording, a recording with more than `safefiles.UNREADABLE_LIMIT` (10%) of its lines
  unreadable (a cut last line, what a stopped proxy leaves, aside), an output
  that is one of the inputs, bad options. Always one line naming the file,
  never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from mpsdproxy import safefiles
from mpsdproxy.addons.router import DEFAULT_INTERCEPT_HOSTS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

class BadInput(click.ClickException):
    """Bad input: exit 2 with one line naming the file."""

    exit_code = 2


class InputFile(click.ParamType):
    """An existing file; a missing one is bad input in one line (click's own check
    prints the usage text too)."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        path = os.fspath(value)
        if not os.path.exists(path):
            raise BadInput(f"{path}: no such file")
        if os.path.isdir(path):
            raise BadInput(f"{path}: is a folder, not a file")
        return path


class FormatChoice(click.Choice):
    """The interchange formats (`flowfile.FORMATS`), listed only when asked: the list
    includes mitmproxy's flow files, and loading it is not free."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        from mpsdproxy.addons import flowfile

        return tuple(flowfile.FORMATS)


def _one_line(error: BaseException | str) -> str:
    """An error as one printable line (several problems are joined with '; ')."""
    from mpsdproxy import model

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return model.printable("; ".join(lines) or type(error).__name__)


def _about(path: str, error: BaseException) -> str:
    """`error` as one line that names `path` (once)."""
    text = _one_line(error)
    return text if path in text else f"{path}: {text}"


def _validate_port(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 0 <= value <= 65535:
        raise click.BadParameter(f"should be in range [0, 65535], not {value}")
    return value


class Commands(click.Group):
    """The command group: a file a command refuses (safefiles.BadFile) is bad input."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except safefiles.BadFile as e:
            raise BadInput(_one_line(e)) from None


@click.group(cls=Commands, context_settings=CONTEXT)
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
    for path in replays:
        safefiles.refuse_no_records(path)
    safefiles.refuse_overwrite_of_inputs([record], replays)
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
        raise BadInput(_one_line(e)) from None


@cli.command(context_settings=CONTEXT)
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--listen-port", default=8081, show_default=True, callback=_validate_port,
              help="Port to listen on (0 picks a free one).")
@click.option("--config", "config", metavar="FILE", default=None,
              type=InputFile(),
              help="YAML file of SCIDs, templates, hoppers and limits (default: the shipped one).")
def emulate(listen_host: str, listen_port: int, config: str | None) -> None:
    """Run the local MPSD stand-in: every row of the status table, no network needed.

    \b
    Example:
      mpsdproxy emulate --listen-port 8081
    """
    from mpsdproxy import emulator

    def ready(port: int) -> None:
        click.echo(f"MPSD stand-in listening on http://{listen_host}:{port}", err=True)

    try:
        emulator.run(listen_host, listen_port, config, ready=ready)
    except (OSError, ValueError) as e:
        raise BadInput(_one_line(e)) from None


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
        click.echo(line)
    for finding in findings:
        if not finding.refused:
            click.echo(f"warning: {finding}")
    if refused & set(problems):
        sys.exit(2)
    if problems:
        sys.exit(1)
    warned = f", {len(findings)} warning{'s' if len(findings) != 1 else ''}" if findings else ""
    click.echo(f"{len(files)} scenario file{'s' if len(files) != 1 else ''} valid{warned}")


@cli.command("report", context_settings=CONTEXT)
@click.argument("file", type=InputFile())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html", "junit"]),
              default="text", show_default=True,
              help="text for people, json for CI (stable, versioned), junit for CI test "
                   "views, html for one self-contained page.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout (whole or not at all; never the input).")
@click.option("--fail-on", type=click.Choice(["fail", "anomaly"]), default=None,
              help="Exit 1 when a verdict failed (fail), or also on any anomaly (anomaly).")
@click.option("--limits", type=InputFile(), default=None,
              help="YAML call-rate budgets and thresholds, merged over the defaults.")
def report_command(file: str, fmt: str, output: str | None, fail_on: str | None,
                   limits: str | None) -> None:
    """Summarise a recording and judge what the title did after each fault.

    Totals by status and table row, per resource and operation; injected vs organic
    vs replayed; anomalies; latency percentiles; verdicts (Retry-After honoured,
    backoff, 412 handled, 409 not blindly retried, polling, call-rate budgets, the
    Trace Analyzer's call-pattern rules); and which rows of the table the pass reached.

    Exit 0 pass, 1 a finding under --fail-on, 2 bad input: an empty file, a file
    that is not a recording, or one with more than 10% of its lines unreadable.

    \b
    Example:
      mpsdproxy report pass.jsonl --fail-on fail --format junit -o report.xml
    """
    from mpsdproxy import report
    from mpsdproxy import verdicts

    safefiles.refuse_overwrite_of_inputs([output], [file, *([limits] if limits else [])])
    try:
        budgets = verdicts.load_limits(limits) if limits else None
    except ValueError as e:
        raise BadInput(_about(limits or "", e)) from None
    safefiles.refuse_empty(file)
    try:
        built = report.build_report(file, budgets)
    except (OSError, ValueError) as e:
        raise BadInput(_about(file, e)) from None
    cut = sum(1 for _, problem in built.skipped if problem.startswith("truncated"))
    safefiles.refuse_unreadable(file, built.exchanges, built.skipped_total - cut,
                                built.skipped[0] if built.skipped else None)
    text = report.render(built, fmt)
    if output:
        try:
            with safefiles.atomic_output(output, "w") as f:
                f.write(text)
        except OSError as e:
            raise BadInput(_about(output, e)) from None
        click.echo(f"Wrote the {fmt} report to {output}", err=True)
    else:
        click.echo(text, nl=False)
    sys.exit(report.exit_code(built, fail_on))


@cli.command(context_settings=CONTEXT)
@click.argument("old", type=InputFile())
@click.argument("new", type=InputFile())
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
    plus exchanges only one side has. Exit 0 when nothing regressed, 1 otherwise,
    2 when either file is empty, not a recording, or mostly unreadable.

    \b
    Example:
      mpsdproxy diff baseline.jsonl candidate.jsonl --ignore 'members.*.properties.custom'
    """
    from mpsdproxy import diff as diff_module

    safefiles.refuse_empty(old)
    safefiles.refuse_empty(new)
    patterns = (*(() if no_default_ignores else diff_module.DEFAULT_IGNORES), *ignore)
    try:
        result = diff_module.diff(old, new, patterns, ignore_timestamps=not strict_timestamps)
    except (OSError, ValueError) as e:
        raise BadInput(_one_line(e)) from None
    sides = ((old, result.pairs + len(result.unpaired_old)),
             (new, result.pairs + len(result.unpaired_new)))
    for path, records in sides:
        bad = [i for i in result.issues if i.path == str(path) and not i.truncated]
        first = (bad[0].line, bad[0].problem) if bad else None
        safefiles.refuse_unreadable(path, records, len(bad), first)
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
@click.argument("file", type=InputFile())
@click.option("--to", "to_url", required=True, callback=_target, metavar="URL",
              help="Service to re-send to: http(s)://host[:port][/base], e.g. the stand-in.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None,
              help="Append the answers to this recording (then `mpsdproxy diff` it); "
                   "never the recording being re-sent.")
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
    distinct users stay distinct. Exit 1 when any request got no answer, 2 for an
    empty recording or a --record that is the recording itself.

    \b
    Example:
      mpsdproxy resend pass.jsonl --to http://127.0.0.1:8081 --record again.jsonl
    """
    from mpsdproxy import resend as resend_module

    safefiles.refuse_overwrite_of_inputs([record_path], [file])
    safefiles.refuse_empty(file)

    def show(outcome: resend_module.ResentExchange) -> None:
        answer = outcome.status if outcome.status is not None else f"failed: {outcome.error}"
        click.echo(f"#{outcome.record:<5} {outcome.method:<6} {outcome.url}  {answer}")

    try:
        result = resend_module.resend(file, to_url, record_path, rename, keep_host=keep_host,
                                      timeout=timeout, verify=not insecure, on_exchange=show)
    except (OSError, ValueError) as e:
        raise BadInput(_about(file, e)) from None
    for issue in result.issues:
        click.secho(f"skipped {issue}", fg="yellow", err=True)
    click.echo(f"{result.sent} sent, {result.answered} answered, {result.failed} failed"
               + (f"; recorded to {record_path}" if record_path else ""))
    sys.exit(0 if result.ok else 1)


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=InputFile())
@click.option("--format", "fmt", type=FormatChoice(), required=True,
              help="har (browser devtools, mitmweb), mitm (mitmproxy flows), saz (Fiddler, "
                   "the Xbox Live Trace Analyzer), csv (the Trace Analyzer's CSV trace).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="File to write (whole or not at all; never the recording itself).")
@click.option("--no-redact", is_flag=True,
              help="Keep what the recording holds as it is (a private recording made with "
                   "--no-redact keeps its secrets: never share the export).")
def export(file: str, fmt: str, output: str, no_redact: bool) -> None:
    """Write a recording as HAR, a mitmproxy flow file, a Fiddler SAZ archive or the
    Trace Analyzer's CSV trace. Credentials are redacted on the way out, whatever the
    recording holds.

    \b
    Example:
      mpsdproxy export pass.jsonl --format saz -o pass.saz
    """
    from mpsdproxy import interchange
    from mpsdproxy import recording
    from mpsdproxy.addons import flowfile

    safefiles.refuse_overwrite_of_inputs([output], [file])
    safefiles.refuse_empty(file)
    try:
        result = interchange.export_file(file, output, fmt, flowfile.FORMATS,
                                         recording.Redactor(enabled=not no_redact))
    except (OSError, ValueError) as e:
        raise BadInput(_about(file, e)) from None
    for line in (*map(str, result.issues), *result.skipped):
        click.secho(f"skipped {line}", fg="yellow", err=True)
    click.echo(f"Exported {result.count} exchanges to {output}")


@cli.command("import", context_settings=CONTEXT)
@click.argument("file", type=InputFile())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Recording to write; an existing one only with --append.")
@click.option("--append", is_flag=True, help="Add to an existing recording.")
@click.option("--format", "fmt", type=FormatChoice(), default=None,
              help="Default: guessed from the file.")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Keep this host too (repeatable), beyond the default: the session "
                   "directory, matchmaking and RTA hosts.")
@click.option("--all-hosts", is_flag=True, help="Keep the exchanges of every host.")
@click.option("--process", "processes", multiple=True, metavar="NAME",
              help="SAZ: keep only the exchanges of this process (Fiddler's process "
                   "column, e.g. the title's executable; repeatable).")
@click.option("--max-body", type=click.IntRange(min=1), default=None, metavar="BYTES",
              help="Store a larger body truncated, with a line saying so (default 64 MiB).")
@click.option("--redact", multiple=True, metavar="HEADER", help="More headers to redact.")
@click.option("--no-redact", is_flag=True, help="Keep secrets (private captures only).")
def import_(file: str, output: str, append: bool, fmt: str | None, hosts: tuple[str, ...],
            all_hosts: bool, processes: tuple[str, ...], max_body: int | None,
            redact: tuple[str, ...], no_redact: bool) -> None:
    """Turn a HAR, mitmproxy flow file (e.g. from `mitmdump -w`), Fiddler SAZ capture or
    Trace Analyzer CSV trace into a classified, redacted recording of the session
    traffic. The summary line says what was kept and dropped, by host.

    \b
    Example:
      mpsdproxy import capture.saz -o capture.jsonl --process MyTitle.exe
    """
    from mpsdproxy import interchange
    from mpsdproxy import recording
    from mpsdproxy.addons import flowfile

    safefiles.refuse_empty(file, "capture")
    if not append and os.path.exists(output) and not safefiles.same_file(output, file):
        raise BadInput(f"{output}: already exists; add --append to add to it, or choose "
                       "another output")
    redactor = recording.Redactor((*recording.DEFAULT_REDACT, *redact), enabled=not no_redact)
    try:
        result = interchange.import_file(
            file, output, fmt, redactor=redactor, hosts=list(hosts) or None,
            all_hosts=all_hosts, processes=list(processes) or None, append=append,
            formats=flowfile.FORMATS, max_body=max_body or interchange.MAX_BODY)
    except (OSError, ValueError) as e:  # the output is the input, exists, or bad input
        raise BadInput(_about(file, e)) from None
    for line in result.skipped:
        click.secho(f"skipped {line}", fg="yellow", err=True)
    click.echo(f"Imported into {output}: {result.summary()}")


@cli.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def scan(files: tuple[str, ...]) -> None:
    """List anything credential-shaped left in recordings and exports (JSONL, HAR,
    SAZ, CSV): one line per finding, `file:where: kind: excerpt` (the excerpt never
    shows the secret). Exit 0 when nothing is found, 1 when anything is, 2 when a
    file cannot be read.

    \b
    Example:
      mpsdproxy scan pass.jsonl pass.har pass.saz
    """
    from mpsdproxy import scan as scan_module

    found = unreadable = 0
    for path in files:
        try:
            findings = scan_module.scan_file(path)
        except (OSError, ValueError) as e:
            click.echo(f"Error: {_about(path, e)}", err=True)
            unreadable += 1
            continue
        for finding in findings:
            click.echo(_one_line(f"{finding.path}:{finding.where}: {finding.kind}: "
                                 f"{finding.excerpt}"))
        found += len(findings)
    if unreadable:
        sys.exit(2)
    if found:
        sys.exit(1)
    click.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} scanned: "
               "nothing credential-shaped found")


def main() -> None:
    cli(prog_name="mpsdproxy")


if __name__ == "__main__":
    main()
