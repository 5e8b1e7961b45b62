"""The sweep matrix as one self-contained HTML page (Jinja2, `templates/matrix.html`).

A colour table a QA lead reads at a glance (green recovered, red not recovered,
yellow not exercised yet, grey not reachable), each cell a link to its
drill-down: why, the verdicts and the records behind it. The same template
environment as the report (`report/html.py`): autoescape on, every value
printable.
"""

from __future__ import annotations

import hashlib

from mpsdproxy import model
from mpsdproxy.report import html
from mpsdproxy.report.matrix import NOT_EXERCISED
from mpsdproxy.report.matrix import NOT_REACHABLE
from mpsdproxy.report.matrix import NOT_RECOVERED
from mpsdproxy.report.matrix import RECOVERED
from mpsdproxy.report.matrix import Matrix

__all__ = ["render_html"]

LABELS = {RECOVERED: "recovered", NOT_RECOVERED: "not recovered",
          NOT_EXERCISED: "not exercised", NOT_REACHABLE: "not reachable"}
MARKS = {RECOVERED: "✓", NOT_RECOVERED: "✗", NOT_EXERCISED: "?", NOT_REACHABLE: "·"}


def _anchor(name: str) -> str:
    """A cell's id in the page, from its name (any text: by the bytes it stands for)."""
    return "cell-" + hashlib.sha1(model.to_bytes(name)).hexdigest()[:10]


def render_html(matrix: Matrix) -> str:
    template = html._environment().get_template("matrix.html")
    order = {NOT_RECOVERED: 0, NOT_EXERCISED: 1, RECOVERED: 2, NOT_REACHABLE: 3}
    cells = sorted(matrix.cells.values(), key=lambda c: (order[c.state], c.name))
    return template.render(m=matrix, counts=matrix.counts(), labels=LABELS, marks=MARKS,
                           cells=cells, anchors={c.name: _anchor(c.name) for c in cells})
