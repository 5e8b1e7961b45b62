"""The stand-in's config file: the shipped one, and errors that name file, line,
column and key (read through the one YAML loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsdproxy import emulator

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
