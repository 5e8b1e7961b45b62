"""What the interchange formats share: which exchanges a file can hold, and skip notes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mpsdproxy import classify
from mpsdproxy import model

__all__ = ["skip", "skip_record", "UNWRITABLE", "check_exportable", "split_address",
           "charset", "escape_non_utf8", "comment"]


def skip(skipped: list[str] | None, reason: str) -> None:
    """Note an exchange a reader or writer left out: reported, never silently dropped."""
    if skipped is not None:
        skipped.append(reason)


#: What a writer may raise for one exchange it cannot express (a status, a header, a
#: time out of the format's range): that exchange is left out, never the whole file.
UNWRITABLE = (ValueError, OverflowError, OSError)


def skip_record(skipped: list[str] | None, seq: object, error: BaseException | str) -> None:
    """Note a record left out of an export, named by its seq once: `record N: cannot be
    exported (why)`, or the error's own text when it names the record already."""
    message = str(error)
    if not message.startswith("record "):
        message = f"record {seq}: cannot be exported ({message})"
    skip(skipped, message)


def check_exportable(exchange: model.Exchange) -> None:
    """ValueError unless the exchange's URL is an absolute http(s) URL: every format
    names the server, and a relative URL names none."""
    split = urlsplit(exchange.request.url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"record {exchange.seq}: not an absolute http(s) URL: "
                         f"{model.printable(exchange.request.url)!r}")


def split_address(value: object) -> tuple[str, int] | None:
    """`127.0.0.1:50412` or `[::1]:50412` -> (host, port); None when it is not one."""
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def charset(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, lower case, or None."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def escape_non_utf8(text: str) -> str:
    """Text with each byte that was not UTF-8 (a lone surrogate, by the model's rule)
    percent-encoded: `\\udce9` -> `%E9`. For URLs in files that must be strict UTF-8."""
    return _NOT_UTF8.sub(lambda m: f"%{ord(m[0]) - 0xDC00:02X}", text)


def _utf8(name: str | None) -> bool:
    return name is None or name.replace("_", "-") in ("utf-8", "utf8")


def body_text(body: bytes, content_type: str | None) -> str | None:
    """A body as text for a file that stores text, or None when it must be base64:
    not UTF-8, or not ASCII under a declared charset other than UTF-8 (a reader
    would encode the text with that charset and get other bytes)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _utf8(charset(content_type)) and not body.isascii():
        return None
    return text


def text_bytes(text: str, content_type: str | None) -> bytes:
    """The bytes a body stored as text stands for: in its declared charset when the
    text fits it, else by the model's one rule (UTF-8)."""
    declared = charset(content_type)
    if not _utf8(declared):
        try:
            return text.encode(declared or "utf-8")
        except (LookupError, UnicodeEncodeError):
            pass
    return model.to_bytes(text)


def comment(exchange: model.Exchange) -> str:
    """The classification of an exchange in a word, for the comment fields of exports:
    its status-table row with any anomaly codes, or why it has none."""
    classification = classify.classify(exchange)
    text = classification.id or (
        "unclassified" if classify.is_mpsd(exchange) else "not session-directory traffic")
    codes = [a.code for a in classification.anomalies]
    return text + (" (" + ", ".join(codes) + ")" if codes else "")
