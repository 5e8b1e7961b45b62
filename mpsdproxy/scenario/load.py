"""Reading scenario files: YAML with positions -> JSON Schema -> sections -> Scenario.

The file shape is fixed by `scenarios/schema.json` (editors with a YAML
language server use it too). Reading goes through `mpsdproxy.yamlfile`, the one
YAML-with-positions loader, so a problem is placed the way compilers do,
`file:line:column: rules[2].when.nth: what is wrong`. The schema's errors are
translated into the file's own words here; what a schema cannot say is
checked by `sections.py`. A file with any problem never becomes a Scenario:
the proxy never runs half a scenario.

A rule whose fault the service could never give for any request its match lets
through (a 405 on PUTs of a session, a 412 with the session on `If-Match: *`
only) is valid, but would never fire: `lint` warns about it, and a scenario
that says `strict: true` is refused instead.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from typing import NamedTuple

import jsonschema

from mpsdproxy import yamlfile
from mpsdproxy.scenario.match import situations
from mpsdproxy.scenario.model import Rule
from mpsdproxy.scenario.model import Scenario
from mpsdproxy.scenario.sections import as_list
from mpsdproxy.scenario.sections import rule_parts
from mpsdproxy.yamlfile import Document
from mpsdproxy.yamlfile import KeyPath
from mpsdproxy.yamlfile import Problem
from mpsdproxy.yamlfile import describe
from mpsdproxy.yamlfile import show

__all__ = [
    "FORMAT_VERSION",
    "Finding",
    "ScenarioError",
    "schema",
    "parse_scenario",
    "load",
    "check",
    "lint",
]

#: The only version of the file format; `version` may be left out.
FORMAT_VERSION = 1

_EMPTY = "the file is empty: a scenario is a mapping with at least rules"

_PACKAGE = Path(__file__).resolve().parent.parent
_SCHEMA_CANDIDATES = (
    _PACKAGE / "data" / "scenario.schema.json",
    _PACKAGE.parent / "scenarios" / "schema.json",
)


class ScenarioError(yamlfile.InputError):
    """A scenario file that cannot be used; `problems` says every reason found."""


# --- schema validation ------------------------------------------------------------------


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (`scenarios/schema.json`), read once."""
    for candidate in _SCHEMA_CANDIDATES:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise RuntimeError(f"the scenario schema is missing (looked for {_SCHEMA_CANDIDATES[-1]})")


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}


class _Found(NamedTuple):
    """One schema problem in the file's words, before it is placed."""

    key_path: KeyPath
    at_key: bool  # placed at the key rather than at its value
    message: str


def _noun(path: KeyPath) -> str:
    names = [p for p in path if isinstance(p, str)]
    return names[-1] if names else "value"


def _with_message(error: jsonschema.ValidationError, inherited: str | None) -> str | None:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    custom = custom or inherited
    return f"{custom}, not {show(error.instance)}" if custom else None


def _same_place(a: jsonschema.ValidationError, b: jsonschema.ValidationError) -> bool:
    return tuple(a.absolute_path) == tuple(b.absolute_path)


def _type_mismatch(error: jsonschema.ValidationError) -> bool:
    """Whether this branch of an anyOf failed because the value has another type."""
    if error.validator == "type":
        return True
    if error.validator == "anyOf":
        return all(_type_mismatch(c) for c in error.context if _same_place(c, error))
    return False


def _branches(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError] | None:
    """The errors of the one anyOf branch the value was evidently meant for, if any."""
    groups: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        groups.setdefault(sub.schema_path[0], []).append(sub)

    def shape_errors(errs: list[jsonschema.ValidationError]) -> int:
        return sum(1 for e in errs if _same_place(e, error)
                   and e.validator in ("required", "additionalProperties", "minProperties"))

    fitting = {i: errs for i, errs in groups.items()
               if not any(_type_mismatch(e) for e in errs if _same_place(e, error))}
    if not fitting:
        return None
    ranked = sorted(fitting.values(), key=shape_errors)
    if len(ranked) > 1 and shape_errors(ranked[0]) == shape_errors(ranked[1]):
        return None
    return ranked[0]


def _translate(error: jsonschema.ValidationError, inherited: str | None = None) -> list[_Found]:
    """A jsonschema error -> problems in the file's own words."""
    path = tuple(error.absolute_path)
    keyword = error.validator
    if keyword == "anyOf":
        branch = _branches(error)
        if branch is not None:
            own = error.schema.get("errorMessage") or inherited
            out: list[_Found] = []
            for sub in branch:
                out += _translate(sub, own if tuple(sub.absolute_path) == path else None)
            return out
        message = _with_message(error, inherited)
        return [_Found(path, False, message or f"{show(error.instance)} is not valid here")]
    if "propertyNames" in error.absolute_schema_path:
        return [_Found((*path, error.instance), True,
                       _with_message(error, None) or f"{show(error.instance)} is not a valid key")]
    if keyword == "additionalProperties":
        return _unknown_keys(error, path)
    if keyword == "required":
        return [_Found((*path, name), False, f"missing required key {name!r}")
                for name in error.validator_value if name not in error.instance]
    return [_Found(path, False, _value_message(error, path, inherited))]


def _unknown_keys(error: jsonschema.ValidationError, path: KeyPath) -> list[_Found]:
    known = list(error.schema.get("properties", {}))
    out: list[_Found] = []
    for key in error.instance:
        if key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        message = f"unknown key {show(key)}"
        if hint:
            message += f"; did you mean {hint[0]!r}?"
        message += f" (valid keys here: {', '.join(known)})"
        out.append(_Found((*path, key), True, message))
    return out


def _value_message(error: jsonschema.ValidationError, path: KeyPath,
                   inherited: str | None) -> str:
    keyword, value, limit = error.validator, error.instance, error.validator_value
    custom = _with_message(error, inherited)
    if keyword == "type":
        types = as_list(limit)
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in types)
        return custom or f"expected {wanted}, not {describe(value)}"
    if keyword == "enum":
        valid = ", ".join(str(v) for v in limit)
        return f"{show(value)} is not a valid {_noun(path)}; valid values are: {valid}"
    if keyword == "minItems" and path == ("rules",):
        return "a scenario needs at least one rule"
    if keyword in ("minProperties", "maxProperties"):
        keys = ", ".join(error.schema.get("properties", {}))
        return f"give exactly one of: {keys}"
    if custom and keyword in _VALUE_KEYWORDS:
        return custom
    return _bound_message(keyword, value, limit) or custom or error.message


#: Keywords about the value itself, where a schema's own errorMessage says it best.
_VALUE_KEYWORDS = frozenset({"type", "pattern", "const", "minimum", "maximum",
                             "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"})


def _bound_message(keyword: str, value: Any, limit: Any) -> str | None:
    if keyword == "minimum":
        return f"must be at least {limit}, not {show(value)}"
    if keyword == "maximum":
        return f"must be at most {limit}, not {show(value)}"
    if keyword == "minItems":
        return f"needs at least {limit} item{'s' if limit != 1 else ''}"
    if keyword == "maxItems":
        return f"takes at most {limit} item{'s' if limit != 1 else ''}, not {len(value)}"
    if keyword == "uniqueItems":
        return "lists the same value twice"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"is longer than {limit} characters"
    return None


def _schema_problems(doc: Document, path: str) -> list[tuple[KeyPath, Problem]]:
    out = []
    for error in _validator().iter_errors(doc.data):
        for found in _translate(error):
            problem = doc.problem(found.key_path, found.message, path, key=found.at_key)
            out.append((found.key_path, problem))
    return out


# --- building the scenario --------------------------------------------------------------


def _version_problem(doc: Document, path: str) -> Problem | None:
    """A wrong version explains every other problem, so it is reported alone."""
    if not isinstance(doc.data, dict) or "version" not in doc.data:
        return None
    version = doc.data["version"]
    if version == FORMAT_VERSION and not isinstance(version, bool):
        return None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        message = (f"version {version} is newer than this mpsdproxy reads (version "
                   f"{FORMAT_VERSION}): upgrade mpsdproxy, or write the file for version 1")
    else:
        message = (f"unknown scenario version {show(version)}: the only version is "
                   f"{FORMAT_VERSION} (write version: 1 or leave it out)")
    return doc.problem(("version",), message, path)


def _duplicate_names(rules: list[Any], doc: Document, path: str) -> list[Problem]:
    seen: dict[str, int] = {}
    out = []
    for i, raw in enumerate(rules):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        first = seen.setdefault(name.lower(), i)
        if first != i:
            out.append(doc.problem(("rules", i, "name"), (
                f"the rule name {name!r} is already used by rules[{first}] "
                f"(names must be unique, ignoring case)"), path))
    return out


def _build(doc: Document, path: str, flagged: set[KeyPath]) -> tuple[list[Rule], list[Problem]]:
    """Every rule the schema found sound -> Rule, plus the semantic problems found."""
    rules_raw = doc.data.get("rules") if isinstance(doc.data, dict) else None
    if not isinstance(rules_raw, list):
        return [], []
    problems = _duplicate_names(rules_raw, doc, path)
    rules = []
    for i, raw in enumerate(rules_raw):
        if any(fp[:2] == ("rules", i) or fp == ("rules",) for fp in flagged):
            continue
        rule, errors = rule_parts(raw, i)
        problems += [doc.problem(("rules", i, *e.key), e.message, path) for e in errors]
        if rule is not None:
            rules.append(rule)
    return rules, problems


def _default_name(path: str) -> str:
    stem = Path(path).stem if not path.startswith("<") else "scenario"
    return stem or "scenario"


def _finish(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.line, p.column, p.key_path, p.message))


def _never_fires(rule: Rule) -> str | None:
    """Why the rule's fault cannot apply to any request its match lets through (None when
    it can apply to some): the catalog's reason for the first sort of request."""
    first: str | None = None
    for situation in situations(rule.match):
        reason = rule.fault.why_not(situation)
        if reason is None:
            return None
        first = first or reason
    return first


def _fault_key(doc: Document, index: int) -> KeyPath:
    """Where a rule's answer is written: its status, else its entry, else its fault."""
    rule = doc.data["rules"][index]
    fault = rule.get("fault") if isinstance(rule, dict) else None
    key = next((k for k in ("status", "entry") if isinstance(fault, dict) and k in fault), None)
    return ("rules", index, "fault", key) if key else ("rules", index, "fault")


def _unreachable(doc: Document, path: str, rules: Iterable[Rule]) -> list[Problem]:
    """One problem per rule that can never fire as the service would."""
    out = []
    for rule in rules:
        reason = _never_fires(rule)
        if reason is not None:
            out.append(doc.problem(_fault_key(doc, rule.index), (
                f"rule {rule.name!r} never fires as the service would answer: {reason}, on "
                f"every request its match lets through; change the match, or write "
                f"force: true to answer so anyway"), path))
    return out


def _scenario(doc: Document, path: str, refuse: bool = True) -> Scenario:
    """A document as read -> Scenario, or ScenarioError with every problem found; with
    `refuse`, a strict scenario's rules that can never fire are problems too."""
    if doc.data is None and doc.problems:
        raise ScenarioError(doc.problems)
    version = _version_problem(doc, path)
    if version is not None:
        raise ScenarioError([version])
    found = _schema_problems(doc, path)
    flagged = {key_path for key_path, _ in found}
    rules, semantic = _build(doc, path, flagged)
    problems = _finish(doc.problems + [p for _, p in found] + semantic)
    if problems:
        raise ScenarioError(problems)
    data = doc.data
    strict = bool(data.get("strict", False))
    if strict and refuse:
        unreachable = _unreachable(doc, path, rules)
        if unreachable:
            raise ScenarioError(_finish(unreachable))
    return Scenario(
        name=data.get("name") or _default_name(path),
        description=data.get("description", ""),
        seed=int(data.get("seed", 0)),
        rules=tuple(rules),
        path=path,
        strict=strict,
    )


def parse_scenario(text: str, path: str = "<string>") -> Scenario:
    """Scenario YAML text -> Scenario. Raises ScenarioError listing every problem found;
    `path` only names the file in the problems."""
    return _scenario(yamlfile.read_text(text, path, empty=_EMPTY), path)


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ScenarioError (a ValueError) whose
    message is one `file:line:column: key.path: what is wrong` line per problem."""
    return _scenario(yamlfile.read_file(path, empty=_EMPTY), str(path))


def check(paths: Iterable[str | Path]) -> list[str]:
    """Every problem of every file, one line each; an empty list means all are valid."""
    lines: list[str] = []
    for path in paths:
        try:
            load(path)
        except ScenarioError as e:
            lines += [str(p) for p in e.problems]
    return lines


class Finding(NamedTuple):
    """A rule that can never fire as the service would: a warning, or, when its scenario
    says `strict: true`, a reason the file is refused (`check` lists it too)."""

    problem: Problem
    refused: bool

    def __str__(self) -> str:
        return str(self.problem)


def lint(paths: Iterable[str | Path]) -> list[Finding]:
    """Every rule, in every valid file (or one refused only for such rules), that can never
    fire as the service would; files with other problems are left to `check`."""
    findings: list[Finding] = []
    for path in paths:
        doc = yamlfile.read_file(path, empty=_EMPTY)
        try:
            loaded = _scenario(doc, str(path), refuse=False)
        except ScenarioError:
            continue
        findings += [Finding(p, loaded.strict)
                     for p in _unreachable(doc, str(path), loaded.rules)]
    return findings
