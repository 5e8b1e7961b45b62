"""YAML files read with the position of every key and value: one loader, one error.

Scenarios, the limits file and the stand-in's config are all read here, so
every one of them reports a problem the same way, as one line
`file:line:column: key.path: what is wrong`, and refuses the same hostile
input (duplicate keys, aliases that contain themselves, documents too large
or too deep, bytes that are not UTF-8) with a message instead of a traceback.
Implicit dates are off: none of these files holds a date, and `seed:
2024-01-01` should be "not an integer", not a date.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import NamedTuple

import yaml

__all__ = [
    "KeyPath",
    "ROOT",
    "Problem",
    "InputError",
    "FieldError",
    "Document",
    "render_key_path",
    "show",
    "describe",
    "read_text",
    "read_file",
]

KeyPath = tuple[str | int, ...]

#: How the whole document is named in a problem's key path.
ROOT = "(document)"
MAX_NODES = 20_000
MAX_DEPTH = 50


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with an input file, placed by line and column (1-based)."""

    path: str
    line: int
    column: int
    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.key_path}: {self.message}"


class InputError(ValueError):
    """A file that cannot be used; `problems` holds every reason found, one line each."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FieldError(ValueError):
    """A problem with one key of a section; `key` is its path below that section."""

    def __init__(self, key: KeyPath, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def within(self, *prefix: str | int) -> FieldError:
        return FieldError((*prefix, *self.key), self.message)


def render_key_path(path: KeyPath) -> str:
    """`("rules", 2, "when", "nth")` -> `rules[2].when.nth`; the empty path is ROOT."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or ROOT


def show(value: Any) -> str:
    """A value the way the user wrote it in YAML, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def describe(value: Any) -> str:
    """What kind of YAML value this is, for type errors."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({show(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    return show(value)


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit dates, whose constructor errors carry a position.

    A scenario holds no dates: `seed: 2024-01-01` should be reported as "not an
    integer", not become a date (or crash on `2024-02-30`).
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {e}", node.start_mark) from e


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Locator:
    """Key path -> where its key and its value start in the file."""

    def __init__(self) -> None:
        self.values: dict[KeyPath, yaml.Mark] = {}
        self.keys: dict[KeyPath, yaml.Mark] = {}

    def value(self, path: KeyPath) -> tuple[int, int]:
        for n in range(len(path), -1, -1):
            mark = self.values.get(path[:n])
            if mark is not None:
                return mark.line + 1, mark.column + 1
        return 1, 1

    def key(self, path: KeyPath) -> tuple[int, int]:
        mark = self.keys.get(path)
        return (mark.line + 1, mark.column + 1) if mark is not None else self.value(path)


class _TooComplex(Exception):
    """The node tree cannot be validated safely (recursive, too large or too deep)."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _Walker:
    """Records the marks of every node and finds duplicate keys, before construction
    (which rewrites merge keys in place)."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.locator = Locator()
        self.duplicates: list[tuple[KeyPath, yaml.Mark, str]] = []
        self.count = 0
        self.active: set[int] = set()

    def walk(self, node: yaml.Node, path: KeyPath = ()) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooComplex(node.start_mark, f"too large: more than {MAX_NODES} YAML nodes")
        if len(path) > MAX_DEPTH:
            raise _TooComplex(node.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in self.active:
            raise _TooComplex(node.start_mark, "an alias refers to a node that contains it")
        self.locator.values.setdefault(path, node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path, set(), duplicates=True)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    self.walk(item, (*path, i))
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, seen: set[Any],
                 duplicates: bool) -> None:
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key in seen:
                if duplicates:
                    first = self.locator.keys[(*path, key)]
                    self.duplicates.append(((*path, key), key_node.start_mark, (
                        f"duplicate key {show(key)} (first given at line {first.line + 1}); "
                        f"YAML would keep only the last")))
                continue
            seen.add(key)
            self.locator.keys[(*path, key)] = key_node.start_mark
            self.walk(value_node, (*path, key))
        for merged in merges:
            sources = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    self._mapping(source, path, seen, duplicates=False)

    def _key(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag != _STR_TAG:
            try:
                return self.loader.construct_object(node)
            except yaml.YAMLError:
                return node.value
        if isinstance(node, yaml.ScalarNode):
            return node.value
        return f"<{node.id} key>"


class Document(NamedTuple):
    """Plain data (None when unreadable), where each key and value is, and the problems
    found while reading (YAML syntax, duplicate keys, too complex)."""

    data: Any
    locator: Locator
    problems: list[Problem]
    def where(self, path: KeyPath, key: bool = False) -> tuple[int, int]:
        """(line, column) of the value at `path` (of its key with `key`), or of the
        nearest enclosing value that exists."""
        return self.locator.key(path) if key else self.locator.value(path)

    def problem(self, path: KeyPath, message: str, source: str, key: bool = False) -> Problem:
        """A Problem placed at `path` in this document."""
        line, column = self.where(path, key)
        return Problem(source, line, column, render_key_path(path), message)


def _yaml_problem(path: str, text: str, e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        return Problem(path, line, column, ROOT, f"invalid YAML: {e.reason} ({char})")
    problem = getattr(e, "problem", None) or str(e)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and problem.startswith("but "):
        problem = f"{context}, {problem}"
    elif context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    if context and ("alias" in context or "anchor" in context):
        problem += "; a value that starts with * or & must be quoted, as in \"*\""
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Problem(path, line, column, ROOT, f"invalid YAML: {problem}")


def read_text(text: str, path: str, empty: str = "the file is empty") -> Document:
    """YAML text -> plain data plus the position of every key and value; `empty` is
    the problem an empty document gets."""
    try:
        loader = _Loader(text)  # the reader rejects control characters right here
    except yaml.YAMLError as e:
        return Document(None, Locator(), [_yaml_problem(path, text, e)])
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, Locator(), [Problem(path, 1, 1, ROOT, empty)])
        walker = _Walker(loader)
        walker.walk(node)
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        return Document(None, Locator(), [_yaml_problem(path, text, e)])
    except _TooComplex as e:
        mark = e.mark
        return Document(None, Locator(), [
            Problem(path, mark.line + 1, mark.column + 1, ROOT, e.message)])
    except RecursionError:
        return Document(None, Locator(), [Problem(path, 1, 1, ROOT, "nested too deeply")])
    finally:
        loader.dispose()
    problems = [Problem(path, mark.line + 1, mark.column + 1, render_key_path(kp), message)
                for kp, mark, message in walker.duplicates]
    return Document(data, walker.locator, problems)


def read_file(path: str | os.PathLike[str], empty: str = "the file is empty") -> Document:
    """Read a UTF-8 YAML file (a BOM is allowed). A file that cannot be read or
    decoded gives a Document with no data and that problem."""
    name = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return Document(None, Locator(), [
            Problem(name, 1, 1, ROOT, f"cannot read the file: {e.strerror or e}")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return Document(None, Locator(), [Problem(name, line, column, ROOT, (
            f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"))])
    return read_text(text, name, empty)
