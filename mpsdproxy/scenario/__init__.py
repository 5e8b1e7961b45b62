"""Scenario files: YAML -> a validated, immutable Scenario, and the engine that applies it.

A scenario is a list of rules; each says which requests it concerns (`match`),
when it fires (`when`) and what it does (`fault`):

    name: lobby-under-pressure
    seed: 7
    rules:
      - name: stale-etag-on-join
        match: {method: PUT, resource: session, headers: {If-Match: '"*'}}
        when: {nth: 2}
        fault: {status: 412}

The package is split by job:

- `model.py`     the records (Scenario, Rule, Match, When, Fault, delays) and value parsers
- `sections.py`  a rule's sections (match, when, fault) -> records, with the checks a
                 schema cannot express
- `load.py`      files -> Scenario: YAML with positions (`mpsdproxy.yamlfile`), the JSON
                 Schema, `file:line:column: key.path: message` problems
- `match.py`     whether a `model.Request` is one a rule concerns (for `tap:`/`rta:` rules,
                 an RTA message described as the request for what it names)
- `engine.py`    triggers, counters and the Engine that picks the rule that fires

A rule fires only where the service could give its answer (the catalog decides,
`Fault.why_not`); `lint` names rules that never could, `force: true` overrides.

Nothing here imports mitmproxy; the injector addon translates flows to
`model.Request` and the engine's `Firing` back.
"""

from mpsdproxy.scenario.engine import MAX_SCOPES
from mpsdproxy.scenario.engine import Counters
from mpsdproxy.scenario.engine import Engine
from mpsdproxy.scenario.engine import Firing
from mpsdproxy.scenario.engine import RuleStats
from mpsdproxy.scenario.engine import Trigger
from mpsdproxy.scenario.load import FORMAT_VERSION
from mpsdproxy.scenario.load import Finding
from mpsdproxy.scenario.load import ScenarioError
from mpsdproxy.scenario.load import check
from mpsdproxy.scenario.load import lint
from mpsdproxy.scenario.load import load
from mpsdproxy.scenario.load import parse_scenario
from mpsdproxy.scenario.load import schema
from mpsdproxy.scenario.match import Matcher
from mpsdproxy.scenario.match import matches
from mpsdproxy.scenario.match import situations
from mpsdproxy.scenario.model import RESOURCE_KINDS
from mpsdproxy.scenario.model import THROTTLE_ENTRY
from mpsdproxy.scenario.model import Channel
from mpsdproxy.scenario.model import Delay
from mpsdproxy.scenario.model import Fault
from mpsdproxy.scenario.model import FixedDelay
from mpsdproxy.scenario.model import Glob
from mpsdproxy.scenario.model import HeaderMatch
from mpsdproxy.scenario.model import LognormalDelay
from mpsdproxy.scenario.model import Match
from mpsdproxy.scenario.model import Origin
from mpsdproxy.scenario.model import Per
from mpsdproxy.scenario.model import Phase
from mpsdproxy.scenario.model import RtaAction
from mpsdproxy.scenario.model import RtaFault
from mpsdproxy.scenario.model import Rule
from mpsdproxy.scenario.model import Scenario
from mpsdproxy.scenario.model import TapAction
from mpsdproxy.scenario.model import TapFault
from mpsdproxy.scenario.model import UniformDelay
from mpsdproxy.scenario.model import When
from mpsdproxy.scenario.model import parse_duration
from mpsdproxy.scenario.model import parse_glob
from mpsdproxy.scenario.sections import parse_delay
from mpsdproxy.scenario.sections import parse_fault
from mpsdproxy.scenario.sections import parse_match
from mpsdproxy.scenario.sections import parse_rule
from mpsdproxy.scenario.sections import parse_when
from mpsdproxy.yamlfile import ROOT
from mpsdproxy.yamlfile import FieldError
from mpsdproxy.yamlfile import Problem

__all__ = [
    "FORMAT_VERSION",
    "ROOT",
    "MAX_SCOPES",
    "THROTTLE_ENTRY",
    "Phase",
    "Per",
    "Channel",
    "TapAction",
    "TapFault",
    "RtaAction",
    "RtaFault",
    "Origin",
    "RESOURCE_KINDS",
    "Problem",
    "ScenarioError",
    "FieldError",
    "Glob",
    "HeaderMatch",
    "Match",
    "Matcher",
    "matches",
    "situations",
    "When",
    "FixedDelay",
    "UniformDelay",
    "LognormalDelay",
    "Delay",
    "Fault",
    "Rule",
    "Scenario",
    "parse_duration",
    "parse_glob",
    "parse_delay",
    "parse_match",
    "parse_when",
    "parse_fault",
    "parse_rule",
    "parse_scenario",
    "load",
    "check",
    "lint",
    "Finding",
    "schema",
    "Counters",
    "Trigger",
    "Firing",
    "RuleStats",
    "Engine",
]
