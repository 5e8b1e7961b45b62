"""`mpsdproxy run` reads mitmproxy's config.yaml from the confdir as mitmdump does: the
file's options are honoured, the command line wins, and a bad file is one line naming
file, line and key (exit 2). Over real runs of the proxy in front of the stand-in."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import Launcher
from conftest import free_port
from conftest import read_records

from mpsdproxy.addons import mitmconfig

HEADERS = {"Authorization": "XBL3.0 x=1234;token", "x-xbl-contract-version": "107"}
PATH = "/serviceconfigs/00000000-0000-0000-0000-000000000000/sessiontemplates/t/sessions/s"


@pytest.fixture
def confdir(tmp_path: Path, confdir: Path) -> Path:
    """A confdir of the test's own (its config.yaml is the test's), with the session's CA
    copied in so no new one is generated."""
    own = tmp_path / "conf"
    own.mkdir()
    for ca in confdir.glob("mitmproxy-ca*"):
        shutil.copy(ca, own / ca.name)
    return own


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_config_yaml_options_are_honoured(launch: Launcher, confdir: Path,
                                          tmp_path: Path) -> None:
    standin = launch.standin()
    port, record = free_port(), tmp_path / "from-config.jsonl"
    (confdir / "config.yaml").write_text(
        f"# as mitmdump reads it\nlisten_port: {port}\nmode: ['reverse:{standin.url}']\n"
        f"mpsd_record: {record}\nmpsd_client_header: X-Studio-Key=k1\n", encoding="utf-8")
    proxy = launch.spawn(["run", "--confdir", str(confdir)], port)
    refused = httpx.get(proxy.url + PATH, headers=HEADERS, timeout=10)
    passed = httpx.get(proxy.url + PATH, headers={**HEADERS, "X-Studio-Key": "k1"}, timeout=10)
    assert refused.status_code == 403
    assert passed.status_code == 404, passed.text  # the stand-in's: no such session
    assert proxy.stop() == 0
    assert [r["response"]["status"] for r in read_records(record)] == [404]


def test_flags_and_set_win_over_the_file(launch: Launcher, confdir: Path,
                                         tmp_path: Path) -> None:
    standin = launch.standin()
    in_file, typed, by_set = free_port(), free_port(), free_port()
    record = tmp_path / "typed.jsonl"
    (confdir / "config.yaml").write_text(
        f"listen_port: {in_file}\nmpsd_record: {tmp_path / 'ignored.jsonl'}\n"
        "mpsd_client_header: X-Studio-Key=k1\n", encoding="utf-8")
    proxy = launch.spawn(["run", "--confdir", str(confdir), "--listen-port", str(typed),
                          "--mode", f"reverse:{standin.url}", "--record", str(record)], typed)
    assert not _listening(in_file)
    assert httpx.get(proxy.url + PATH, headers={**HEADERS, "X-Studio-Key": "k1"},
                     timeout=10).status_code == 404
    proxy.stop()
    assert len(read_records(record)) == 1 and not (tmp_path / "ignored.jsonl").exists()
    launch.spawn(["run", "--confdir", str(confdir), "--set", f"listen_port={by_set}"], by_set)
    assert not _listening(in_file)


def test_config_yml_after_config_yaml(confdir: Path) -> None:
    """mitmdump's order (`load_paths(config.yaml, config.yml)`): the later file wins."""
    (confdir / "config.yaml").write_text("listen_port: 1\nmpsd_quiet: true\n")
    (confdir / "config.yml").write_text("listen_port: 2\n")
    read = mitmconfig.read(str(confdir))
    assert read.entries == {"listen_port": 2, "mpsd_quiet": True}
    assert read.where["listen_port"] == f"{confdir / 'config.yml'}:1"
    assert read.without({"listen_port"}).entries == {"mpsd_quiet": True}


def test_set_confdir_and_what_run_overrides(confdir: Path, tmp_path: Path) -> None:
    """`--set confdir=` finds the file as in mitmdump; a typed --mode also overrides the
    routing options `run` derives from it."""
    (confdir / "config.yaml").write_text("allow_hosts: [x]\nmpsd_quiet: true\nlisten_port: 1\n")
    read = mitmconfig.for_run(str(tmp_path / "elsewhere"), [f"confdir={confdir}",
                                                            "listen_port=2"], {"mode"})
    assert read.entries == {"mpsd_quiet": True}


def test_scripts_are_relative_to_the_file(confdir: Path) -> None:
    """As mitmproxy's optmanager.load makes them."""
    (confdir / "config.yaml").write_text("scripts: [addon.py]\n")
    assert mitmconfig.read(str(confdir)).entries["scripts"] == [str(confdir / "addon.py")]


def test_a_script_and_its_options_from_the_file(launch: Launcher, confdir: Path) -> None:
    """As in mitmdump, options of an addon the file's `scripts` load wait for it (deferred),
    and the script path is relative to the file."""
    (confdir / "greeter.py").write_text(
        "import logging\n"
        "from mitmproxy import ctx\n\n"
        "class Greeter:\n"
        "    def load(self, loader):\n"
        "        loader.add_option('greeting', str, '', 'said once loaded')\n\n"
        "    def configure(self, updated):\n"
        "        if 'greeting' in updated and ctx.options.greeting:\n"
        "            logging.warning('greeting: ' + ctx.options.greeting)\n\n"
        "addons = [Greeter()]\n", encoding="utf-8")
    (confdir / "config.yaml").write_text("scripts: [greeter.py]\ngreeting: hello from the file\n",
                                         encoding="utf-8")
    port = free_port()
    proxy = launch.spawn(["run", "--confdir", str(confdir), "--listen-port", str(port)], port)
    for _ in range(200):  # the script loads on the event loop: a bounded wait
        if "greeting: hello from the file" in proxy.output():
            break
        time.sleep(0.05)
    assert "greeting: hello from the file" in proxy.output()


@pytest.mark.parametrize(("text", "said"), [
    ("listen_port: 8080\nno_such_option: 3\n", "config.yaml:2: no_such_option: "),
    ("mpsd_client_header: novalue\n", "config.yaml:1: mpsd_client_header: "),
    ("listen_port: '8080'\n", "config.yaml:1: listen_port: "),
    ("mode: ['garbage']\n", "config.yaml:1: mode: "),
    ("listen_host: 0.0.0.0\n", "config.yaml:1: listen_host: 0.0.0.0: "),
    ("mode: ['regular@0.0.0.0:8080']\n", "config.yaml:1: mode: regular@0.0.0.0:8080: "),
    ("listen_port: [1\n", "config.yaml:2: "),
    ("- just\n- a list\n", "config.yaml:1: "),
])
def test_a_bad_file_is_one_line_naming_file_and_key(confdir: Path, text: str,
                                                     said: str) -> None:
    (confdir / "config.yaml").write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "run", "--confdir", str(confdir),
                           "--listen-port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{confdir}/{said}" in lines[0], lines[0]


def test_listen_host_from_the_file_with_allow_remote(launch: Launcher, confdir: Path) -> None:
    port = free_port()
    (confdir / "config.yaml").write_text("listen_host: 0.0.0.0\n", encoding="utf-8")
    proxy = launch.spawn(["run", "--confdir", str(confdir), "--listen-port", str(port),
                          "--allow-remote"], port)
    assert "config.yaml:1: listen_host: 0.0.0.0" in proxy.wait_output("config.yaml:1:")


# The stand-in's own config file: `control_token:` (the flag wins)


def _standin_config(tmp_path: Path, extra: str) -> Path:
    from mpsdproxy.emulator import DEFAULT_CONFIG_PATH

    path = tmp_path / "standin.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def test_standin_control_token_from_its_config(launch: Launcher, tmp_path: Path) -> None:
    config = _standin_config(tmp_path, "control_token: from-file\n")
    standin = launch.standin("--config", str(config))
    url = f"{standin.url}/_emulator/reset"
    assert httpx.post(url, timeout=5).status_code == 403
    assert httpx.post(url, headers={"X-Emulator-Token": "from-file"},
                      timeout=5).status_code == 200
    assert "from-file" not in standin.output()
    flagged = launch.standin("--config", str(config), "--control-token", "typed")
    url = f"{flagged.url}/_emulator/reset"
    assert httpx.post(url, headers={"X-Emulator-Token": "from-file"},
                      timeout=5).status_code == 403
    assert httpx.post(url, headers={"X-Emulator-Token": "typed"}, timeout=5).status_code == 200


@pytest.mark.parametrize("value", ["''", "[a, b]", "' padded'"])
def test_a_bad_standin_control_token_names_file_line_and_key(tmp_path: Path,
                                                              value: str) -> None:
    config = _standin_config(tmp_path, f"control_token: {value}\n")
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "emulate", "--listen-port", "0",
                           "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "control_token" in lines[0], lines
    assert "padded'" not in lines[0]  # a token is never echoed


def test_emulate_help_documents_the_config_token() -> None:
    done = subprocess.run([sys.executable, "-m", "mpsdproxy", "emulate", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert "control_token:" in done.stdout and "--control-token wins" in done.stdout
