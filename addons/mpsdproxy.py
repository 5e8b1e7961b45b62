"""mpsdproxy for mitmproxy users: `mitmdump -s addons/mpsdproxy.py` or `mitmweb -s ...`.

Loads the same addons, with the same options, as `mpsdproxy run`. Example:

    mitmdump -s addons/mpsdproxy.py --set mpsd_record=recordings/run.jsonl \
        --allow-hosts '^sessiondirectory\\.xboxlive\\.com(:\\d+)?$'
"""

from mpsdproxy.addons import default_addons

addons = default_addons()
