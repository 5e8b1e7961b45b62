"""The fault sweep: every fault the service can give, at every call the title makes.

No mitmproxy here (the addon `addons/sweep.py` drives it); split by job:

- `operations.py` the Operation key a call is learned as (method, resource kind, template;
                  `RTA tap TEMPLATE` for the shoulder taps of a session template)
- `faultlist.py`  the faults a sweep tries on an operation, each a `scenario.Fault` the
                  injector already knows how to give, and whether the catalog allows it
- `plan.py`       the cells (operation x fault), their seeded order, the `--sweep-only`
                  filter, one fault at a time with a quiet window after each
- `state.py`      the small JSON file of cells done, shared by several proxy runs; a
                  run claims a cell in it before injecting, under `filelock.py`
- `filelock.py`   an OS lock on a side file (`STATE.lock`): fcntl on POSIX, msvcrt on
                  Windows, so two runs never claim one cell
- `lobby.py`      a scripted lobby title that plays while a sweep injects (`mpsdproxy demo`)
"""

from mpsdproxy.sweep.faultlist import SCENARIO_NAME
from mpsdproxy.sweep.faultlist import SweepFault
from mpsdproxy.sweep.faultlist import fault_list
from mpsdproxy.sweep.operations import CELL_SEPARATOR
from mpsdproxy.sweep.operations import Operation
from mpsdproxy.sweep.operations import cell_name
from mpsdproxy.sweep.operations import split_cell
from mpsdproxy.sweep.plan import Cell
from mpsdproxy.sweep.plan import Only
from mpsdproxy.sweep.plan import Planner
from mpsdproxy.sweep.state import SweepState

__all__ = [
    "CELL_SEPARATOR",
    "SCENARIO_NAME",
    "Cell",
    "Only",
    "Operation",
    "Planner",
    "SweepFault",
    "SweepState",
    "cell_name",
    "fault_list",
    "split_cell",
]
