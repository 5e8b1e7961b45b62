"""`emulate --world-from`: the stand-in learns the SCIDs, templates and hoppers a recording's
calls name, so a capture made against the real service can be re-sent to it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import Launcher

from mpsdproxy import classify
from mpsdproxy import emulator
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.emulator import world

HOST = "https://sessiondirectory.xboxlive.com"
SCID = "0b1e2f3a-0000-4000-8000-00000000c0de"  # a title's own, unknown to the shipped config
CONSTANTS = {"system": {"version": 1, "maxMembersCount": 6, "visibility": "open"},
             "custom": {"mapSet": "arena"}}
SESSION = f"/serviceconfigs/{SCID}/sessionTemplates/ArenaLobby/sessions/match-1"
HEADERS = {"x-xbl-contract-version": "107", "Authorization": "XBL3.0 x=ann;token-of-ann"}


def _record(method: str, path: str, status: int, answer: Any = None) -> dict[str, Any]:
    body = json.dumps(answer).encode() if answer is not None else b""
    response = model.Response(status, "OK", [("Content-Type", "application/json")], body)
    done = model.Exchange(model.Request(method, HOST + path), response, None,
                          start=1_795_599_464.0, end=1_795_599_464.1)
    return recording.to_record(done, recording.Redactor(), classify.classify(done))


MEMBER = {"constants": {"system": {"xuid": "2533274800000031", "index": 0}},
          "gamertag": "Arena Ann", "activeTitleId": "987654321"}


def _capture(path: Path) -> Path:
    """A title's calls against the real service: its session (twice: the first answer's
    constants count), a second template never answered with a document, a ticket."""
    records = [
        _record("PUT", SESSION, 201, {"constants": CONSTANTS, "changeNumber": 1,
                                      "members": {"0": MEMBER}}),
        _record("PUT", SESSION, 200, {"constants": {"system": {}, "custom": {}}}),
        _record("GET", f"/serviceconfigs/{SCID}/sessionTemplates/ArenaGame/sessions/g", 204),
        _record("POST", f"/serviceconfigs/{SCID}/hoppers/Ranked", 200, {"ticketId": "t"}),
        _record("GET", "/handles/1234", 200, {"id": "1234"}),  # names no SCID
    ]
    with recording.Writer(path) as writer:
        for record in records:
            writer.write(record)
    return path


def test_a_recording_names_its_scid_templates_and_hoppers(tmp_path: Path) -> None:
    learnt = world.world_of_files([_capture(tmp_path / "capture.jsonl")])
    assert learnt.gamertags == {"2533274800000031": "Arena Ann"}
    assert learnt.title_id == 987654321
    [scid] = learnt.scids
    assert scid.scid == SCID and scid.hoppers == ("Ranked",)
    lobby, game = scid.templates
    assert (lobby.name, lobby.constants, lobby.large) == ("ArenaLobby", CONSTANTS, False)
    assert (game.name, game.constants) == ("ArenaGame", {"system": {}, "custom": {}})


def test_what_the_config_names_stays_as_the_config_says(tmp_path: Path) -> None:
    base = emulator.default_config()
    shipped = base.scids[0]
    learnt = emulator.ScidConfig(shipped.scid.upper(), (
        emulator.TemplateConfig("lobbysession", {"system": {"maxMembersCount": 99}}),
        emulator.TemplateConfig("NewTemplate")), ("QuickMatch", "Other"))
    seen = world.World((learnt,), {"1": "Learnt", "2": "Learnt Too"}, 55)
    config = world.with_world_of(dataclasses.replace(base, gamertags={"1": "Configured"}), seen)
    [merged] = config.scids
    assert merged.template("LobbySession") == shipped.template("LobbySession")
    assert merged.template("NewTemplate") is not None
    assert merged.hoppers == (*shipped.hoppers, "Other")
    assert config.gamertags == {"1": "Configured", "2": "Learnt Too"}
    assert config.title_id == 55  # the shipped config leaves it at the default
    configured = dataclasses.replace(base, title_id=77)
    assert world.with_world_of(configured, seen).title_id == 77


def test_emulate_world_from_answers_the_capture_sessions(launch: Launcher,
                                                        tmp_path: Path) -> None:
    capture = _capture(tmp_path / "capture.jsonl")
    plain, learnt = launch.standin(), launch.standin("--world-from", str(capture))
    body = {"members": {"me": {"constants": {"system": {"initialize": True, "xuid": "1"}}}}}
    assert httpx.put(plain.url + SESSION, json=body, headers=HEADERS,
                     timeout=5).status_code == 404
    body["members"]["me"]["constants"]["system"]["xuid"] = "2533274800000031"
    created = httpx.put(learnt.url + SESSION, json=body, headers=HEADERS, timeout=5)
    assert created.status_code == 201, created.text
    assert created.json()["constants"]["custom"] == {"mapSet": "arena"}
    [member] = created.json()["members"].values()
    assert (member["gamertag"], member["activeTitleId"]) == ("Arena Ann", "987654321")


def test_a_recording_that_names_no_scid_is_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "handles.jsonl"
    with recording.Writer(empty) as writer:
        writer.write(_record("GET", "/handles/1234", 200, {"id": "1234"}))
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "emulate", "--listen-port", "0",
                           "--world-from", str(empty)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert str(empty) in line and "no session template or hopper" in line


def test_a_second_recording_of_the_same_world_is_welcome(tmp_path: Path) -> None:
    first, again = _capture(tmp_path / "first.jsonl"), _capture(tmp_path / "again.jsonl")
    [scid] = world.world_of_files([first, again]).scids
    assert [t.name for t in scid.templates] == ["ArenaLobby", "ArenaGame"]


def test_answers_no_service_could_send_teach_nothing_and_break_nothing(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    with recording.Writer(path) as writer:
        writer.write(_record("PUT", SESSION, 201, {
            "constants": {"system": 5, "custom": []},  # the config would refuse these
            "members": {"0": {"constants": ["not", "a", "mapping"], "gamertag": "x"},
                        "1": {"constants": {"system": "no"}, "activeTitleId": "12ab"}}}))
    learnt = world.world_of_files([path])
    [template] = learnt.scids[0].templates
    assert template.constants == {"system": {}, "custom": {}} and not template.large
    assert (learnt.gamertags, learnt.title_id) == ({}, None)


def test_large_ness_comes_from_the_reported_constants(tmp_path: Path) -> None:
    path = tmp_path / "large.jsonl"
    large = {"system": {"capabilities": {"large": True}}, "custom": {}}
    with recording.Writer(path) as writer:
        writer.write(_record("PUT", SESSION, 201, {"constants": large}))
    [template] = world.world_of_files([path]).scids[0].templates
    assert template.large and template.constants == large
