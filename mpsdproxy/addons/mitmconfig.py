"""mitmproxy's `config.yaml`, read for `mpsdproxy run` as `mitmdump` reads it.

`mitmdump` loads `config.yaml`, then `config.yml`, from its confdir (`--set confdir=`,
default `~/.mitmproxy`) with `mitmproxy.optmanager.load_paths`; a later file wins, and
the command line wins over both (mitmproxy/tools/main.py: `opts.set(*args.setoptions,
defer=True)`, then `load_paths(...)`, then `process_options`). This module reads the same
files with mitmproxy's own parser (`optmanager.parse`, so the YAML dialect and its
errors are mitmproxy's) and `scripts` paths are made relative to the file as
`optmanager.load` does; `run` then drops every entry a typed flag or `--set` overrides.

It returns plain data rather than loading into an `Options`: `run` has to see the
listening address before anything binds (a `listen_host: 0.0.0.0` in the file needs
`--allow-remote` as the flag does), and every problem must come out as one line that
names the file, the line and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from mitmproxy import exceptions
from mitmproxy import optmanager
from mitmproxy.proxy import mode_specs

__all__ = ["DEFAULT_CONFDIR", "ConfigFileError", "MitmConfig", "config_paths", "for_run", "read"]

#: mitmproxy's default confdir (`options.CONF_DIR`).
DEFAULT_CONFDIR = "~/.mitmproxy"

#: The listening options and the types `run` must see before it binds anything.
_SHAPES: dict[str, tuple[type, ...]] = {"listen_host": (str,), "listen_port": (int,),
                                        "mode": (list,)}


class ConfigFileError(ValueError):
    """A config.yaml mitmproxy would refuse: one line, `file:line: key: problem`."""


@dataclass
class MitmConfig:
    """The options a confdir's config files set, and where each was set."""

    entries: dict[str, Any] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # key -> "file:line"

    def origin(self, key: str) -> str:
        """`file:line: key`, for a message about the entry."""
        return f"{self.where[key]}: {key}"

    def without(self, overridden: set[str]) -> MitmConfig:
        """The entries a flag or `--set` does not override (those win, as in mitmdump)."""
        kept = {k: v for k, v in self.entries.items() if k not in overridden}
        return MitmConfig(kept, {k: self.where[k] for k in kept})

    def explain(self, message: str) -> str | None:
        """`message` (mitmproxy's or an addon's error) as one line naming the entry it is
        about, or None when it names none of the file's entries."""
        text = message.strip().strip("'\"")  # a KeyError's str() is quoted
        for key in sorted(self.entries, key=len, reverse=True):
            # As mitmproxy and the addons name an option: "for KEY," "KEY option", "KEY:".
            if re.search(rf"(?<![\w-]){re.escape(key)}(?= option\b|[,:]|$)", text):
                if text.startswith("Unknown options"):
                    text = ("no such mitmproxy or mpsdproxy option (mitmweb's Options page "
                            "lists them all)")
                return f"{self.origin(key)}: {text}"
        return None


    def listening(self, modes: tuple[str, ...], host: str, port: int,
                  bad_mode: Callable[[str, str], str]) -> tuple[tuple[str, ...], str, int]:
        """The modes, host and port the proxy will use once the file is applied;
        ValueError naming the file's line for a mode mitmproxy refuses (`bad_mode(mode,
        error)` says the rest)."""
        if self.entries.get("mode"):
            modes = tuple(self.entries["mode"])
            for mode in modes:
                try:
                    mode_specs.ProxyMode.parse(mode)
                except ValueError as e:
                    raise ConfigFileError(f"{self.origin('mode')}: {bad_mode(mode, str(e))}"
                                          ) from None
        if self.entries.get("listen_host") is not None:
            host = self.entries["listen_host"]
        if self.entries.get("listen_port") is not None:
            port = self.entries["listen_port"]
        return modes, host, port


def for_run(confdir: str, sets: Sequence[str], typed: set[str]) -> MitmConfig:
    """The config files `run` applies: from `--set confdir=`, else `confdir`, else
    ~/.mitmproxy (as mitmdump finds them), minus the options in `typed` (the flags the
    user typed) or `sets` (`--set NAME=...`): those win, as on mitmdump's command line.
    The routing options `run` derives from --mode and --intercept-host follow them."""
    pairs = [(n.strip(), v.strip()) for n, _, v in (p.partition("=") for p in sets)]
    overridden = set(typed) | {n for n, _ in pairs}
    if overridden & {"mode", "mpsd_intercept_hosts"}:
        overridden |= {"allow_hosts", "connection_strategy"}
    set_confdirs = [v for n, v in pairs if n == "confdir"]
    return read(set_confdirs[-1] if set_confdirs else confdir).without(overridden)


def config_paths(confdir: str) -> list[Path]:
    """The files mitmdump reads, in order (the later wins)."""
    base = Path(os.path.expanduser(confdir or DEFAULT_CONFDIR))
    return [base / "config.yaml", base / "config.yml"]


def read(confdir: str) -> MitmConfig:
    """The entries of the confdir's config files (none when there are none);
    ConfigFileError for a file mitmproxy could not load."""
    config = MitmConfig()
    for path in config_paths(confdir):
        if path.is_file():
            _read_one(path, config)
    return config


def _read_one(path: Path, config: MitmConfig) -> None:
    try:
        text = path.read_text(encoding="utf8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: cannot be read ({e})") from None
    try:
        data = optmanager.parse(text)
    except exceptions.OptionsError as e:
        raise ConfigFileError(_parse_error(path, str(e))) from None
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{path}:1: should be a mapping of option: value")
    lines = _key_lines(text)
    for key, value in data.items():
        where = f"{path}:{lines.get(str(key), 1)}"
        if not isinstance(key, str):
            raise ConfigFileError(f"{where}: {key!r}: an option name should be a word")
        shapes = _SHAPES.get(key)
        if shapes and value is not None and not isinstance(value, shapes):
            kind = "a list of modes" if key == "mode" else shapes[0].__name__
            raise ConfigFileError(f"{where}: {key}: should be {kind}, not {value!r}")
        if key == "scripts" and isinstance(value, list):  # as optmanager.load does
            value = [str(optmanager.relative_path(Path(str(p)), relative_to=path.parent))
                     for p in value]
        config.entries[key] = value
        config.where[key] = where


def _key_lines(text: str) -> dict[str, int]:
    """Line of each top-level key (the file is a flat mapping of option names)."""
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"""^(?:(["'])(.+?)\1|([^\s#:'"][^:#]*?))\s*:(?:\s|$)""", line)
        if m:
            lines.setdefault(m[2] or m[3], number)
    return lines


def _parse_error(path: Path, message: str) -> str:
    """mitmproxy's multi-line YAML error as `file:line: problem`."""
    m = re.match(r"Config error at line (\d+):", message)
    if m:
        problem = message.strip().splitlines()[-1].strip() or "not valid YAML"
        return f"{path}:{m[1]}: {problem}"
    return f"{path}: {' '.join(message.split())}"
