"""Title-behaviour verdicts: did the title handle 412, 429 and 503 the way the service asks?

A streaming engine judges exchanges one at a time (`Engine.feed(exchange)`,
a `model.Exchange` with its seq set) and decides what is still waiting at
`Engine.finish()`. Each verdict is pass, warn, fail or not-applicable, with a
one-line reason and its evidence (record seq numbers and gaps in ms). The
fault-handling rules (Retry-After, backoff, 412, 409, polling a missing
session) pass or fail; the call-pattern rules (call-rate budgets and the Xbox
Live Trace Analyzer's rules, protocol notes §5.4) warn, and fail only at the
certification line.

The package, by job:
- `limits`: the limits file (budgets and thresholds) and its loader;
- `state`: the facts of one exchange and the bounded per-key state;
- `base`: the rules judged, a verdict, what every rule does;
- `fault_rules`, `streak_rules`, `pattern_rules`, `recovery_rules`: the rules;
- `rta_state`, `rta_rules`: the RTA websocket as the title uses it, and its rules
  (a newer shoulder tap read, reconnect and resubscribe after a drop, re-read after
  a resync), fed websocket messages by `Engine.feed_message`;
- `engine`: feeding them, time, and the summary at the end.
"""

from mpsdproxy.verdicts.base import RULES
from mpsdproxy.verdicts.base import RULES_BY_ID
from mpsdproxy.verdicts.base import Group
from mpsdproxy.verdicts.base import Rule
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.engine import DEFAULT_MAX_KEYS
from mpsdproxy.verdicts.engine import Engine
from mpsdproxy.verdicts.limits import Limits
from mpsdproxy.verdicts.limits import LimitsError
from mpsdproxy.verdicts.limits import RuleSettings
from mpsdproxy.verdicts.limits import ServiceLimits
from mpsdproxy.verdicts.limits import Window
from mpsdproxy.verdicts.limits import default_limits
from mpsdproxy.verdicts.limits import load_limits
from mpsdproxy.verdicts.limits import parse_limits
from mpsdproxy.verdicts.state import Facts

__all__ = [
    "Status",
    "Group",
    "Rule",
    "RULES",
    "RULES_BY_ID",
    "Verdict",
    "Window",
    "ServiceLimits",
    "RuleSettings",
    "Limits",
    "LimitsError",
    "parse_limits",
    "load_limits",
    "default_limits",
    "Facts",
    "Engine",
    "DEFAULT_MAX_KEYS",
]
