"""The scenarios in force: loading them, hot reload while the proxy runs, and asking them.

Several scenarios are tried in the order given, each as a whole: the first
that fires answers, and a request one scenario answered is not counted by the
later ones (as if each were a proxy in front of the next).

Scenario files are watched while the proxy runs: a good edit replaces the
scenario (its counters start over, its time windows still count from the
proxy's start); a broken one is logged once with its problem lines and the
previous scenario stays in force. A file that cannot be read any more keeps
its scenario too, and so does one replaced by a FIFO or a device (refused: not
a regular file; opening a FIFO would wait for a writer forever).

A reload reads and parses the file in a worker thread (`asyncio.to_thread`): a
large edit must not stall the traffic the event loop carries. The new scenario
replaces the old one in a single assignment back on the loop, so a request sees
either the old set or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from mpsdproxy import model
from mpsdproxy import safefiles
from mpsdproxy import scenario
from mpsdproxy.scenario import Phase

logger = logging.getLogger(__name__)

__all__ = ["RELOAD_INTERVAL", "Hit", "Loaded", "Scenarios", "load_scenarios", "summary"]

#: Seconds between two looks at the scenario files' modification times.
RELOAD_INTERVAL = 0.5

#: What identifies one version of a file: (mtime_ns, size, inode).
Stamp = tuple[int, int, int]


def _stamp(path: str) -> Stamp:
    """One version of a file; raises OSError when it cannot be read."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _stamp_or_none(path: str) -> Stamp | None:
    try:
        return _stamp(path)
    except OSError:
        return None  # scenario.load says why


def load_scenarios(paths: Sequence[str]) -> list[scenario.Scenario]:
    """Every scenario file, loaded and validated; ValueError with every problem line of
    every broken file (`file:line:column: key.path: what is wrong`)."""
    loaded, problems = [], []
    for path in paths:
        try:
            safefiles.refuse_not_regular(path, "scenario file")
            loaded.append(scenario.load(path))
        except (scenario.ScenarioError, safefiles.BadFile) as e:
            problems.append(str(e))
    if problems:
        raise ValueError("\n".join(problems))
    return loaded


def summary(s: scenario.Scenario) -> str:
    """One line for the log: the scenario, its seed and its rules."""
    rules = ", ".join(r.name for r in s.rules)
    return f"scenario {s.name} (seed {s.seed}), {len(s.rules)} rule(s): {rules}"


@dataclass
class Loaded:
    """One scenario in force, the engine that applies it, and the file version it came from."""

    path: str
    scenario: scenario.Scenario
    engine: scenario.Engine
    stamp: Stamp | None
    reported: Stamp | str | None = None  # the broken version (or read error) last logged


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that fired, with the scenario it belongs to."""

    loaded: Loaded
    firing: scenario.Firing

    @property
    def rule(self) -> scenario.Rule:
        return self.firing.rule

    @property
    def fault(self) -> scenario.Fault:
        return self.firing.rule.fault


class Scenarios:
    """The scenarios in force, in order, and the watcher that reloads edited files.

    `origin` is where the time windows count from: the proxy's start.
    """

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self._loaded: list[Loaded] = []
        self._phases: frozenset[Phase] = frozenset()
        #: Whether a rule in force reads the caller, or whether the session exists
        #: (`scenario.Engine.reads_caller`, `reads_existence`).
        self.reads_caller = self.reads_existence = False
        self.watcher: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> list[Loaded]:
        """The scenarios in force, in order. Replaced whole, never edited in place (a
        request sees the old set or the new one), so what they act on is worked out
        once per set here rather than once per request."""
        return self._loaded

    @loaded.setter
    def loaded(self, items: list[Loaded]) -> None:
        self._loaded = items
        self._phases = frozenset().union(*(item.engine.phases for item in items))
        self.reads_caller = any(item.engine.reads_caller for item in items)
        self.reads_existence = any(item.engine.reads_existence for item in items)

    # -- loading -------------------------------------------------------------------------

    def load(self, paths: Sequence[str]) -> None:
        """Load every scenario, or none: a broken one raises ValueError (every problem of
        every file) and the old set stays.

        A file already in force and unchanged keeps its engine, counters included, so
        the rollback of a refused option change does not restart the pass.
        """
        current = {item.path: item for item in self.loaded}
        stamps = {path: _stamp_or_none(path) for path in paths}
        kept = {path: current[path] for path in paths
                if path in current and stamps[path] is not None
                and current[path].stamp == stamps[path]}
        fresh = [path for path in paths if path not in kept]
        found = dict(zip(fresh, load_scenarios(fresh), strict=True))
        loaded = []
        for path in paths:
            if path in kept:
                loaded.append(kept[path])
                continue
            engine = scenario.Engine(found[path], start=self.origin)
            loaded.append(Loaded(path, found[path], engine, stamps[path]))
            logger.info(f"Injecting faults from {path}: {summary(found[path])}")
        self.loaded = loaded

    # -- hot reload ----------------------------------------------------------------------

    def watch(self) -> None:
        """Start looking for edits every RELOAD_INTERVAL seconds (needs a running loop)."""
        if self.watcher is None:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            try:
                await self.reload_changed_off_loop()
            except Exception as e:  # noqa: BLE001 - a watcher crash must not end reloading
                logger.exception(f"Checking mpsd_scenario files for edits failed: {e}")

    def reload_changed(self) -> list[str]:
        """Reload every scenario file edited since it was loaded; the paths reloaded.

        A broken edit is logged once with its problem lines and changes nothing. This
        parses on the caller's thread; the watcher uses `reload_changed_off_loop`.
        """
        return [item.path for item in list(self.loaded)
                if self._swap(item, _settle(item, _look(item)))]

    async def reload_changed_off_loop(self) -> list[str]:
        """`reload_changed`, with each file read and parsed in a worker thread: the event
        loop keeps carrying traffic while a large edit parses."""
        reloaded = []
        for item in list(self.loaded):
            outcome = await asyncio.to_thread(_look, item)
            if self._swap(item, _settle(item, outcome)):
                reloaded.append(item.path)
        return reloaded

    def _swap(self, item: Loaded, fresh: Loaded | None) -> bool:
        """Put `fresh` where `item` was, in one assignment of a new list; False when there
        is nothing new or `item` left the set meanwhile (an option change reloaded it)."""
        if fresh is None or not any(x is item for x in self.loaded):
            return False
        fresh.engine.enabled = item.engine.enabled
        self.loaded = [fresh if x is item else x for x in self.loaded]
        return True

    # -- asking --------------------------------------------------------------------------

    def has(self, phase: Phase) -> bool:
        """Whether any loaded rule acts in this phase (else there is nothing to evaluate)."""
        return phase in self._phases

    def evaluate(self, request: model.Request, phase: Phase, now: float, *, client: str,
                 user: str, exists: bool | None = None) -> Hit | None:
        """The first rule of the first scenario that fires on this request, or None.

        `exists`: whether the request's session existed before it, as the proxy knows
        (None: not seen yet); a rule fires only where the service could answer as it
        does (`scenario.Engine.evaluate`)."""
        for item in self.loaded:
            firing = item.engine.evaluate(request, phase, client=client, user=user, now=now,
                                          exists=exists)
            if firing is not None:
                return Hit(item, firing)
        return None

    # -- switches and counters -------------------------------------------------------------

    def switch_rule(self, name: str, on: bool) -> None:
        """Turn every rule of this name (ignoring case) on or off; ValueError naming the
        valid rules when there is none."""
        found = [item for item in self.loaded
                 if any(r.name.lower() == name.lower() for r in item.scenario.rules)]
        if not found:
            names = ", ".join(r.name for item in self.loaded for r in item.scenario.rules)
            raise ValueError(
                f"No rule named {name!r}. Valid rules are: {names or '(no scenario loaded)'}")
        for item in found:
            item.engine.set_enabled(on, name)

    def switch_scenario(self, name: str, on: bool) -> None:
        """Turn a whole scenario (by name, ignoring case) on or off; ValueError naming the
        valid scenarios when there is none."""
        found = [item for item in self.loaded if item.scenario.name.lower() == name.lower()]
        if not found:
            names = ", ".join(item.scenario.name for item in self.loaded)
            raise ValueError(f"No scenario named {name!r}. Valid scenarios are: "
                             f"{names or '(none loaded)'}")
        for item in found:
            item.engine.set_enabled(on)

    def reset(self, start: float) -> None:
        """Forget every count and draw; time windows count from `start`."""
        for item in self.loaded:
            item.engine.reset(start=start)

    def count_lines(self) -> list[str]:
        """One line per rule: `scenario: rule: N matched, M fired[, K not applicable (why)]`."""
        return [f"{item.scenario.name}: {line}"
                for item in self.loaded for line in item.engine.stats_lines()]


def _report(item: Loaded, version: Stamp | str, message: str) -> None:
    """Log a problem with a file once per version of it."""
    if item.reported != version:
        item.reported = version
        logger.error(message)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a look at a scenario file found: nothing new (`version` None), a problem to
    log once per version (`problem`), or a new scenario (`fresh`)."""

    version: Stamp | str | None = None
    problem: str = ""
    fresh: scenario.Scenario | None = None


def _look(item: Loaded) -> Outcome:
    """Stat, read and parse the file if it changed. Blocking, and safe in a worker thread:
    it logs nothing and touches nothing shared."""
    try:
        st = os.stat(item.path)
    except OSError as e:
        return Outcome(f"{e}", f"Cannot read mpsd_scenario file {item.path} "
                               f"({e.strerror or e}); the loaded version stays in force")
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    if stamp == item.stamp or stamp == item.reported:
        return Outcome()
    if not stat.S_ISREG(st.st_mode):
        return Outcome(stamp, f"Not reloading {item.path}: not a regular file any more; "
                              "the loaded version stays in force")
    try:
        return Outcome(stamp, fresh=scenario.load(item.path))
    except scenario.ScenarioError as e:
        return Outcome(stamp, f"Not reloading {item.path}: the edit is broken, the "
                              f"previous version stays in force:\n{e}")


def _settle(item: Loaded, outcome: Outcome) -> Loaded | None:
    """On the loop: log what the look found, and the new scenario in force, if any."""
    if outcome.version is None:
        return None
    if outcome.fresh is None:
        _report(item, outcome.version, outcome.problem)
        return None
    assert not isinstance(outcome.version, str)
    engine = scenario.Engine(outcome.fresh, start=item.engine.start)
    logger.info(f"Reloaded {item.path}: {summary(outcome.fresh)} (counters start over)")
    return Loaded(item.path, outcome.fresh, engine, outcome.version)
