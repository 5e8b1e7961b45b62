"""mpsdproxy for mitmproxy users in a checkout: `mitmdump -s addons/mpsdproxy.py`.

Loads the same addons, with the same options, as `mpsdproxy run`. It runs the script the
wheel ships (`mpsdproxy/script/mpsdproxy.py`, for `pip install`/`pipx install`, where there
is no checkout); this one stays a real file, not a link, so it works on Windows too.

Example:
    mitmdump -s addons/mpsdproxy.py --set mpsd_record=recordings/run.jsonl \\
        --allow-hosts '^sessiondirectory\\.xboxlive\\.com(:\\d+)?$'
"""

import os
import runpy
import sys

# mitmproxy puts this script's folder first on sys.path, where this file would shadow the
# `mpsdproxy` package it shares a name with: look past it.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
_shipped = os.path.join(os.path.dirname(_here), "mpsdproxy", "script", "mpsdproxy.py")
addons = runpy.run_path(_shipped)["addons"]
