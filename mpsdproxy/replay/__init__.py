"""Server replay: answer requests from a recording, in recorded order, and explain misses.

- `matching`: when two requests are the same request (`MatchOptions`, `match_key`),
  and how they differ when they are not (`compare`);
- `index`: one streaming pass over the recording files, a few numbers per exchange,
  every record checked for what a wire can carry;
- `player`: which recorded answer each request gets (`Serve`), what to do when
  there is none (`Pass`), the answers themselves, and the hand-over to the stand-in.

The replayer addon (`mpsdproxy.addons.replayer`) is the only mitmproxy side of it.
"""

from mpsdproxy.replay.index import Index
from mpsdproxy.replay.matching import DEFAULT_IGNORE_PARAMS
from mpsdproxy.replay.matching import DEFAULT_IGNORE_PAYLOAD_PARAMS
from mpsdproxy.replay.matching import KeyPattern
from mpsdproxy.replay.matching import MatchKey
from mpsdproxy.replay.matching import MatchOptions
from mpsdproxy.replay.matching import compare
from mpsdproxy.replay.matching import differences
from mpsdproxy.replay.matching import match_key
from mpsdproxy.replay.matching import parse_choice
from mpsdproxy.replay.matching import parse_header_name
from mpsdproxy.replay.matching import parse_key_pattern
from mpsdproxy.replay.matching import recorded
from mpsdproxy.replay.player import EXHAUSTED_CHOICES
from mpsdproxy.replay.player import HANDOFF_KEY
from mpsdproxy.replay.player import PACE_CHOICES
from mpsdproxy.replay.player import UNMATCHED_CHOICES
from mpsdproxy.replay.player import Decision
from mpsdproxy.replay.player import NearMiss
from mpsdproxy.replay.player import Pass
from mpsdproxy.replay.player import Player
from mpsdproxy.replay.player import Recent
from mpsdproxy.replay.player import Seed
from mpsdproxy.replay.player import Serve
from mpsdproxy.replay.player import error_response
from mpsdproxy.replay.player import handoff_mark
from mpsdproxy.replay.player import replay_headers
from mpsdproxy.replay.player import response_of

__all__ = [
    "DEFAULT_IGNORE_PARAMS",
    "DEFAULT_IGNORE_PAYLOAD_PARAMS",
    "EXHAUSTED_CHOICES",
    "UNMATCHED_CHOICES",
    "PACE_CHOICES",
    "KeyPattern",
    "parse_key_pattern",
    "parse_choice",
    "parse_header_name",
    "MatchOptions",
    "MatchKey",
    "match_key",
    "recorded",
    "compare",
    "differences",
    "Index",
    "NearMiss",
    "Serve",
    "Pass",
    "Decision",
    "Seed",
    "HANDOFF_KEY",
    "handoff_mark",
    "Recent",
    "Player",
    "replay_headers",
    "response_of",
    "error_response",
]
