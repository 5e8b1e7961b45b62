"""Sweep: inject every fault the service can give at every call the title makes, one at a time.

The planning is `mpsdproxy.sweep` (mitmproxy-free); this addon only wires it to
the proxy, and gives each fault through the fault injector, so a sweep's 412 is
the injector's state-consistent 412 (`newer.py`), its 429 and 503 the table's
rows (`answers.answer`), its drops, resets and hangs `connfaults`' own:

- `Sweep.request` runs just before the injector. For a session-directory call it
  learns the operation and, when no fault is in flight and the quiet window has
  passed, asks the planner for a cell the service could give on this very call
  (told whether the session exists by the injector's own session tracker). It
  then puts that cell in force as a one-rule scenario, `sweep`, whose rule is
  named after the cell and fires once; the injector applies it as it applies any
  rule, and its fault note in the recording (`provenance.rule`, `scenario:
  sweep`, `seed`) names the cell, so the matrix can be built from the recording
  alone (`mpsdproxy report --matrix`).
- `Sweep.settle`, after the recorder, sees the call end: the rule fired (the
  engine's counts say) and the cell is done, written to the state file, and the
  quiet window starts; or it did not (another rule answered first) and the cell
  stays pending.

- `Sweep.websocket_message`, before the RTA faults addon, sees each shoulder tap
  the service sends: it learns its RTA operation (`RTA tap TEMPLATE`) and, when the
  sweep is free, arms an RTA cell (tap drop or delay, resync, close) as a one-rule
  tap or rta scenario that `addons/rtafaults.py` gives; `Settle.websocket_message`,
  after the recorder, settles it. A tap has no call to recover: a quiet gap follows
  (after a delayed tap, its delay too), and the verdicts judge what the title did.
  A frame the fault dropped is recorded as a note (`addons/recorder.py`), so the
  matrix still sees the cell.
- A cell is claimed in the shared state file before it is armed (`Planner.choose`,
  `SweepState.claim`, under a file lock) and given back if it did not act, or at
  shutdown.

Between cells the sweep scenario stays loaded with no rule, so the injector keeps
tracking sessions (it learns them only while a scenario is loaded). Its file is
an empty placeholder in the temporary folder: the injector's hot reload looks at
every loaded scenario's file, and this one never changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from mpsdproxy import catalog
from mpsdproxy import rta
from mpsdproxy import scenario
from mpsdproxy import sweep
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import rtafaults
from mpsdproxy.addons.injector import FaultInjector
from mpsdproxy.addons.scenarios import Loaded
from mpsdproxy.scenario import model as rules
from mpsdproxy.sweep.state import BadState

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_GAP", "Sweep", "rule_for"]

#: Default quiet window after each fault.
DEFAULT_GAP = "2s"


def rule_for(cell: sweep.Cell) -> rules.Rule:
    """The one-rule form of a cell: its call's method, kind and template; fires once."""
    op = cell.operation
    if op.rta:  # a tap is matched as a request for its session (`addons/rtafaults.py`)
        match = rules.Match(resources=("session",), paths=(
            rules.parse_glob(f"*/sessiontemplates/{op.template}/*"),))
        return rules.Rule(cell.name, match, rules.When(times=1), cell.fault.fault)
    kinds = [name for name, covered in rules.RESOURCE_KINDS.items()
             if covered is not None and len(covered) == 1 and op.kind in {k.value for k in covered}]
    paths = ()
    if op.template != sweep.operations.NO_TEMPLATE:
        paths = (rules.parse_glob(f"*/sessiontemplates/{op.template}*"),)
    match = rules.Match(methods=frozenset({op.method}), resources=tuple(kinds[:1]), paths=paths)
    return rules.Rule(cell.name, match, rules.When(times=1), cell.fault.fault, cell.fault.phase)


class Settle:
    """The sweep's second hook point, after the recorder: a call that ends settles its cell."""

    def __init__(self, owner: Sweep) -> None:
        self.owner = owner

    def response(self, flow: http.HTTPFlow) -> None:
        self.owner.settle(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.owner.settle(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        self.owner.settle_tap(flow)


class Sweep:
    def __init__(self, injector: FaultInjector,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.injector = injector
        self.clock = clock
        self.planner: sweep.Planner | None = None
        self.settler = Settle(self)
        self.seed = 0
        self._flow: http.HTTPFlow | None = None  # the call the cell in flight is armed on
        self._tap: http.HTTPFlow | None = None  # the websocket an RTA cell is armed on
        self._loaded: Loaded | None = None
        self._placeholder: str | None = None

    # -- options -------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option("mpsd_sweep", bool, False,
                          "Sweep: inject every fault the service can give at every call the "
                          "title makes, one at a time, with a quiet window after each.")
        loader.add_option("mpsd_sweep_state", str, "",
                          "Sweep: the JSON file of cells done, shared by several runs (cells "
                          "in it are never injected again).")
        loader.add_option("mpsd_sweep_only", Sequence[str], [],
                          "Sweep: only the cells OPS/FAULTS allows (globs, comma-separated), "
                          "e.g. 'PUT session */412.*,503.*'.")
        loader.add_option("mpsd_sweep_again", Sequence[str], [],
                          "Sweep: run these cells (OPS/FAULTS globs) again though the state "
                          "file says they are done.")
        loader.add_option("mpsd_sweep_seed", int, 0, "Sweep: the seed of the cells' order.")
        loader.add_option("mpsd_sweep_gap", str, DEFAULT_GAP,
                          "Sweep: the quiet window after each fault (e.g. 2s, 500ms).")
        loader.add_option("mpsd_sweep_retry_after", int, 1,
                          "Sweep: the Retry-After seconds of the 429 and 503 it gives.")

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("mpsd_sweep") for name in updated):
            return
        options = ctx.options
        if not options.mpsd_sweep:
            self.planner = None
            self._unload()
            return
        try:
            gap = rules.parse_duration(options.mpsd_sweep_gap)
        except ValueError as e:
            raise exceptions.OptionsError(f"Cannot parse mpsd_sweep_gap option "
                                          f"{options.mpsd_sweep_gap}: {e}") from None
        try:
            only = sweep.Only(options.mpsd_sweep_only)
            again = sweep.Only(options.mpsd_sweep_again, "--sweep-again")
        except ValueError as e:
            name = "mpsd_sweep_again" if "--sweep-again" in str(e) else "mpsd_sweep_only"
            raise exceptions.OptionsError(f"Cannot parse {name} option: {e}") from None
        try:
            state = sweep.SweepState(options.mpsd_sweep_state or None)
        except BadState as e:
            raise exceptions.OptionsError(f"Cannot parse mpsd_sweep_state option "
                                          f"{options.mpsd_sweep_state}: {e}") from None
        if options.mpsd_sweep_retry_after < 0:
            raise exceptions.OptionsError("Cannot parse mpsd_sweep_retry_after option "
                                          f"{options.mpsd_sweep_retry_after}: below 0")
        self.seed = options.mpsd_sweep_seed
        if self.planner is not None and self.planner.armed is not None:
            self.planner.missed(self.planner.armed)  # its claim goes back to the state
        self._flow = self._tap = None  # a new plan: nothing of the old one stays in flight
        if self._loaded is not None:
            self._put(self._scenario())
        self.planner = sweep.Planner(sweep.fault_list(options.mpsd_sweep_retry_after),
                                     seed=self.seed, gap=gap, only=only, state=state,
                                     again=again, clock=self.clock)
        logger.info(f"Sweep on (seed {self.seed}, gap {gap:g} s, "
                    f"{len(state.cells)} cell(s) already done)")

    def done(self) -> None:
        if self.planner is not None:
            if self.planner.armed is not None:  # in flight at shutdown: give its claim back
                self.planner.missed(self.planner.armed)
            injected = self.planner.injected
            print(f"Sweep: {len(injected)} cell(s) injected this run", flush=True)
        self._unload()

    # -- the sweep scenario in the injector ----------------------------------------------

    def _scenario(self, *rules_: rules.Rule) -> Loaded:
        if self._placeholder is None:
            fd, self._placeholder = tempfile.mkstemp(prefix="mpsdproxy-sweep-", suffix=".yaml")
            os.write(fd, b"# the fault sweep's rules live in the proxy (addons/sweep.py)\n")
            os.close(fd)
        scn = rules.Scenario(sweep.SCENARIO_NAME, "the fault sweep", self.seed, rules_,
                             path=self._placeholder)
        st = os.stat(self._placeholder)
        engine = scenario.Engine(scn, start=self.injector.scenarios.origin)
        return Loaded(self._placeholder, scn, engine, (st.st_mtime_ns, st.st_size, st.st_ino))

    def _put(self, loaded: Loaded | None) -> None:
        """Put the sweep scenario in force first (or take it out), in one assignment."""
        scenarios = self.injector.scenarios
        others = [item for item in scenarios.loaded if item is not self._loaded]
        self._loaded = loaded
        scenarios.loaded = ([loaded] if loaded is not None else []) + others

    def _unload(self) -> None:
        self._put(None)
        if self._placeholder is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._placeholder)
            self._placeholder = None

    # -- hooks ---------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        planner = self.planner
        if planner is None or flow.response is not None or common.mark(flow) is None:
            return
        if not any(item is self._loaded for item in self.injector.scenarios.loaded):
            self._put(self._scenario())  # idle: loaded, no rule (the injector keeps learning)
        if self._flow is not None and not self._flow.live:
            self.settle(self._flow)
        request = flows.request_of(flow)
        operation = sweep.Operation.of(request)
        if operation is None or not self.injector.inject:
            return
        key = request.resource.key
        exists = self.injector.tracker.exists(key) if key else None
        cell = planner.choose(operation, catalog.Situation.of(request, exists))
        if cell is None:
            return
        self._flow = flow
        self._put(self._scenario(rule_for(cell)))

    def settle(self, flow: http.HTTPFlow) -> None:
        """A call ended. The one a cell was armed on: done if its rule fired, else pending.
        Any other that the service answered with a success: its operation recovered."""
        planner, cell = self.planner, self.planner.armed if self.planner else None
        if planner is None:
            return
        if flow is not self._flow:
            self._recovered(planner, flow)
            return
        if cell is None:
            return
        loaded = self._loaded
        fired = loaded is not None and any(s.fires for s in loaded.engine.stats())
        self._flow = None
        self._put(self._scenario())
        if not fired:
            planner.missed(cell)
            return
        planner.fired(cell, run=os.getpid())
        logger.info(f"Sweep: {cell.name} injected; quiet for "
                    f"{planner.quiet_until - self.clock():.1f} s")

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A shoulder tap from the service: learn its RTA operation and, when the sweep is
        free, arm an RTA cell on it (`addons/rtafaults.py` gives it, next in the chain)."""
        planner = self.planner
        if planner is None or not self.injector.inject or flow.websocket is None \
                or not flow.websocket.messages or not rtafaults.is_rta(flow):
            return
        message = flow.websocket.messages[-1]
        if message.from_client or message.injected or message.dropped or not message.is_text:
            return
        decoded = rta.decode(message.content, from_client=False)
        if decoded is None or decoded.type is not rta.Type.EVENT or not decoded.taps:
            return
        found = sweep.Operation.of_tap(decoded.taps[0].resource)
        if found is None:
            return
        operation, resource = found
        if not any(item is self._loaded for item in self.injector.scenarios.loaded):
            self._put(self._scenario())
        situation = catalog.Situation(sweep.faultlist.RTA_METHOD, resource, None, None, None)
        cell = planner.choose(operation, situation)
        if cell is not None:
            self._tap = flow
            self._put(self._scenario(rule_for(cell)))

    def settle_tap(self, flow: http.HTTPFlow) -> None:
        """After the RTA faults addon saw the tap: the RTA cell armed on it is done if its
        rule fired, else pending. A tap has no call to recover: only the quiet gap follows
        (the verdicts judge what the title did: tap-read, rta-resync, rta-reconnect)."""
        planner = self.planner
        if planner is None or flow is not self._tap or planner.armed is None:
            return
        cell, self._tap = planner.armed, None
        loaded = self._loaded
        fired = loaded is not None and any(s.fires for s in loaded.engine.stats())
        self._put(self._scenario())
        if not fired:
            planner.missed(cell)
            return
        planner.fired(cell, run=os.getpid())
        planner.succeeded(cell.operation)
        planner.hold(cell.fault.fault.delay_seconds(random.Random(self.seed)))
        logger.info(f"Sweep: {cell.name} injected; quiet for "
                    f"{planner.quiet_until - self.clock():.1f} s")

    @staticmethod
    def _recovered(planner: sweep.Planner, flow: http.HTTPFlow) -> None:
        if planner.recovering is None or flow.response is None or common.mark(flow) is None:
            return
        if common.provenance(flow).get("source") != "forwarded":
            return
        if catalog.succeeded(flow.response.status_code):
            operation = sweep.Operation.of(flows.request_of(flow))
            if operation is not None:
                planner.succeeded(operation)
