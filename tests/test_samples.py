"""The shipped sample recordings stay readable and agree with today's classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsdproxy import catalog
from mpsdproxy import recording
from mpsdproxy.classify import classify

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "recordings").glob("sample-*.jsonl"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_reads_cleanly_and_classifies_as_recorded(path: Path) -> None:
    records = list(recording.read(path, strict=True))
    assert records
    for record in records:
        again = classify(recording.to_exchange(record))
        assert again.to_dict() == record["classification"], record["seq"]
        assert "token-of" not in str(record["request"]["headers"])


def test_the_lobby_sample_covers_every_row() -> None:
    path = next(p for p in SAMPLES if p.name == "sample-lobby.jsonl")
    seen = {r["classification"]["id"] for r in recording.read(path, strict=True)}
    assert seen == set(catalog.BY_ID)
