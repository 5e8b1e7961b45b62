"""The engine hands an exchange only to the rules it can concern (`BaseRule.concern`,
`starts_on`): the verdicts, their order and what each rule looked at are the same as
when every rule is handed every exchange."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from collections.abc import Sequence

from test_verdicts import MPSD
from test_verdicts import SCID
from test_verdicts import T0

from mpsdproxy import model
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Facts
from mpsdproxy.verdicts.base import BaseRule

AGENTS = (None, "XboxServicesAPI/2017.01", "XboxServicesAPI SocialManager", "curl")
STATUSES = (200, 200, 201, 204, 404, 408, 409, 412, 429, 500, 503, None)


class EveryRule:
    """Every rule, for every exchange: the engine without its plans."""

    def __init__(self, rules: Sequence[BaseRule]) -> None:
        self.rules = list(rules)

    def rules_for(self, facts: Facts, awake: set[BaseRule]) -> Sequence[BaseRule]:
        return self.rules


def mixed(count: int, seed: int) -> Iterator[model.Exchange]:
    """Exchanges of every kind the rules wait for: retryable failures with and without
    Retry-After, 409, 412, 429, missing sessions, sweep faults, analysed batch calls."""
    rnd = random.Random(seed)
    at = T0
    for seq in range(1, count + 1):
        at += rnd.choice((0.0, 0.01, 0.3, 1.0, 4.0, 30.0))
        session = f"/serviceconfigs/{SCID}/sessiontemplates/t/sessions/s{rnd.randint(1, 3)}"
        path = rnd.choice((session, f"{session}/members/me", f"/serviceconfigs/{SCID}/batch"))
        method = rnd.choice(("GET", "GET", "PUT", "POST", "DELETE"))
        headers = [("Authorization", f"XBL3.0 x={rnd.randint(1, 2)};t")]
        agent = rnd.choice(AGENTS)
        if agent:
            headers.append(("User-Agent", agent))
        body = b""
        if method in ("PUT", "POST"):
            me = rnd.choice((None, {"constants": {"system": {"xuid": "7"}}}))
            body = json.dumps({"xuids": ["1"]} if "batch" in path
                              else {"members": {"me": me}}).encode()
        status = rnd.choice(STATUSES)
        answer: list[tuple[str, str]] = [("ETag", f'"{rnd.randint(1, 3)}"')]
        if status in (429, 503) and rnd.random() < 0.6:
            answer.append(("Retry-After", str(rnd.randint(0, 5))))
        document = json.dumps({"changeNumber": rnd.randint(1, 5), "members": {
            "0": {"constants": {"system": {"xuid": "7"}}}}}).encode()
        response = None if status is None else model.Response(
            status, "", answer, document if status in (200, 201, 412) else b"")
        provenance = rnd.choice((model.FORWARDED,) * 5 + (
            {"source": "injected", "scenario": "sweep", "rule": f"cell-{seq}",
             "phase": "response"},))
        yield model.Exchange(model.Request(method, MPSD + path, headers, body), response,
                             error="reset" if response is None else None, start=at,
                             end=at + rnd.choice((0.0, 0.05, 2.0)), client="10.0.0.1:5",
                             provenance=provenance, seq=seq)


def judged(engine: Engine, exchanges: Iterator[model.Exchange]) -> list[object]:
    out: list[object] = []
    for n, exchange in enumerate(exchanges):
        out.extend((n, v.to_dict()) for v in engine.feed(exchange))
        if n % 50 == 0:
            out.extend(("tick", v.to_dict()) for v in engine.advance(engine.now + 1))
    out.extend(("end", v.to_dict()) for v in engine.finish())
    out.append({rule.id: engine.looked_at(rule.id).to_dict() for rule in engine.rules})
    return out


def test_the_rules_an_exchange_goes_to_decide_what_every_rule_would() -> None:
    for seed in range(3):
        planned, everyone = Engine(max_keys=40), Engine(max_keys=40)
        everyone.plans = EveryRule(everyone.rules)  # type: ignore[assignment]
        found = judged(planned, mixed(3000, seed))
        assert found == judged(everyone, mixed(3000, seed))
        assert len(found) > 100  # the exchanges did decide verdicts all along
