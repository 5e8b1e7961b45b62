"""Recordings: one exchange per JSON line, redacted before it touches disk.

- `codec`: the format (header line, record outline, bodies, any bytes) and
  Exchange <-> record;
- `redact`: what never reaches a file;
- `writer`: appending, one write per exchange, contiguous sequence numbers;
- `reader`: streaming, every bad line named;
- `verdictfile`: the verdicts stored beside a recording (`<recording>.verdicts`).
"""

from mpsdproxy.recording.codec import FORMAT
from mpsdproxy.recording.codec import FORMAT_VERSION
from mpsdproxy.recording.codec import decode_body
from mpsdproxy.recording.codec import encode_body
from mpsdproxy.recording.codec import encode_line
from mpsdproxy.recording.codec import header
from mpsdproxy.recording.codec import header_line
from mpsdproxy.recording.codec import parse_tags
from mpsdproxy.recording.codec import parse_timestamp
from mpsdproxy.recording.codec import timestamp
from mpsdproxy.recording.codec import to_exchange
from mpsdproxy.recording.codec import to_record
from mpsdproxy.recording.reader import ReadIssue
from mpsdproxy.recording.reader import RecordError
from mpsdproxy.recording.reader import check_outline
from mpsdproxy.recording.reader import foreign_file
from mpsdproxy.recording.reader import iter_records
from mpsdproxy.recording.reader import numbered
from mpsdproxy.recording.reader import read
from mpsdproxy.recording.reader import read_tags
from mpsdproxy.recording.redact import DEFAULT_REDACT
from mpsdproxy.recording.redact import REDACTED_PREFIX
from mpsdproxy.recording.redact import Redactor
from mpsdproxy.recording.redact import redact_value
from mpsdproxy.recording.redact import user_of
from mpsdproxy.recording.writer import ForeignFileError
from mpsdproxy.recording.writer import LockedError
from mpsdproxy.recording.writer import Writer
from mpsdproxy.recording.writer import set_tags

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DEFAULT_REDACT",
    "REDACTED_PREFIX",
    "Redactor",
    "redact_value",
    "user_of",
    "encode_body",
    "decode_body",
    "encode_line",
    "header",
    "header_line",
    "parse_tags",
    "read_tags",
    "set_tags",
    "timestamp",
    "parse_timestamp",
    "to_record",
    "to_exchange",
    "Writer",
    "ForeignFileError",
    "LockedError",
    "RecordError",
    "ReadIssue",
    "read",
    "iter_records",
    "numbered",
    "check_outline",
    "foreign_file",
]
