"""`mpsdproxy run` refuses every file of the broken-scenario corpus before it listens.

Each file goes through `master.start`, the same path `run` takes: options are applied
before any server starts, so a bad scenario raises with its file:line and key and no
port is ever bound.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port

from mpsdproxy.addons import master

CORPUS = Path(__file__).resolve().parent / "scenarios_broken"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_run_refuses_before_listening(name: str, tmp_path: Path) -> None:
    want = EXPECTED[name]
    path = CORPUS / name
    port = free_port()
    settings = {
        "mode": ["reverse:http://127.0.0.1:1"],
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "confdir": str(tmp_path),
        "mpsd_scenario": [str(path)],
    }
    with pytest.raises(master.ProxyError) as refused:
        asyncio.run(master.start(settings, quiet_mitmproxy=True))
    assert f"{path}:{want['line']}:" in str(refused.value)
    assert f": {want['key']}: " in str(refused.value)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
