"""The real 2016 capture through a mitmproxy flow file and back: every body and
Content-Length as Fiddler saw them (read in place from ../shared/captures/)."""

from __future__ import annotations

from pathlib import Path

from test_saz_frames import CAPTURE
from test_saz_frames import body_and_length
from test_saz_frames import needs_capture
from test_saz_frames import wire_sessions

from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy.addons import flowfile


def test_a_flow_file_round_trip_keeps_bodies_and_lengths(tmp_path: Path) -> None:
    needs_capture()
    plain = recording.Redactor(enabled=False)  # redaction would change the bodies
    first, flows, back, saz = (tmp_path / n for n in ("a.jsonl", "a.mitm", "b.jsonl", "b.saz"))
    interchange.import_file(str(CAPTURE), str(first), all_hosts=True, redactor=plain,
                            formats=flowfile.FORMATS)
    interchange.export_file(str(first), str(flows), "mitm", formats=flowfile.FORMATS,
                            redactor=plain)
    interchange.import_file(str(flows), str(back), all_hosts=True, redactor=plain,
                            formats=flowfile.FORMATS)
    interchange.export_file(str(back), str(saz), "saz", formats=flowfile.FORMATS,
                            redactor=plain)
    before, after = wire_sessions(CAPTURE), wire_sessions(saz)
    assert len(before) == len(after) == 66
    for number, (old, new) in enumerate(zip(before, after, strict=True), start=1):
        for part in (0, 1):
            if old[part]:
                assert body_and_length(new[part]) == body_and_length(old[part]), number


def test_every_export_and_report_of_the_capture_scans_clean(tmp_path: Path) -> None:
    from mpsdproxy import report
    from mpsdproxy import scan

    needs_capture()
    rec = tmp_path / "x49.jsonl"
    interchange.import_file(str(CAPTURE), str(rec), formats=flowfile.FORMATS)
    written = [rec]
    for fmt in flowfile.FORMATS:
        out = tmp_path / f"x49.{fmt}"
        interchange.export_file(str(rec), str(out), fmt, formats=flowfile.FORMATS)
        written.append(out)
    built = report.build_report(str(rec))
    for fmt in report.FORMATS:
        out = tmp_path / f"report.{fmt}"
        out.write_text(report.render(built, fmt), encoding="utf-8")
        written.append(out)
    found = {str(path): scan.scan_file(str(path)) for path in written}
    assert {path: items for path, items in found.items() if items} == {}
    assert built.mpsd_exchanges == 10 and not built.no_mpsd
