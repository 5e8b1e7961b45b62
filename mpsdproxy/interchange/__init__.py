"""Recordings to and from HAR, mitmproxy flow files and Fiddler SAZ archives.

So a recording opens in browser devtools (HAR 1.2), in mitmweb (`mitmweb -r
FILE.mitm`) and in Fiddler or the Xbox Live Trace Analyzer (SAZ), and so
captures made with those tools, or with plain `mitmdump -w`, replay and
classify here. Every format works on `model.Exchange`:

- `har`: HAR as plain JSON, written entry by entry;
- `saz`: the zip of raw HTTP/1 messages Fiddler writes;
- `mpsdproxy.addons.flowfile`: mitmproxy's own flow files (the one format that
  needs mitmproxy, so it lives with the addons, and the commands hand it in as
  one more `Format`);
- `files`: `export_file` / `import_file`, records <-> exchanges through the
  recording codec.

What a round trip keeps: method, URL, headers (order and repeats), bodies,
status and reason, start and end time (to the microsecond), the client
address, and, when the file came from here, each record's provenance. Bodies
follow the recording's convention: a record keeps the body with any
Content-Encoding undone and the header as it was; an exported message that
holds wire bytes (SAZ, flow files) is re-encoded with its Content-Encoding.
Redacted values stay redacted (exports write what the recording holds;
imports redact with the default Redactor unless told otherwise), and an
imported exchange is classified afresh.

Provenance of an imported exchange: the one carried in the file when it was
exported from a recording (HAR `_mpsd`, flow metadata, SAZ session flags),
otherwise `{"source": "imported", "format": "har"|"mitm"|"saz", "file": NAME}`.
"""

from mpsdproxy.interchange.files import FORMATS
from mpsdproxy.interchange.files import ExportResult
from mpsdproxy.interchange.files import Format
from mpsdproxy.interchange.files import ImportResult
from mpsdproxy.interchange.files import exchanges_of
from mpsdproxy.interchange.files import export_file
from mpsdproxy.interchange.files import guess_format
from mpsdproxy.interchange.files import import_file
from mpsdproxy.interchange.har import read_har
from mpsdproxy.interchange.har import write_har
from mpsdproxy.interchange.saz import read_saz
from mpsdproxy.interchange.saz import write_saz

__all__ = [
    "FORMATS",
    "Format",
    "guess_format",
    "exchanges_of",
    "write_har",
    "read_har",
    "write_saz",
    "read_saz",
    "ExportResult",
    "ImportResult",
    "export_file",
    "import_file",
]
