"""The outcome of a diff, and its stable JSON form (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.diff.compare import PairDiff
from mpsdproxy.diff.side import Side

__all__ = ["DiffResult", "exit_code"]


@dataclass(frozen=True)
class DiffResult:
    old_path: str
    new_path: str
    ignore: tuple[str, ...]
    ignore_timestamps: bool
    pairs: int
    changes: tuple[PairDiff, ...]
    unpaired_old: tuple[Side, ...]
    unpaired_new: tuple[Side, ...]
    issues: tuple[recording.ReadIssue, ...] = field(default=())

    @property
    def regressed(self) -> bool:
        return bool(self.changes or self.unpaired_old or self.unpaired_new)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form; text from the recordings goes through `model.printable`,
        so it is always valid UTF-8."""
        unpaired = [e.summary("old") for e in self.unpaired_old]
        unpaired += [e.summary("new") for e in self.unpaired_new]
        return model.printable_data({
            "version": 1,
            "old": self.old_path,
            "new": self.new_path,
            "regressed": self.regressed,
            "ignore": list(self.ignore),
            "ignore_timestamps": self.ignore_timestamps,
            "summary": {
                "pairs": self.pairs,
                "changed": len(self.changes),
                "unpaired_old": len(self.unpaired_old),
                "unpaired_new": len(self.unpaired_new),
            },
            "changes": [c.to_dict() for c in self.changes],
            "unpaired": unpaired,
            "issues": [{"file": i.path, "line": i.line, "problem": i.problem}
                       for i in self.issues],
        })

    def to_json(self) -> str:
        return jsonbody.document(self.to_dict())


def exit_code(result: DiffResult) -> int:
    """The CLI's exit status: 0 when nothing regressed, 1 otherwise (CI gates on it)."""
    return 1 if result.regressed else 0
