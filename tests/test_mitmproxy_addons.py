"""mitmproxy's own addons under `mpsdproxy run`: grouped so that mitmproxy walks a few
entries per event instead of 35 (`master.AddonGroup`), they still act on every flow, and
a user's script that raises keeps neither the grouped addons nor the mpsdproxy chain from
the exchange. Over real runs of the proxy in front of the stand-in."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import Launcher
from conftest import read_records
from mitmproxy import io

from mpsdproxy.addons.master import AddonGroup
from mpsdproxy.addons.master import group_addons

HEADERS = {"Authorization": "XBL3.0 x=1234;token", "x-xbl-contract-version": "107"}
PATH = "/serviceconfigs/00000000-0000-0000-0000-000000000000/sessiontemplates/t/sessions/s"

RAISING_SCRIPT = (
    "class Raises:\n"
    "    def requestheaders(self, flow):\n"
    "        raise RuntimeError('the script broke on ' + flow.request.path)\n\n"
    "addons = [Raises()]\n"
)


def _flows(path: Path) -> list[object]:
    with open(path, "rb") as file:
        return list(io.FlowReader(file).stream())


def test_grouped_mitmproxy_addons_still_act_on_each_flow(launch: Launcher,
                                                         tmp_path: Path) -> None:
    """modify_headers (before the mpsdproxy chain) and save (after it) each do their job."""
    standin = launch.standin()
    saved = tmp_path / "saved.flows"
    proxy = launch.proxy("--mode", f"reverse:{standin.url}",
                         "--set", "modify_headers=/~s/X-Grouped/yes",
                         "--set", f"save_stream_file={saved}")
    answer = httpx.get(proxy.url + PATH, headers=HEADERS, timeout=10)
    assert answer.status_code == 404  # the stand-in's: no such session
    assert answer.headers.get("X-Grouped") == "yes"
    assert proxy.stop() == 0
    assert [r["response"]["status"] for r in read_records(proxy.record)] == [404]
    assert len(_flows(saved)) == 1


def test_a_raising_script_keeps_no_other_addon_from_the_exchange(launch: Launcher,
                                                                 tmp_path: Path) -> None:
    """The script loader keeps a guard of its own: the script's error is logged, and the
    grouped addons after it and the mpsdproxy chain still see the request."""
    standin = launch.standin()
    script = tmp_path / "raises.py"
    script.write_text(RAISING_SCRIPT, encoding="utf-8")
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--set", f"scripts={script}",
                         "--set", "modify_headers=/~q/X-Grouped/yes")
    answer = httpx.get(proxy.url + PATH, headers=HEADERS, timeout=10)
    assert answer.status_code == 404
    assert "the script broke on" in proxy.wait_output("the script broke on")
    assert proxy.stop() == 0
    [record] = read_records(proxy.record)
    sent = {name.lower(): value for name, value in record["request"]["headers"]}
    assert sent.get("x-grouped") == "yes"  # modify_headers ran after the script's error


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_group_addons_keeps_order_and_leaves_the_guarded_alone() -> None:
    a, b, guarded, c, d, e, last = (_Named(n) for n in "ab*cde*")
    grouped = group_addons([a, b, guarded, c, d, e, last], lambda x: x.name == "*")
    assert [type(x) for x in grouped] == [AddonGroup, _Named, AddonGroup, _Named]
    assert grouped[0].addons == [a, b] and grouped[2].addons == [c, d, e]
    assert grouped[1] is guarded and grouped[3] is last


def test_group_addons_leaves_a_run_of_one_as_it_is() -> None:
    a, guarded, b = _Named("a"), _Named("*"), _Named("b")
    assert group_addons([a, guarded, b], lambda x: x.name == "*") == [a, guarded, b]
    assert group_addons([], lambda x: True) == []
