"""mpsdproxy for mitmproxy users, as shipped in the wheel: `mitmdump -s <this file>`.

Loads the same addons, with the same options, as `mpsdproxy run`. After `pip install`
or `pipx install`, this file's path is
`importlib.resources.files("mpsdproxy") / "script" / "mpsdproxy.py"`; in a checkout,
`addons/mpsdproxy.py` at the root runs it. Example:

    mitmdump -s .../mpsdproxy/script/mpsdproxy.py --set mpsd_record=run.jsonl \\
        --allow-hosts '^sessiondirectory\\.xboxlive\\.com(:\\d+)?$'
"""

import os
import sys

# mitmproxy puts this script's folder first on sys.path, where this file would shadow the
# `mpsdproxy` package it shares a name with; look past it, and at the folder that holds the
# package this file ships in (site-packages, or the checkout).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if sys.modules.get("mpsdproxy") is not None and not hasattr(sys.modules["mpsdproxy"], "__path__"):
    del sys.modules["mpsdproxy"]
sys.path.append(os.path.dirname(os.path.dirname(_here)))

from mpsdproxy.addons import MpsdChain  # noqa: E402
from mpsdproxy.addons import default_addons  # noqa: E402
from mpsdproxy.addons.access import ClientAccess  # noqa: E402

# The client check is the chain's first part: it answers a refused request before the
# parts after it see the request.
addons = [MpsdChain([ClientAccess(), *default_addons()])]
