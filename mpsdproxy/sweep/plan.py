"""Planning a sweep: the cells, their seeded order, one fault at a time, quiet windows.

A cell is one operation the title was seen to make, times one fault of the
list. The planner learns operations as calls go by and, for a call about to go
out, picks the first cell of that operation in seeded order that is not done,
that `--sweep-only` allows and that the service could give in this very
situation (the catalog says: `SweepFault.why_not`). So a cell is injected on a
request it is true for, and a cell no request allows is never injected.

Only one cell is in flight at a time; when it has acted, nothing is injected
until the title made that operation succeed again (or the client library's
20 s retry window passed: libHttpClient Source/HTTP/httpcall.cpp, `ShouldRetry`,
gives up when the window from the first attempt runs out), and then for a quiet
window (the gap, stretched by up to half by a seeded draw per cell), so that
what the title does after each fault is about that one fault. The order is a
seeded shuffle of cell names: the same seed gives the same order whatever
order the operations were learned in.

A request about a session not known to exist (a create, a read of a missing
session) is the only place some faults can be given, and a title makes few, so
there the cells only it allows go first (`Planner.first_where_rare`). Before a
cell is armed it is claimed in the shared state file under a file lock
(`state.SweepState.claim`), so two runs sharing it never inject one cell twice.
"""

from __future__ import annotations

import fnmatch
import random
import re
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

from mpsdproxy import catalog
from mpsdproxy.sweep.faultlist import SweepFault
from mpsdproxy.sweep.operations import Operation
from mpsdproxy.sweep.operations import cell_name
from mpsdproxy.sweep.state import SweepState

__all__ = ["RECOVERY_WINDOW_S", "Cell", "Only", "Planner"]

#: How long a sweep waits at most for the title to make a faulted operation succeed
#: again: the client library's retry window (libHttpClient httpcall.cpp, 20 s).
RECOVERY_WINDOW_S = 20.0


@dataclass(frozen=True, slots=True)
class Cell:
    operation: Operation
    fault: SweepFault

    @property
    def name(self) -> str:
        return cell_name(self.operation, self.fault.name)


def _glob(text: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(text.strip() or "*"), re.IGNORECASE)


class Only:
    """`--sweep-only OPS/FAULTS`: which cells a sweep may inject. Each side is a list of
    globs separated by commas (`PUT session *,GET *` / `412.*,503.*,drop`); a missing side
    means any. Several specs: a cell any of them allows. No spec: every cell."""

    def __init__(self, specs: Sequence[str] = (), flag: str = "--sweep-only") -> None:
        self.specs = tuple(specs)
        self._pairs: list[tuple[list[re.Pattern[str]], list[re.Pattern[str]]]] = []
        for spec in specs:
            ops, _, found = spec.partition("/")
            if not ops.strip() and not found.strip():
                raise ValueError(f"{flag} {spec!r}: expected OPS/FAULTS, e.g. "
                                 "'PUT session */412.*,503.*'")
            self._pairs.append(([_glob(p) for p in ops.split(",")],
                                [_glob(p) for p in (found or "*").split(",")]))

    def allows(self, operation: str, fault: str) -> bool:
        if not self._pairs:
            return True
        return any(any(p.fullmatch(operation) for p in ops)
                   and any(p.fullmatch(fault) for p in found) for ops, found in self._pairs)


class Planner:
    """Which cell to inject next. Pure logic: the caller says what the call is, whether
    its session exists (`catalog.Situation`) and what time it is."""

    def __init__(self, faults: Iterable[SweepFault], *, seed: int = 0, gap: float = 2.0,
                 only: Only | None = None, state: SweepState | None = None,
                 again: Only | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = tuple(faults)
        self.seed = seed
        self.gap = gap
        self.only = only or Only()
        self.state = state or SweepState()
        #: Cells to run again though the state says done (once more, in this run).
        self.again = again
        self.clock = clock
        self.operations: dict[Operation, None] = {}
        self.armed: Cell | None = None
        self.quiet_until = float("-inf")
        self.recovering: Operation | None = None  # the faulted operation, until it succeeds
        self.recover_by = float("-inf")
        self.injected: list[str] = []  # this run's cells, in the order they acted

    # -- the cells -----------------------------------------------------------------------

    def learn(self, operation: Operation) -> bool:
        """Know an operation the title makes; whether it is new."""
        if operation in self.operations:
            return False
        self.operations[operation] = None
        return True

    def _rank(self, name: str) -> float:
        return random.Random(f"{self.seed}:{name}").random()

    def cells(self, operation: Operation | None = None) -> list[Cell]:
        """Every cell `--sweep-only` allows (of one operation, or all), in seeded order."""
        ops = [operation] if operation is not None else list(self.operations)
        found = [Cell(op, f) for op in ops for f in self.faults
                 if self.only.allows(op.name, f.name)]
        return sorted(found, key=lambda c: (self._rank(c.name), c.name))

    def pending(self, operation: Operation | None = None) -> list[Cell]:
        """The allowed cells not done yet (by this run or any run sharing the state)."""
        self.state.refresh()
        return [c for c in self.cells(operation) if not self._done(c)]

    def _done(self, cell: Cell) -> bool:
        if self.again is not None and self.again.specs and cell.name not in self.injected \
                and self.again.allows(cell.operation.name, cell.fault.name):
            return False
        return self.state.done(cell.name)

    # -- one at a time -------------------------------------------------------------------

    def quiet(self, now: float | None = None) -> bool:
        """Whether a fault is in flight or its quiet window has not passed."""
        now = self.clock() if now is None else now
        if self.recovering is not None and now >= self.recover_by:
            self.recovering = None
            self.quiet_until = max(self.quiet_until, self.recover_by)
        return self.armed is not None or self.recovering is not None or now < self.quiet_until

    def choose(self, operation: Operation, situation: catalog.Situation,
               now: float | None = None) -> Cell | None:
        """The cell to inject on this call (it is then in flight), or None."""
        self.learn(operation)
        if self.quiet(now):
            return None
        for cell in self.first_where_rare(self.pending(operation), situation):
            if cell.fault.why_not(situation) is None and self.state.claim(cell.name):
                self.armed = cell
                return cell
        return None

    @staticmethod
    def first_where_rare(cells: list[Cell], situation: catalog.Situation) -> list[Cell]:
        """The cells in seeded order, but on a request about a session not known to exist
        (the first write to a new session name, a read of one that is not there), first
        those only such a request allows (a 404 or 202 on a create, 204 on a read): a
        title makes few of them, so they go to the faults nothing else can reach."""
        if situation.exists is True:
            return cells
        existing = replace(situation, exists=True)
        return sorted(cells, key=lambda c: c.fault.why_not(existing) is None)

    def gap_after(self, cell: Cell) -> float:
        """The quiet window after a cell: the gap, stretched by up to half (seeded)."""
        return self.gap * (1 + 0.5 * random.Random(f"{self.seed}:{cell.name}:gap").random())

    def fired(self, cell: Cell, now: float | None = None, **facts: object) -> None:
        """The cell acted: it is done (for every run sharing the state); quiet follows."""
        now = self.clock() if now is None else now
        self.armed = None
        self.quiet_until = now + self.gap_after(cell)
        self.recovering, self.recover_by = cell.operation, now + RECOVERY_WINDOW_S
        self.injected.append(cell.name)
        self.state.mark(cell.name, seed=self.seed, **facts)

    def succeeded(self, operation: Operation, now: float | None = None) -> None:
        """A call of `operation` got a success from the service: if it was the faulted
        one, the title recovered, and only the quiet window is left."""
        if operation != self.recovering:
            return
        now = self.clock() if now is None else now
        self.recovering = None
        self.quiet_until = max(self.quiet_until, now + self.gap)

    def hold(self, seconds: float, now: float | None = None) -> None:
        """Keep quiet `seconds` more before the gap: a fault that acts later (a delayed
        tap) is still in flight until then."""
        now = self.clock() if now is None else now
        self.quiet_until = max(self.quiet_until, now + seconds + self.gap)

    def missed(self, cell: Cell) -> None:
        """The cell was armed but did not act (the call went elsewhere): still pending,
        and its claim given back for any run sharing the state."""
        if self.armed == cell:
            self.armed = None
            self.state.release(cell.name)
