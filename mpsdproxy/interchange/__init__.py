"""Recordings to and from HAR, mitmproxy flow files and Fiddler SAZ archives.

So a recording opens in browser devtools (HAR 1.2), in mitmweb (`mitmweb -r
FILE.mitm`) and in Fiddler or the Xbox Live Trace Analyzer (SAZ), and so
captures made with those tools, or with plain `mitmdump -w`, replay and
classify here. Every format works on `model.Exchange`:

- `har`: HAR as plain JSON, written and read entry by entry (`harstream`);
- `saz`: the zip of raw HTTP/1 messages Fiddler writes, websocket frames
  (`wsframes`) included (HAR holds them as Chromium's `_webSocketMessages`);
  an import writes them among the exchanges by time, each RTA message
  decoded (`recording.messages`, field `"rta"`), and an export gives each
  back to its handshake wherever it stands in the recording;
- `csvtrace`: the Xbox Live Trace Analyzer's CSV trace (`v1510`, one quoted row per
  call); it keeps method, URL, headers, bodies, status and times to the millisecond;
- `mpsdproxy.addons.flowfile`: mitmproxy's own flow files (the one format that
  needs mitmproxy, so it lives with the addons, and the commands hand it in as
  one more `Format`);
- `files`: `export_file` / `import_file`, records <-> exchanges through the
  recording codec, with the import's scope (MPSD and RTA hosts by default);
- `outputs`: outputs written beside the target and renamed, never over an input.

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
otherwise `{"source": "imported", "format": "har"|"mitm"|"saz"|"csv", "file": NAME}`.
"""

from mpsdproxy.interchange.common import UNWRITABLE
from mpsdproxy.interchange.common import skip_record
from mpsdproxy.interchange.csvtrace import read_csv
from mpsdproxy.interchange.csvtrace import write_csv
from mpsdproxy.interchange.files import DEFAULT_HOSTS
from mpsdproxy.interchange.files import FORMATS
from mpsdproxy.interchange.files import MAX_BODY
from mpsdproxy.interchange.files import ExportResult
from mpsdproxy.interchange.files import Format
from mpsdproxy.interchange.files import ImportResult
from mpsdproxy.interchange.files import exchanges_of
from mpsdproxy.interchange.files import export_file
from mpsdproxy.interchange.files import guess_format
from mpsdproxy.interchange.files import import_file
from mpsdproxy.interchange.files import items_of
from mpsdproxy.interchange.har import read_har
from mpsdproxy.interchange.har import write_har
from mpsdproxy.interchange.saz import read_saz
from mpsdproxy.interchange.saz import read_sessions
from mpsdproxy.interchange.saz import write_saz

__all__ = [
    "DEFAULT_HOSTS",
    "MAX_BODY",
    "items_of",
    "read_sessions",
    "FORMATS",
    "Format",
    "guess_format",
    "exchanges_of",
    "write_har",
    "read_har",
    "write_saz",
    "read_saz",
    "write_csv",
    "read_csv",
    "ExportResult",
    "ImportResult",
    "export_file",
    "import_file",
    "UNWRITABLE",
    "skip_record",
]
