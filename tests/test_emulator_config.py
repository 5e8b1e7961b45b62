"""The stand-in's config file: the shipped one, and errors that name file, line,
column and key (read through the one YAML loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsdproxy import emulator
from mpsdproxy.emulator.config import MatchmakingConfig

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
CONFIG = emulator.default_config()


def test_shipped_config() -> None:
    (scid,) = CONFIG.scids
    assert scid.scid == SCID and scid.hoppers == ("QuickMatch",)
    assert scid.template("largesession").large is True  # type: ignore[union-attr]
    throttled = scid.template("ThrottledSession")
    assert throttled is not None and throttled.rate_limit == emulator.RateLimit(2, 300)
    assert CONFIG.rate_limit == emulator.RateLimit(30, 300)
    assert "spectator" in CONFIG.read_only_users and CONFIG.overload is None


GOOD = f"""version: 1
scids:
  {SCID}:
    templates:
      Lobby:
        rate_limit: {{burst: 5}}
    hoppers: [Q]
"""


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("burst: 5", "burst: -1"),
     f"cfg.yaml:6:29: scids.{SCID}.templates.Lobby.rate_limit.burst: should be a whole number"),
    (GOOD.replace("rate_limit", "rate_limits"),
     f"cfg.yaml:6:9: scids.{SCID}.templates.Lobby.rate_limits: unknown key; valid keys are: "
     "constants, large, rate_limit"),
    (GOOD.replace(SCID, "not-a-guid"), "cfg.yaml:3:3: scids.not-a-guid: a SCID should be a GUID"),
    (GOOD.replace("version: 1", "version: 2"), "cfg.yaml:1:10: version: this stand-in reads "
                                               "version 1, not 2"),
    (GOOD.replace("version: 1\n", ""), "cfg.yaml:1:1: (document): missing `version: 1`"),
    (GOOD + "overload: {requests: 2}\n", "cfg.yaml:8:1: overload: needs retry_after"),
    (GOOD + "read_only_users: spectator\n",
     "cfg.yaml:8:18: read_only_users: should be a list"),
    (GOOD.replace("[Q]", "[Q, q]"),
     f"cfg.yaml:7:18: scids.{SCID}.hoppers[1]: 'q' is listed twice"),
    (GOOD.replace("Lobby:", "Lobby:\n      lobby:"),
     f"cfg.yaml:6:7: scids.{SCID}.templates.lobby: 'lobby' is listed twice"),
    (GOOD + "version: 1\n", "cfg.yaml:8:1: version: duplicate key 'version'"),
    (GOOD + "scids: [\n", "cfg.yaml:9:1: (document): invalid YAML"),
    ("", "cfg.yaml:1:1: (document): the file is empty; it needs at least `version: 1`"),
])
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(emulator.ConfigError) as info:
        emulator.load_config(path)
    assert str(info.value).startswith(str(tmp_path / expected)), str(info.value)


def test_template_rate_limit_inherits_sustained(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD + "rate_limit: {burst: 9, sustained: 90}\n")
    config = emulator.load_config(path)
    assert config.scids[0].templates[0].rate_limit == emulator.RateLimit(5, 90)
    assert config.rate_limit == emulator.RateLimit(9, 90)




def test_load_none_is_the_shipped_config() -> None:
    assert emulator.EmulatorConfig.load(None) == CONFIG


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(emulator.ConfigError, match=r"nope.yaml:1:1: .*cannot read the file"):
        emulator.load_config(tmp_path / "nope.yaml")


# -- keys for documents, principals, the social graph and matchmaking ------------------


def test_shipped_config_documents_every_key() -> None:
    assert CONFIG.require_signature is False
    assert CONFIG.server_principals == frozenset({"gameserver"})
    assert CONFIG.title_id == 1234567890
    assert CONFIG.gamertags["2533274800000001"] == "Synthetic Ann"
    assert CONFIG.friends["2533274800000001"] == frozenset({"2533274800000002"})
    assert CONFIG.matchmaking == MatchmakingConfig(2.0, 60.0, 2)
    assert CONFIG.gamertag("2533274800000001") == "Synthetic Ann"
    assert CONFIG.gamertag("2533274800009876") == "Player9876"


def test_new_keys_parse(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD + """require_signature: true
server_principals: [dedicated, 77]
title_id: 4023
gamertags: {2533274800000011: Eleven, "2533274800000012": 12}
friends:
  2533274800000011: [2533274800000012, "2533274800000013"]
  2533274800000012:
matchmaking: {found_after_s: 0.5, players_per_match: 4}
""")
    config = emulator.load_config(path)
    assert config.require_signature is True
    assert config.server_principals == frozenset({"dedicated", "77"})
    assert config.title_id == 4023
    assert config.gamertags == {"2533274800000011": "Eleven", "2533274800000012": "12"}
    assert config.friends == {"2533274800000011": frozenset({"2533274800000012",
                                                             "2533274800000013"}),
                              "2533274800000012": frozenset()}
    assert config.matchmaking == MatchmakingConfig(0.5, 60.0, 4)


def test_defaults_without_the_new_keys(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD)
    config = emulator.load_config(path)
    assert (config.require_signature, config.server_principals, config.gamertags,
            config.friends, config.matchmaking, config.title_id) == (
        False, frozenset(), {}, {}, MatchmakingConfig(), 1234567890)


@pytest.mark.parametrize("extra,expected", [
    ("require_signature: yes please\n", "cfg.yaml:8:20: require_signature: should be true or"),
    ("server_principals: gameserver\n", "cfg.yaml:8:20: server_principals: should be a list"),
    ("title_id: -1\n", "cfg.yaml:8:11: title_id: should be a title id"),
    ("title_id: 4294967296\n", "cfg.yaml:8:11: title_id: should be a title id"),
    ("gamertags: {alice: Ann}\n", "cfg.yaml:8:13: gamertags.alice: a XUID should be"),
    ("gamertags: {2533274800000011: [a]}\n",
     "cfg.yaml:8:31: gamertags[2533274800000011]: should be a gamertag"),
    ("friends: [1, 2]\n", "cfg.yaml:8:10: friends: should be a mapping of XUIDs"),
    ("friends: {2533274800000011: 2533274800000012}\n",
     "cfg.yaml:8:29: friends[2533274800000011]: should be a list of XUIDs, not a number"),
    ("friends: {2533274800000011: [bob]}\n",
     "cfg.yaml:8:30: friends[2533274800000011][0]: a XUID should be"),
    ("matchmaking: {found_after_s: -2}\n",
     "cfg.yaml:8:30: matchmaking.found_after_s: should be a number of seconds"),
    ("matchmaking: {players_per_match: 0}\n",
     "cfg.yaml:8:34: matchmaking.players_per_match: should be a whole number"),
    ("matchmaking: {players: 2}\n", "cfg.yaml:8:15: matchmaking.players: unknown key"),
])
def test_new_key_errors_name_file_line_and_key(tmp_path: Path, extra: str,
                                               expected: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD + extra)
    with pytest.raises(emulator.ConfigError) as info:
        emulator.load_config(path)
    assert str(info.value).startswith(str(tmp_path / expected)), str(info.value)


def test_large_is_the_templates_capability(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD.replace("rate_limit: {burst: 5}", "large: true"))
    (lobby,) = emulator.load_config(path).scids[0].templates
    assert lobby.large is True
    assert lobby.constants["system"]["capabilities"] == {"large": True}
    by_capability = GOOD.replace("rate_limit: {burst: 5}",
                                 "constants: {system: {capabilities: {large: true}}}")
    path.write_text(by_capability)
    assert emulator.load_config(path).scids[0].templates[0].large is True
    path.write_text(by_capability.replace("constants:", "large: true\n        constants:")
                    .replace("large: true}", "large: false}"))
    with pytest.raises(emulator.ConfigError, match=r"Lobby.large: is true but"):
        emulator.load_config(path)
