"""The public 2016 capture's MPSD requests, re-sent in order to the stand-in, get the
statuses, changeNumbers and document shapes the service gave (read in place from
../shared/captures/; skipped when it is not there).

The stand-in's world is built from the capture at run time, nothing of it is kept
here: its SCID and templates are the ones the capture's paths name, and each
template's constants are the ones the service reported for the first session created
on it (templates are the title's configuration, not the stand-in's behaviour).
Values that belong to one run or one account are set aside (ids, times, ETags,
correlation ids, gamertags, device tokens, title configuration under `gameTypes`);
everything else is compared field by field: the keys and JSON types everywhere, and
the values of `changeNumber`, `membersInfo` and the status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_saz_frames import CAPTURE
from test_saz_frames import needs_capture

from mpsdproxy import diff
from mpsdproxy import emulator
from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy import resend
from mpsdproxy import resources
from mpsdproxy.emulator import world

MPSD_HOST = "sessiondirectory.xboxlive.com"
COMPARED_VALUES = ("changeNumber", "membersInfo")
OPAQUE = frozenset({"gameTypes"})  # the title's own configuration: an object, nothing more
#: A handshake answer's headers a resend never records: Fiddler's own counters, and the
#: accept key, which follows from each handshake's random key.
CAPTURE_ONLY_HEADERS = frozenset({"endtime", "receivedbytes", "sentbytes",
                                  "sec-websocket-accept"})


def _exchanges(path: Path) -> list[Any]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "request" in record:
            out.append(recording.to_exchange(record))
    return out


def _mpsd_only(path: Path, out: Path) -> None:
    """The recording with its MPSD calls only (its RTA websocket is no HTTP call to resend)."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "request" not in record and "seq" in record:
            continue
        if "request" in record and recording.to_exchange(record).request.host != MPSD_HOST:
            continue
        kept.append(line)
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _world(recorded: Path) -> emulator.EmulatorConfig:
    """The stand-in's world as `emulate --world-from` builds it: the capture's SCIDs and
    templates, each with the constants the service reported for its first session (and
    rate limits the capture's bursts stay under)."""
    limits = emulator.parse_config(json.dumps(
        {"version": 1, "rate_limit": {"burst": 1000, "sustained": 10000}}), "<limits>")
    return world.with_world_of(limits, world.world_of_files([recorded]))


def shape_differences(want: Any, got: Any, where: str = "") -> list[str]:
    """Where two documents differ in keys or JSON types, or in the compared values."""
    if isinstance(want, dict) and isinstance(got, dict):
        problems = [f"{where}.{key}: missing" for key in want if key not in got]
        problems += [f"{where}.{key}: not in the capture" for key in got if key not in want]
        for key in want.keys() & got.keys():
            here = f"{where}.{key}"
            if key in COMPARED_VALUES and want[key] != got[key]:
                problems.append(f"{here}: {want[key]!r} in the capture, {got[key]!r} here")
            elif key not in OPAQUE:
                problems += shape_differences(want[key], got[key], here)
        return problems
    if isinstance(want, list) and isinstance(got, list):
        if want and got:
            return shape_differences(want[0], got[0], f"{where}[0]")
        return [] if bool(want) == bool(got) else [f"{where}: {len(want)} items, {len(got)} here"]
    if type(want) is not type(got):
        return [f"{where}: {type(want).__name__} in the capture, {type(got).__name__} here"]
    return []


def test_the_capture_resent_to_the_stand_in_answers_as_the_service(tmp_path: Path) -> None:
    needs_capture()
    imported, original, again = (tmp_path / n for n in ("all.jsonl", "mpsd.jsonl", "re.jsonl"))
    interchange.import_file(str(CAPTURE), str(imported))
    _mpsd_only(imported, original)
    before = _exchanges(original)
    assert len(before) == 10  # the capture's MPSD calls
    with emulator.running(_world(original)) as (_, port):
        result = resend.resend(str(original), f"http://127.0.0.1:{port}", str(again),
                               rename=True)
    after = _exchanges(again)
    assert result.failed == 0 and len(after) == len(before)
    differences = []
    for number, (old, new) in enumerate(zip(before, after, strict=True), start=1):
        call = f"#{number} {old.request.method} {resources.parse(old.request.path).kind.value}"
        if old.response.status != new.response.status:
            differences.append(f"{call}: status {old.response.status} in the capture, "
                               f"{new.response.status} here")
            continue
        want = old.response.json
        got = new.response.json
        differences += [f"{call}: {d}" for d in shape_differences(want, got)]
    assert differences == []


def test_every_websocket_of_the_capture_opens_on_the_stand_in(tmp_path: Path) -> None:
    """The console's three RTA websockets, the two privacy ones on the older subprotocol
    `rta.xboxlive.com`, each opened by the service (101): the stand-in opens them too."""
    needs_capture()
    imported, again = tmp_path / "all.jsonl", tmp_path / "re.jsonl"
    interchange.import_file(str(CAPTURE), str(imported))
    handshakes = [e for e in _exchanges(imported) if e.request.path == "/connect"]
    assert [e.response.status for e in handshakes] == [101, 101, 101]
    with emulator.running() as (_, port):
        resend.resend(str(imported), f"http://127.0.0.1:{port}", str(again))
    answers = [e for e in _exchanges(again) if e.request.path == "/connect"]
    assert [(e.response.status, e.response.headers.first("Sec-WebSocket-Protocol"))
            for e in answers] == [
        (101, e.request.headers.first("Sec-WebSocket-Protocol")) for e in handshakes]
    # and with the headers the service put on each: the same names, none missing
    service_names = {name.lower() for e in handshakes for name, _ in e.response.headers}
    for e in answers:
        names = {name.lower() for name, _ in e.response.headers}
        assert service_names - names <= CAPTURE_ONLY_HEADERS, service_names - names


def test_the_whole_capture_resent_to_its_world_diffs_as_the_service(tmp_path: Path) -> None:
    """`emulate --world-from` and `resend --rename` on the whole capture (RTA included):
    `diff` finds nothing but the handle's store package name, which is the title's
    configuration and nowhere in the capture's calls for the stand-in to learn."""
    needs_capture()
    imported, again = tmp_path / "all.jsonl", tmp_path / "re.jsonl"
    interchange.import_file(str(CAPTURE), str(imported))
    with emulator.running(_world(imported)) as (_, port):
        result = resend.resend(str(imported), f"http://127.0.0.1:{port}", str(again),
                               rename=True)
    assert result.failed == 0
    compared = diff.diff(str(imported), str(again))
    assert not (compared.unpaired_old or compared.unpaired_new or compared.issues)
    changes = [(change.new.label, field.path) for change in compared.changes
               for field in change.fields]
    assert all(change.fields and not (change.status_changed or change.new_anomalies)
               for change in compared.changes)
    assert {path for _, path in changes} <= {"gameTypes.uwp-desktop.pfn"}, changes
