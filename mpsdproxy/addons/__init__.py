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
