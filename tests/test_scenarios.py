"""The scenarios in force, through the injector's options and commands: loading, order,
switches, counters, hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from injector_kit import HOPPER
from injector_kit import LOBBY
from injector_kit import ROOT
from injector_kit import Clock
from injector_kit import Rig
from injector_kit import bump
from injector_kit import make_flow
from injector_kit import provenance
from injector_kit import rig
from injector_kit import rule
from injector_kit import scenario_text
from injector_kit import write
from mitmproxy import exceptions
from mitmproxy.test import taddons

from mpsdproxy import model
from mpsdproxy.addons import injector
from mpsdproxy.addons import router
from mpsdproxy.addons import scenarios

# --- options ------------------------------------------------------------------------------

def test_inert_without_a_scenario(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(router.Router(), inj):
        f = make_flow()
        assert inj.request(f) is None
        assert f.response is None and f.error is None


def test_configure_loads_every_scenario_and_logs_it(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    one = scenario_text(rule("a", "{status: 503}"), name="one")
    two = scenario_text(rule("b", "{status: 429}"), name="two", seed=9)
    with rig(tmp_path, one, two) as rg:
        assert [item.scenario.name for item in rg.inj.scenarios.loaded] == ["one", "two"]
        assert rg.rules() == ["a", "b"]
    assert "scenario two (seed 9), 1 rule(s): b" in caplog.text


def test_a_broken_scenario_is_refused_and_the_previous_one_stays(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.yaml", "name: broken\nrules:\n  - name: x\n"
                                             "    when: {nth: 0}\n    fault: {status: 503}\n")
    with rig(tmp_path, scenario_text(rule("good", "{status: 503}"))) as rg:
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore[union-attr]
        engine = rg.inj.scenarios.loaded[0].engine
        with pytest.raises(exceptions.OptionsError,
                           match=r"broken\.yaml:4:\d+: rules\[0\]\.when\.nth: must be at least 1"):
            rg.tctx.configure(rg.inj, mpsd_scenario=[broken])
        assert rg.tctx.options.mpsd_scenario == [str(tmp_path / "scenario-0.yaml")]
        assert [item.engine for item in rg.inj.scenarios.loaded] == [engine]  # counters and all
        assert rg.stats() == {"good": (1, 1)}
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore[union-attr]


def test_every_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "rules: []\n")
    b = write(tmp_path / "b.yaml", "rules:\n  - name: x\n    fault: {status: 299}\n")
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(inj, mpsd_scenario=[a, b])
    assert "a.yaml:1:" in str(e.value) and "b.yaml:3:" in str(e.value)
    assert inj.scenarios.loaded == []


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError, match="nope.yaml:1:1: .*cannot read"):
            tctx.configure(inj, mpsd_scenario=[str(tmp_path / "nope.yaml")])


# --- rules in order, scenarios in order --------------------------------------------------------

def test_the_first_rule_that_fires_wins_and_the_others_still_count(tmp_path: Path) -> None:
    text = scenario_text(rule("first", "{status: 503}", when="{nth: 1}"),
                         rule("second", "{status: 429}", when="{nth: 2}"),
                         rule("puts", "{status: 409}", match="{method: PUT}"))
    with rig(tmp_path, text) as rg:
        statuses = [rg.exchange(make_flow()).response.status_code  # type: ignore[union-attr]
                    for _ in range(3)]
        assert statuses == [503, 429, 200]
        assert rg.stats() == {"first": (3, 1), "second": (3, 1), "puts": (0, 0)}


def test_a_request_one_scenario_answered_is_not_counted_by_the_next(tmp_path: Path) -> None:
    one = scenario_text(rule("a", "{status: 503}", when="{nth: 1}"), name="one")
    two = scenario_text(rule("b", "{status: 429}", when="{nth: 1}"), name="two")
    with rig(tmp_path, one, two) as rg:
        statuses = [rg.exchange(make_flow()).response.status_code  # type: ignore[union-attr]
                    for _ in range(3)]
        assert statuses == [503, 429, 200]
        assert rg.stats() == {"a": (3, 1), "b": (2, 1)}
        g = rg.exchange(make_flow())
        assert provenance(g) == {"source": "forwarded"}


def test_provenance_names_the_scenario_and_its_seed(tmp_path: Path) -> None:
    text = scenario_text(rule("x", "{status: 503}"), name="lobby-pass", seed=77)
    with rig(tmp_path, text) as rg:
        f = rg.exchange(make_flow())
    assert provenance(f)["scenario"] == "lobby-pass" and provenance(f)["seed"] == 77


# --- the shipped scenarios, on a fake clock ----------------------------------------------------

def test_shipped_outage_fires_exactly_in_its_windows(tmp_path: Path) -> None:
    clock = Clock(5000.0)
    inj = injector.FaultInjector(clock=clock)
    with taddons.context(router.Router(), inj) as tctx:
        tctx.configure(inj, mpsd_scenario=[str(ROOT / "mpsdproxy" / "scenarios" / "outage.yaml")])
        rg = Rig(tctx, inj, tctx.master.addons.get("router"))

        def status_at(offset: float, path: str = LOBBY) -> int:
            clock.now = 5000.0 + offset
            return rg.exchange(make_flow("GET", path)).response.status_code  # type: ignore

        assert [status_at(t) for t in (0, 29.9, 30, 49.9, 50, 119.9)] == \
               [200, 200, 503, 503, 200, 200]
        assert status_at(120) == 503 and status_at(124.9, f"{LOBBY}/members/me") == 503
        assert status_at(122, HOPPER) == 200  # the aftershock spares everything else
        assert status_at(125) == 200
        clock.now = 5035.0
        f = rg.exchange(make_flow())
        assert f.response.headers["Retry-After"] == "5"  # type: ignore[union-attr]
        assert rg.stats() == {"outage": (11, 3), "aftershock": (10, 2)}


# --- kill switch and commands ------------------------------------------------------------------

def test_the_kill_switch_stops_all_injection_and_counting(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with rig(tmp_path, scenario_text(rule("all", "{status: 503}"))) as rg:
        rg.tctx.command(rg.inj.inject_off)
        assert rg.tctx.options.mpsd_inject is False
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
        assert rg.stats() == {"all": (0, 0)}
        rg.tctx.command(rg.inj.inject_on)
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        rg.tctx.configure(rg.inj, mpsd_inject=False)
        assert rg.exchange(make_flow()).response.status_code == 200  # type: ignore
    assert "Fault injection is off" in caplog.text and "Fault injection is on" in caplog.text
    assert any(r.levelname == "ALERT" for r in caplog.records)


def test_rules_switch_off_and_on_by_name(tmp_path: Path) -> None:
    text = scenario_text(rule("Outage", "{status: 503}"), rule("fgrl", "{status: 429}"))
    with rig(tmp_path, text) as rg:
        rg.tctx.command(rg.inj.rule_disable, "outage")
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        rg.tctx.command(rg.inj.rule_enable, "OUTAGE")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        with pytest.raises(exceptions.CommandError,
                           match="No rule named 'nope'. Valid rules are: Outage, fgrl"):
            rg.tctx.command(rg.inj.rule_disable, "nope")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore


def test_scenarios_switch_off_and_on_by_name(tmp_path: Path) -> None:
    one = scenario_text(rule("a", "{status: 503}"), name="one")
    two = scenario_text(rule("b", "{status: 429}"), name="two")
    with rig(tmp_path, one, two) as rg:
        rg.tctx.command(rg.inj.scenario_disable, "one")
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        rg.tctx.command(rg.inj.scenario_enable, "one")
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        with pytest.raises(exceptions.CommandError, match="Valid scenarios are: one, two"):
            rg.tctx.command(rg.inj.scenario_enable, "three")


def test_counters_are_logged_and_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with rig(tmp_path, scenario_text(rule("once", "{status: 503}", when="{nth: 1}"))) as rg:
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        rg.exchange(make_flow())
        rg.tctx.command(rg.inj.counters)
        assert "test: once: 2 matched, 1 fired" in caplog.text
        rg.tctx.command(rg.inj.counters_reset)
        assert rg.stats() == {"once": (0, 0)}
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore


def test_commands_are_registered_with_help(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        names = set(tctx.master.commands.commands)
        for name in ("mpsd.inject.on", "mpsd.inject.off", "mpsd.rule.enable",
                     "mpsd.rule.disable", "mpsd.counters", "mpsd.counters.reset"):
            assert name in names
            assert tctx.master.commands.commands[name].help
        tctx.master.commands.execute("mpsd.inject.off")
        assert tctx.options.mpsd_inject is False


def test_done_prints_and_logs_each_rules_counts(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    text = scenario_text(rule("a", "{status: 503}", when="{nth: 2}"),
                         rule("b", "{status: 429}", match="{method: PUT}"))
    with rig(tmp_path, text) as rg:
        for _ in range(3):
            rg.exchange(make_flow())
        rg.inj.done()
    out = capsys.readouterr().out
    assert "test: a: 3 matched, 1 fired" in out and "test: b: 0 matched, 0 fired" in out
    assert "test: a: 3 matched, 1 fired" in caplog.text


# --- hot reload --------------------------------------------------------------------------------

def test_a_good_edit_is_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock(100.0)
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}")), clock=clock) as rg:
        path = rg.inj.scenarios.loaded[0].path
        start = rg.inj.scenarios.loaded[0].engine.start
        assert rg.inj.scenarios.reload_changed() == []  # nothing changed yet
        write(Path(path), scenario_text(rule("new", "{status: 429}")))
        bump(path)
        assert rg.inj.scenarios.reload_changed() == [path]
        assert rg.rules() == ["new"]
        assert rg.inj.scenarios.loaded[0].engine.start == start  # windows count from the start
        assert rg.exchange(make_flow()).response.status_code == 429  # type: ignore
        assert rg.inj.scenarios.reload_changed() == []
    assert f"Reloaded {path}" in caplog.text


def test_a_broken_edit_is_reported_once_and_the_old_scenario_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.scenarios.loaded[0].path
        write(Path(path), "name: x\nrules:\n  - name: y\n    fault: {status: 999}\n")
        bump(path)
        assert rg.inj.scenarios.reload_changed() == []
        assert rg.inj.scenarios.reload_changed() == []
        assert rg.rules() == ["old"]
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
        assert caplog.text.count("Not reloading") == 1
        assert f"{path}:4:" in caplog.text and "rules[0].fault.status" in caplog.text
        write(Path(path), scenario_text(rule("fixed", "{status: 429}")))
        bump(path)
        assert rg.inj.scenarios.reload_changed() == [path]
        assert rg.rules() == ["fixed"]


def test_a_deleted_file_keeps_the_scenario_in_force(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.scenarios.loaded[0].path
        os.unlink(path)
        assert rg.inj.scenarios.reload_changed() == [] and rg.inj.scenarios.reload_changed() == []
        assert rg.exchange(make_flow()).response.status_code == 503  # type: ignore
    assert caplog.text.count(f"Cannot read mpsd_scenario file {path}") == 1


def test_the_watcher_reloads_while_running(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenarios, "RELOAD_INTERVAL", 0.05)
    with rig(tmp_path, scenario_text(rule("old", "{status: 503}"))) as rg:
        path = rg.inj.scenarios.loaded[0].path

        async def edit_while_running() -> None:
            rg.inj.running()
            write(Path(path), scenario_text(rule("new", "{status: 429}")))
            bump(path)
            for _ in range(100):
                if rg.rules() == ["new"]:
                    break
                await asyncio.sleep(0.02)
            rg.inj.done()

        asyncio.run(edit_while_running())
        assert rg.rules() == ["new"]
        assert rg.inj.scenarios.watcher is None


# --- only where the service could answer so -----------------------------------------------

def test_evaluate_passes_what_the_proxy_knows_of_the_session(tmp_path: Path) -> None:
    path = write(tmp_path / "stale.yaml", scenario_text(
        rule("stale", "{status: 412}", match="{method: PUT}")))
    loaded = scenarios.Scenarios(origin=0.0)
    loaded.load([str(path)])
    url = f"https://sessiondirectory.xboxlive.com{LOBBY}"
    star = model.Request("PUT", url, [("If-Match", "*")])
    etag = model.Request("PUT", url, [("If-Match", '"e1"')])
    assert loaded.evaluate(star, scenarios.Phase.REQUEST, 1.0, client="", user="",
                           exists=True) is None
    assert loaded.evaluate(etag, scenarios.Phase.REQUEST, 1.0, client="", user="") is None
    hit = loaded.evaluate(etag, scenarios.Phase.REQUEST, 1.0, client="", user="", exists=True)
    assert hit is not None and hit.rule.name == "stale"
    (line,) = loaded.count_lines()
    assert line.startswith("test: stale: 1 matched, 1 fired, 2 not applicable (412.if-match-")
    assert line.endswith("the proxy has not seen this session yet)")
