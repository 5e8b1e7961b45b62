"""`mpsdproxy conformance`: the client library's calls against any target."""

from __future__ import annotations

import os
import sys

import click

from mpsdproxy.cli.base import CONTEXT
from mpsdproxy.cli.base import BadInput
from mpsdproxy.cli.base import cli


@cli.command(context_settings=CONTEXT)
@click.option("--target", required=True, metavar="URL", help="Where to send the calls.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              help="The report as text (default) or JSON.")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
              help="scid, lobby_template, game_template, large_template, hopper, host_xuid, "
                   "guest_xuid, reserved_xuid or title_id (defaults: the stand-in's).")
def conformance(target: str, fmt: str, pairs: tuple[str, ...]) -> None:
    """Send the client library's multiplayer calls (from its unit tests) to URL and check
    each answer's shape: as the service, or differing (which field, what was expected).
    Exit 0 when all answer as the service, 1 when some differ, 2 for a bad URL or no answer.

    \b
    Example:
      mpsdproxy conformance --target http://127.0.0.1:8080 --format json
    """
    from mpsdproxy import conformance as suite

    try:  # a fresh suffix per run keeps its session names apart from earlier runs'
        report = suite.run_target(target, suite.setup_of(pairs, os.urandom(4).hex()))
    except suite.ConformanceError as e:
        raise BadInput(str(e)) from None
    click.echo(suite.render(report, fmt))
    sys.exit(0 if report.all_as_the_service else 1)
