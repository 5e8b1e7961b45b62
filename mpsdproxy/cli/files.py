"""The commands over files: report, diff, resend, export, import and scan."""

from __future__ import annotations

import os
import sys

import click

from mpsdproxy import safefiles
from mpsdproxy.cli.base import CONTEXT
from mpsdproxy.cli.base import QUIET
from mpsdproxy.cli.base import BadInput
from mpsdproxy.cli.base import FormatChoice
from mpsdproxy.cli.base import InputFile
from mpsdproxy.cli.base import Progress
from mpsdproxy.cli.base import about
from mpsdproxy.cli.base import cli
from mpsdproxy.cli.base import emit
from mpsdproxy.cli.base import one_line
from mpsdproxy.cli.base import skip_lines
from mpsdproxy.cli.fleet import ExportFormat
from mpsdproxy.cli.fleet import export_parquet


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
@click.option("--matrix", is_flag=True,
              help="The fault sweep's matrix (operation x fault: recovered, not recovered, "
                   "not reachable, not exercised) of a `run --sweep` recording; --fail-on "
                   "fail exits 1 on a cell not recovered.")
@click.option("--also", "also", metavar="FILE", multiple=True, type=InputFile(),
              help="With --matrix: another recording of the same pass (repeatable).")
@QUIET
def report_command(file: str, fmt: str, output: str | None, fail_on: str | None,
                   limits: str | None, quiet: bool, **matrix: object) -> None:
    """Summarise a recording and judge what the title did after each fault.

    Totals by status and table row, per resource and operation; injected vs organic
    vs replayed; anomalies; latency percentiles; verdicts (Retry-After honoured,
    backoff, 412 handled, 409 not blindly retried, polling, call-rate budgets, the
    Trace Analyzer's call-pattern rules); and which rows of the table the pass reached.

    The first report on a recording without stored verdicts judges it and stores them
    beside it (RECORDING.verdicts); a later report on the unchanged recording reads them
    and lets DuckDB do the counting (the same report, in seconds on a million exchanges).

    Exit 0 pass, 1 a finding under --fail-on, 2 bad input: an empty file, a file
    that is not a recording, or one with more than 10% of its lines unreadable.

    \b
    Example:
      mpsdproxy report pass.jsonl --fail-on fail --format junit -o report.xml
      mpsdproxy report pass1.jsonl --also pass2.jsonl --matrix --format html -o matrix.html
    """
    if matrix["matrix"]:
        _matrix(file, matrix["also"], fmt, output, fail_on)  # type: ignore[arg-type]
    from mpsdproxy import report
    from mpsdproxy import verdicts

    safefiles.refuse_overwrite_of_inputs([output], [file, *([limits] if limits else [])])
    try:
        budgets = verdicts.load_limits(limits) if limits else None
    except ValueError as e:
        raise BadInput(about(limits or "", e)) from None
    safefiles.refuse_empty(file)
    from mpsdproxy.fleet import stored

    try:
        with Progress("report", "lines read", quiet) as progress:
            built, sidecar = stored.report_storing(file, budgets, progress=progress)
    except (OSError, ValueError) as e:
        raise BadInput(about(file, e)) from None
    cut = sum(1 for _, problem in built.skipped if problem.startswith("truncated"))
    try:
        safefiles.refuse_unreadable(file, built.exchanges, built.skipped_total - cut,
                                    built.skipped[0] if built.skipped else None)
    except BaseException:
        sidecar.discard()  # not a recording: no verdicts stored beside it
        raise
    sidecar.publish()  # the verdicts it judged, for the fleet (fleet/stored.py)
    emit(report.render(built, fmt, fail_on=fail_on), output, f"the {fmt} report")
    sys.exit(report.exit_code(built, fail_on))



def _matrix(file: str, also: tuple[str, ...], fmt: str, output: str | None,
            fail_on: str | None) -> None:
    """`report --matrix`: the sweep matrix of one or more recordings, then exit."""
    from mpsdproxy.report import matrix

    sources = [file, *also]
    safefiles.refuse_overwrite_of_inputs([output], sources)
    for path in sources:
        safefiles.refuse_unreadable_recording(path)
    try:
        built = matrix.build_matrix(sources)
    except (OSError, ValueError) as e:
        raise BadInput(about(file, e)) from None
    if fmt == "html":
        from mpsdproxy.report import matrix_html

        text = matrix_html.render_html(built)
    else:
        text = matrix.render_matrix(built, fmt)
    emit(text, output, f"the {fmt} matrix")
    sys.exit(matrix.exit_code(built, fail_on))

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
        raise BadInput(one_line(e)) from None
    sides = ((old, result.pairs + len(result.unpaired_old)),
             (new, result.pairs + len(result.unpaired_new)))
    for path, records in sides:
        # By line: a recording diffed with itself has each bad line reported by both sides.
        bad = list({i.line: i for i in result.issues
                    if i.path == str(path) and not i.truncated}.values())
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
@click.option("--max-failures", type=click.IntRange(min=0), default=3, show_default=True,
              metavar="N",
              help="Stop after N requests in a row that could not reach the target "
                   "(0: never stop).")
@QUIET
def resend(file: str, to_url: str, record_path: str | None, rename: bool, keep_host: bool,
           timeout: float, insecure: bool, max_failures: int, quiet: bool) -> None:
    """Re-issue a recording's requests, in order, against a stand-in or test service.

    Redacted tokens are replaced by stand-in tokens derived from their hash, so
    distinct users stay distinct. A websocket (the RTA's) is opened again, the title's
    messages go on it in their places, and what the target sends on it is recorded. A
    target that cannot be reached stops it after --max-failures requests in a row. Exit 1 when
    any request got no answer, 2 for a file that is not a recording (empty, or over 10 %
    unreadable lines) or a --record that is the recording itself.

    \b
    Example:
      mpsdproxy resend pass.jsonl --to http://127.0.0.1:8081 --record again.jsonl
    """
    from mpsdproxy import resend as resend_module

    safefiles.refuse_overwrite_of_inputs([record_path], [file])
    if record_path:
        safefiles.refuse_not_regular(record_path, "recording")  # a FIFO would hang it
    safefiles.refuse_unreadable_recording(file)  # before a request is sent

    progress = Progress("resend", "sent", quiet)

    def show(outcome: resend_module.ResentExchange) -> None:
        answer = outcome.status if outcome.status is not None else f"failed: {outcome.error}"
        progress.clear()
        click.echo(one_line(f"#{outcome.record:<5} {outcome.method:<6} {outcome.url}  {answer}"))
        progress(progress.count + 1)

    try:
        with progress:
            result = resend_module.resend(
                file, to_url, record_path, rename, keep_host=keep_host, timeout=timeout,
                verify=not insecure, on_exchange=show, max_failures=max_failures)
    except (OSError, ValueError) as e:
        raise BadInput(about(file, e)) from None
    for line in skip_lines(map(str, result.issues)):
        click.secho(line, fg="yellow", err=True)
    if result.stopped:
        click.secho(one_line(f"Error: {result.stopped}"), fg="red", err=True)
    click.echo(f"{result.sent} sent, {result.answered} answered, {result.failed} failed"
               + (f", {result.messages} websocket message(s)" if result.messages else "")
               + (f"; recorded to {record_path}" if record_path else ""))
    sys.exit(0 if result.ok else 1)


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=InputFile())
@click.option("--format", "fmt", type=ExportFormat(), required=True,
              help="har (browser devtools, mitmweb), mitm (mitmproxy flows), saz (Fiddler, "
                   "the Xbox Live Trace Analyzer), csv (the Trace Analyzer's CSV trace), "
                   "parquet (the fleet's versioned table, with the stored verdicts).")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="File to write (whole or not at all; never the recording itself); a "
                   "folder with --format parquet --partition.")
@click.option("--no-redact", is_flag=True,
              help="Keep what the recording holds as it is (a private recording made with "
                   "--no-redact keeps its secrets: never share the export).")
@click.option("--partition", metavar="TAGS", default=None,
              help="parquet: a Hive-partitioned folder by these tags (e.g. build,date), added "
                   "to if it exists, instead of one file.")
@QUIET
def export(file: str, fmt: str, output: str, no_redact: bool, partition: str | None,
           quiet: bool) -> None:
    """Write a recording as HAR, a mitmproxy flow file, a Fiddler SAZ archive or the
    Trace Analyzer's CSV trace. Credentials are redacted on the way out, whatever the
    recording holds.

    \b
    Examples:
      mpsdproxy export pass.jsonl --format saz -o pass.saz
      mpsdproxy export pass.jsonl --format parquet -o archive/ --partition build,date
    """
    if fmt == "parquet":
        safefiles.refuse_empty(file)
        rows = export_parquet([file], output, partition)
        click.echo(f"Exported {rows} rows to {output}", err=True)
        return
    if partition is not None:
        raise click.BadParameter("only with --format parquet", param_hint="--partition")
    if os.path.isdir(output):
        raise BadInput(f"{output}: is a folder, not a file")
    from mpsdproxy import interchange
    from mpsdproxy import recording
    from mpsdproxy.addons import flowfile

    safefiles.refuse_overwrite_of_inputs([output], [file])
    try:
        with Progress("export", "records written", quiet) as progress:
            result = interchange.export_file(file, output, fmt, flowfile.FORMATS,
                                             recording.Redactor(enabled=not no_redact),
                                             progress=progress)
    except (OSError, ValueError) as e:
        raise BadInput(about(file, e)) from None
    for line in skip_lines((*map(str, result.issues), *result.skipped)):
        click.secho(line, fg="yellow", err=True)
    click.echo(f"Exported {result.count} exchanges to {output}", err=True)  # stdout: the export


@cli.command("import", context_settings=CONTEXT)
@click.argument("file", type=InputFile())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Recording to write; an existing one only with --append.")
@click.option("--append", is_flag=True, help="Add to an existing recording.")
@click.option("--format", "fmt", type=FormatChoice(), default=None,
              help="Default: guessed from the file.")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Keep this host too (repeatable), beyond the default: the session "
                   "directory, matchmaking and RTA hosts, and on any host MPSD calls and "
                   "the RTA websocket.")
@click.option("--all-hosts", is_flag=True, help="Keep the exchanges of every host.")
@click.option("--process", "processes", multiple=True, metavar="NAME",
              help="SAZ: keep only the exchanges of this process (Fiddler's process "
                   "column, e.g. the title's executable; repeatable).")
@click.option("--max-body", type=click.IntRange(min=1), default=None, metavar="BYTES",
              help="Store a larger body truncated, with a line saying so (default 64 MiB).")
@click.option("--redact", multiple=True, metavar="HEADER", help="More headers to redact.")
@click.option("--no-redact", is_flag=True, help="Keep secrets (private captures only).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Run metadata for the recording's header (repeatable), e.g. build=1234.")
@QUIET
def import_(file: str, output: str, append: bool, fmt: str | None, hosts: tuple[str, ...],
            all_hosts: bool, processes: tuple[str, ...], max_body: int | None,
            redact: tuple[str, ...], no_redact: bool, tags: tuple[str, ...],
            quiet: bool) -> None:
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
    try:
        run_tags = recording.parse_tags(tags)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--tag") from None
    redactor = recording.Redactor((*recording.DEFAULT_REDACT, *redact), enabled=not no_redact)
    try:
        with Progress("import", "items read", quiet) as progress:
            result = interchange.import_file(
                file, output, fmt, redactor=redactor, hosts=list(hosts) or None,
                all_hosts=all_hosts, processes=list(processes) or None, append=append,
                formats=flowfile.FORMATS, max_body=max_body or interchange.MAX_BODY,
                progress=progress)
    except (OSError, ValueError) as e:  # the output is the input, exists, or bad input
        raise BadInput(about(file, e)) from None
    for line in skip_lines(result.skipped):
        click.secho(line, fg="yellow", err=True)
    if run_tags:
        try:  # the import wrote a plain header: the tags go into it afterwards
            recording.set_tags(output, run_tags)
        except OSError as e:
            raise BadInput(about(output, e)) from None
    click.echo(one_line(f"Imported into {output}: {result.summary()}"))


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
            click.echo(f"Error: {about(path, e)}", err=True)
            unreadable += 1
            continue
        for finding in findings:
            click.echo(one_line(str(finding)))
        found += len(findings)
    if unreadable:
        sys.exit(2)
    if found:
        sys.exit(1)
    click.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} scanned: "
               "nothing credential-shaped found")

