"""encoding: Content-Encoding both ways, as servers and titles send it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from mpsdproxy import encoding

BODY = b'{"properties":{"custom":{"note":"caf\xc3\xa9"}}}' * 20


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "br", "zstd", "identity",
                                    "gzip, br", "GZIP"])
def test_every_coding_round_trips(coding: str) -> None:
    wire = encoding.encode(BODY, coding)
    assert encoding.decode(wire, coding) == BODY
    if coding not in ("identity",):
        assert wire != BODY


def test_gzip_is_deterministic_and_readable_by_gzip() -> None:
    assert encoding.encode(BODY, "gzip") == encoding.encode(BODY, "gzip")
    assert gzip.decompress(encoding.encode(BODY, "gzip")) == BODY


def test_deflate_reads_raw_and_zlib_wrapped_streams() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    stream = raw.compress(BODY) + raw.flush()
    assert encoding.decode(stream, "deflate") == BODY
    assert encoding.decode(zlib.compress(BODY), "deflate") == BODY


def test_unknown_codings_and_bad_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="'compress' is not one of"):
        encoding.encode(BODY, "compress")
    with pytest.raises(ValueError, match="not valid gzip"):
        encoding.decode(b"not gzip", "gzip")
    with pytest.raises(ValueError, match="not valid br"):
        encoding.decode(b"not brotli", "br")


def test_best_effort_helpers_keep_what_they_cannot_change() -> None:
    assert encoding.wire_body(BODY, "compress") == BODY
    assert encoding.plain_body(b"not gzip", "gzip") == b"not gzip"
    assert encoding.plain_body(encoding.wire_body(BODY, "br"), "br") == BODY
    assert encoding.wire_body(b"", "gzip") == b""
    assert encoding.plain_body(BODY, None) == BODY
