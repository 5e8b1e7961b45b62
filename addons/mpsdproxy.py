"""mpsdproxy for mitmproxy users: `mitmdump -s addons/mpsdproxy.py` or `mitmweb -s ...`.

Loads the same addons, with the same options, as `mpsdproxy run`. Example:

    mitmdump -s addons/mpsdproxy.py --set mpsd_record=recordings/run.jsonl \\
        --allow-hosts '^sessiondirectory\\.xboxlive\\.com(:\\d+)?$'
"""

import os
import sys

# mitmproxy puts this script's folder first on sys.path, where this file would shadow the
# `mpsdproxy` package it shares a name with; look past it, and at the checkout it lives in.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if sys.modules.get("mpsdproxy") is not None and not hasattr(sys.modules["mpsdproxy"], "__path__"):
    del sys.modules["mpsdproxy"]
sys.path.append(os.path.dirname(_here))

from mpsdproxy.addons import MpsdChain  # noqa: E402

addons = [MpsdChain()]
