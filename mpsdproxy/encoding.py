"""Content-Encoding, both ways: the one place that compresses and decompresses bodies.

Recordings keep bodies with any Content-Encoding undone and the header as it
was (`model.Request.body` is the decoded content); whatever puts a body back on
a wire or into a file that holds wire bytes (a SAZ archive, a flow file, a
re-sent request) encodes it again here. Codings: identity, gzip (and x-gzip),
deflate (zlib-wrapped when written; zlib-wrapped or raw when read, as servers
send both), br and zstd. A list such as `gzip, br` is applied in order when
encoding and undone in reverse when decoding.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import brotli
import zstandard

__all__ = ["CODINGS", "decode", "encode", "wire_body", "plain_body"]


def _gunzip(data: bytes) -> bytes:
    return gzip.decompress(data)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # mtime 0: the same body gives the same bytes


def _inflate(data: bytes) -> bytes:
    """zlib-wrapped deflate as RFC 9110 says, or the raw stream some servers send."""
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)


def _unzstd(data: bytes) -> bytes:
    # A stream object: frames written without their content size decode too.
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _same(data: bytes) -> bytes:
    return data


#: coding -> (decode, encode)
CODINGS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "identity": (_same, _same),
    "none": (_same, _same),
    "gzip": (_gunzip, _gzip),
    "x-gzip": (_gunzip, _gzip),
    "deflate": (_inflate, zlib.compress),
    "br": (brotli.decompress, brotli.compress),
    "zstd": (_unzstd, _zstd),
}


def _codings(content_encoding: str) -> list[str]:
    names = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    unknown = [c for c in names if c not in CODINGS]
    if unknown:
        raise ValueError(f"Content-Encoding {unknown[0]!r} is not one of "
                         f"{', '.join(sorted(CODINGS))}")
    return names


def decode(body: bytes, content_encoding: str | None) -> bytes:
    """The content a body encoded with `content_encoding` carries.

    Raises ValueError for an unknown coding or bytes that are not in it.
    """
    if not body or not content_encoding:
        return body
    for coding in reversed(_codings(content_encoding)):
        try:
            body = CODINGS[coding][0](body)
        except (OSError, EOFError, zlib.error, brotli.error, zstandard.ZstdError) as e:
            raise ValueError(f"body is not valid {coding}: {e}") from None
    return body


def encode(body: bytes, content_encoding: str | None) -> bytes:
    """`body` encoded with `content_encoding`; ValueError for an unknown coding."""
    if not body or not content_encoding:
        return body
    for coding in _codings(content_encoding):
        body = CODINGS[coding][1](body)
    return body


def wire_body(body: bytes, content_encoding: str | None) -> bytes:
    """A decoded body (as records keep it) encoded back with its Content-Encoding.

    A coding this module does not know leaves the body as it is: the recorder
    could not undo it either, so the record holds the wire bytes already.
    """
    try:
        return encode(body, content_encoding)
    except ValueError:
        return body


def plain_body(body: bytes, content_encoding: str | None) -> bytes:
    """A wire body with its Content-Encoding undone when it can be (as the recorder
    keeps bodies); the bytes as they came when it cannot."""
    try:
        return decode(body, content_encoding)
    except ValueError:
        return body
