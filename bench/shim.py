"""`mpsdproxy run`, with any addon module that exists but is not in the chain yet put in place.

The harness starts proxies with `python -m mpsdproxy run`. Only when the chain
(`mpsdproxy.addons.default_addons`) lacks an option the benchmark needs
(`mpsd_replay`, `mpsd_scenario`) while the addon module providing it exists
does it start them through this file instead, which inserts that addon at its
place in the documented order (Router, Replayer, FaultInjector, Classifier,
Recorder, LiveLog) and then runs the same CLI. The report names which way
each proxy was started.

    python bench/shim.py run --mode reverse:URL --set mpsd_replay=FILE
"""

from __future__ import annotations

import importlib
from typing import Any

#: (module, class) in chain order, for the addons this shim may have to add.
OPTIONAL = (
    ("mpsdproxy.addons.replayer", "Replayer"),
    ("mpsdproxy.addons.injector", "FaultInjector"),
)


def _available(module: str, name: str) -> type | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _chain() -> list[Any]:
    """The default chain plus the missing optional addons, inserted after the router in
    chain order (the replayer answers before the injector, both before the classifier)."""
    from mpsdproxy.addons import default_addons

    try:
        addons = default_addons()
    except ImportError:  # the chain names a module that is not there yet
        addons = _fallback_chain()
    present = {type(a).__name__ for a in addons}
    position = 1
    for module, name in OPTIONAL:
        cls = _available(module, name)
        if name in present:
            position = [type(a).__name__ for a in addons].index(name) + 1
        elif cls is not None:
            addons.insert(position, cls())
            position += 1
    return addons


def _fallback_chain() -> list[Any]:
    from mpsdproxy.addons import classifier
    from mpsdproxy.addons import livelog
    from mpsdproxy.addons import recorder
    from mpsdproxy.addons import router

    return [router.Router(), classifier.StatusClassifier(), recorder.Recorder(),
            livelog.LiveLog()]


def main() -> None:
    from mpsdproxy import cli
    from mpsdproxy import proxy

    proxy.default_addons = _chain  # type: ignore[assignment]
    cli.main()


if __name__ == "__main__":
    main()
