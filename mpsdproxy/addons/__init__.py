"""The mpsdproxy addons, one per module, in the order a request meets them."""

from __future__ import annotations

from typing import Any


def default_addons() -> list[Any]:
    """Every mpsdproxy addon in chain order (DESIGN.md, "One request's way through").

    Each is inert until its options are set, so the full chain is always loaded.
    """
    from mpsdproxy.addons import classifier
    from mpsdproxy.addons import injector
    from mpsdproxy.addons import livelog
    from mpsdproxy.addons import recorder
    from mpsdproxy.addons import replayer
    from mpsdproxy.addons import router
    from mpsdproxy.addons import verdictlog

    return [
        router.Router(),
        replayer.Replayer(),
        injector.FaultInjector(),
        classifier.StatusClassifier(),
        recorder.Recorder(),
        livelog.LiveLog(),
        verdictlog.VerdictLog(),
    ]


class MpsdChain:
    """The mpsdproxy addons as one entry in mitmproxy's addon chain, in chain order.

    mitmproxy calls every top-level addon on every event, each through its own error
    guard and coroutine, whether or not it has a hook for the event: a few µs per
    addon, four events per exchange. Children listed in `addons` it walks in one pass
    (options, commands and hooks work as for top-level addons), so one entry instead
    of seven takes that cost off every exchange. `mitmdump -s addons/mpsdproxy.py`
    nests them the same way: a script is an addon too.
    """

    def __init__(self) -> None:
        self.addons = default_addons()
