"""Load: 200 concurrent keep-alive clients for 20 s through the full addon stack with
injection on. No record is lost or duplicated and the rule counters are exact.

Bounded in time (20 s of load) and count (each client stops after 2,000 requests).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
from conftest import Launcher
from conftest import read_records

from mpsdproxy import title

CLIENTS = 200
SECONDS = 20.0
EVERY = 7

SCENARIO = f"""\
version: 1
name: load
seed: 1
rules:
  - name: every-{EVERY}th-read
    match: {{method: GET, resource: session}}
    when: {{every: {EVERY}}}
    fault: {{status: 503, retry_after: 1}}
"""


async def _client(n: int, base: str, deadline: float, statuses: Counter[int]) -> None:
    headers = [title.CONTRACT, ("Authorization", f"XBL3.0 x=load{n};t")]
    path = title.session_path(f"load-{n}")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for _ in range(2000):
            if time.monotonic() > deadline:
                return
            response = await http.get(path)
            statuses[response.status_code] += 1


async def _load(base: str) -> Counter[int]:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + SECONDS
    await asyncio.gather(*(_client(n, base, deadline, statuses) for n in range(CLIENTS)))
    return statuses


def test_200_clients_for_20_seconds(launch: Launcher, tmp_path: Path) -> None:
    scenario = tmp_path / "load.yaml"
    scenario.write_text(SCENARIO)
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--scenario", str(scenario),
                         "--quiet")
    statuses = asyncio.run(_load(proxy.url))
    answered = sum(statuses.values())
    assert answered > CLIENTS
    proxy.stop()
    records = read_records(proxy.record)
    assert [r["seq"] for r in records] == list(range(1, answered + 1))
    injected = [r for r in records if r["provenance"]["source"] == "injected"]
    assert len(injected) == answered // EVERY
    assert statuses[503] == len(injected)
    assert f"every-{EVERY}th-read" in proxy.output()
