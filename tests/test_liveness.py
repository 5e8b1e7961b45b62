"""Liveness: files that would hang the proxy are refused, scenario reloads never stall
the event loop, signal handling falls back where the loop cannot take signals, and no
POSIX-only call sits outside a guard (the Windows check this machine can make)."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from conftest import parse_python
from injector_kit import rule
from injector_kit import scenario_text
from injector_kit import write

from mpsdproxy import safefiles
from mpsdproxy import scenario
from mpsdproxy.addons import master
from mpsdproxy.addons import scenarios

ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def run_cli(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`mpsdproxy ARGS` in a child process; a hang fails the test instead of stalling it."""
    return subprocess.run([sys.executable, "-m", "mpsdproxy", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def good_scenario(tmp_path: Path, name: str = "s.yaml", rule_name: str = "first") -> str:
    return write(tmp_path / name, scenario_text(rule(rule_name, "{status: 503}")))


# -- non-regular files for --record and --scenario -------------------------------------------


@POSIX_ONLY
@pytest.mark.parametrize("flag", ["--record", "--scenario"])
def test_a_fifo_is_refused_in_one_line_before_listening(flag: str, fifo: Path,
                                                        tmp_path: Path) -> None:
    port = free_port()
    done = run_cli("run", "--listen-port", str(port), "--confdir", str(tmp_path / "conf"),
                   flag, str(fifo), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file (a FIFO)" in lines[0], done.stderr
    assert flag in lines[0] and "mpsd_" not in lines[0]
    assert "listening" not in done.stdout + done.stderr


@POSIX_ONLY
def test_resend_to_a_fifo_is_refused_before_sending(fifo: Path, tmp_path: Path) -> None:
    done = run_cli("resend", str(ROOT / "recordings" / "sample-lobby.jsonl"),
                   "--to", "http://127.0.0.1:9", "--record", str(fifo), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file (a FIFO)" in lines[0], done.stderr


@POSIX_ONLY
def test_dev_stdout_is_refused_as_a_recording(tmp_path: Path) -> None:
    done = run_cli("run", "--listen-port", str(free_port()), "--confdir",
                   str(tmp_path / "conf"), "--record", "/dev/stdout", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "/dev/stdout: not a regular file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@POSIX_ONLY
def test_a_fifo_set_with_set_is_refused_too(fifo: Path, tmp_path: Path) -> None:
    done = run_cli("run", "--listen-port", str(free_port()), "--confdir",
                   str(tmp_path / "conf"), "--set", f"mpsd_record={fifo}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "mpsd_record" in done.stderr and "not a regular file" in done.stderr


def test_refuse_not_regular(tmp_path: Path) -> None:
    regular = tmp_path / "r.jsonl"
    regular.write_text("")
    safefiles.refuse_not_regular(regular)
    safefiles.refuse_not_regular(tmp_path / "not-yet.jsonl")  # created later: fine
    safefiles.refuse_not_regular("")
    with pytest.raises(safefiles.BadFile, match="a folder"):
        safefiles.refuse_not_regular(tmp_path, "recording")


# -- scenario hot reload ------------------------------------------------------------------


def loaded(tmp_path: Path, path: str) -> scenarios.Scenarios:
    found = scenarios.Scenarios(origin=time.time())
    found.load([path])
    return found


def rules(found: scenarios.Scenarios) -> list[str]:
    return [r.name for item in found.loaded for r in item.scenario.rules]


def test_a_slow_parse_does_not_stall_the_event_loop(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = good_scenario(tmp_path)
    found = loaded(tmp_path, path)
    write(Path(path), scenario_text(rule("second", "{status: 503}")))
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000_000))
    real_load = scenario.load

    def slow_load(p: str) -> scenario.Scenario:
        time.sleep(0.5)  # a 50 MB edit
        return real_load(p)

    monkeypatch.setattr(scenario, "load", slow_load)

    async def reload_while_ticking() -> tuple[list[str], int]:
        ticks = 0
        task = asyncio.create_task(found.reload_changed_off_loop())
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return task.result(), ticks

    reloaded, ticks = asyncio.run(reload_while_ticking())
    assert reloaded == [path]
    assert rules(found) == ["second"]
    assert ticks >= 10, "the loop stood still while the scenario parsed"


@POSIX_ONLY
def test_a_fifo_at_the_scenario_path_never_hangs_the_reload(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = good_scenario(tmp_path)
    found = loaded(tmp_path, path)
    os.unlink(path)
    os.mkfifo(path)

    async def reload() -> list[str]:
        return await asyncio.wait_for(found.reload_changed_off_loop(), timeout=5)

    assert asyncio.run(reload()) == []
    assert rules(found) == ["first"]  # the loaded version stays in force
    assert asyncio.run(reload()) == []
    assert sum("not a regular file" in r.message for r in caplog.records) == 1  # once


@POSIX_ONLY
def test_a_fifo_is_refused_when_loading(fifo: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        scenarios.Scenarios(origin=0.0).load([str(fifo)])


def test_a_reload_swaps_the_whole_set_at_once(tmp_path: Path) -> None:
    """A request that holds the set while a reload lands keeps a consistent old set."""
    a = good_scenario(tmp_path, "a.yaml", "a1")
    b = good_scenario(tmp_path, "b.yaml", "b1")
    found = scenarios.Scenarios(origin=time.time())
    found.load([a, b])
    before = found.loaded
    write(Path(b), scenario_text(rule("b2", "{status: 503}")))
    os.utime(b, ns=(0, os.stat(b).st_mtime_ns + 1_000_000_000))
    assert asyncio.run(found.reload_changed_off_loop()) == [b]
    assert [r.name for item in before for r in item.scenario.rules] == ["a1", "b1"]
    assert rules(found) == ["a1", "b2"]


# -- signals ------------------------------------------------------------------------------


def test_signals_fall_back_to_signal_signal_where_the_loop_cannot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Windows: `add_signal_handler` raises NotImplementedError."""
    calls: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    async def scenario_run() -> None:
        loop = asyncio.get_running_loop()

        def unsupported(*args: object) -> None:
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_signal_handler", unsupported)
        restore = master.install_stop_signals(loop, lambda: calls.append("stop"))
        try:
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler) and handler is not before
            handler(signal.SIGTERM, None)  # what the interpreter does on the signal
            await asyncio.sleep(0.05)
        finally:
            restore()

    asyncio.run(scenario_run())
    assert calls == ["stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_off_the_main_thread_do_not_crash() -> None:
    errors: list[BaseException] = []

    def in_thread() -> None:
        async def body() -> None:
            master.install_stop_signals(asyncio.get_running_loop(), lambda: None)()

        try:
            asyncio.run(body())
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(timeout=5)
    assert errors == []


# -- POSIX-only calls ---------------------------------------------------------------------

#: Attribute uses that exist only on POSIX (or fail on Windows' event loop).
#: (`remove_signal_handler` is left out: it only undoes an `add_signal_handler` that worked.)
POSIX_ATTRIBUTES = {
    ("*", "add_signal_handler"),
    ("os", "fork"), ("os", "forkpty"), ("os", "setsid"), ("os", "setpgrp"), ("os", "getpgid"),
    ("os", "killpg"), ("os", "getuid"), ("os", "geteuid"), ("os", "getgid"),
    ("os", "mkfifo"), ("os", "chown"), ("os", "getloadavg"), ("os", "WNOHANG"),
    ("signal", "SIGKILL"), ("signal", "SIGHUP"), ("signal", "SIGPIPE"), ("signal", "SIGUSR1"),
    ("signal", "SIGUSR2"), ("signal", "SIGALRM"), ("signal", "SIGCHLD"), ("signal", "SIGQUIT"),
    ("signal", "alarm"), ("signal", "setitimer"), ("signal", "pthread_kill"),
    ("select", "poll"), ("select", "epoll"),
}
POSIX_MODULES = {"fcntl", "termios", "pwd", "grp", "resource", "tty", "pty", "posix"}
GUARD_EXCEPTIONS = {"NotImplementedError", "AttributeError", "ImportError",
                    "ModuleNotFoundError", "RuntimeError", "OSError", "ValueError", "Exception"}


def _guard_test_mentions_platform(test: ast.expr) -> bool:
    """An `if` that asks about the platform: hasattr/getattr, sys.platform, os.name."""
    for node in ast.walk(test):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("hasattr", "getattr"):
            return True
        if isinstance(node, ast.Attribute) and (node.attr, getattr(node.value, "id", "")) in (
                ("platform", "sys"), ("name", "os")):
            return True
    return False


def _handler_names(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"Exception"}
    items = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {getattr(i, "id", getattr(i, "attr", "")) for i in items}


def _guards(node: ast.AST, child: ast.AST) -> bool:
    """Whether `node` guards `child` (one of its statements)."""
    if isinstance(node, ast.Try):
        return child in node.body and any(_handler_names(h) & GUARD_EXCEPTIONS
                                          for h in node.handlers)
    if isinstance(node, ast.If | ast.IfExp):
        return _guard_test_mentions_platform(node.test) and child is not node.test
    if isinstance(node, ast.With):
        return any("suppress" in ast.unparse(item.context_expr) for item in node.items)
    return False


def _unguarded(tree: ast.Module) -> Iterator[tuple[int, str]]:
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    for node in ast.walk(tree):
        found = _posix_use(node)
        if found is None:
            continue
        child, guarded = node, False
        while child in parents and not guarded:
            guarded = _guards(parents[child], child)
            child = parents[child]
        if not guarded:
            yield node.lineno, found


def _posix_use(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        owner = getattr(node.value, "id", "")
        if (owner, node.attr) in POSIX_ATTRIBUTES or ("*", node.attr) in POSIX_ATTRIBUTES:
            return f"{owner or '...'}.{node.attr}"
    if isinstance(node, ast.Import):
        names = {a.name.split(".")[0] for a in node.names} & POSIX_MODULES
        return f"import {', '.join(sorted(names))}" if names else None
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in POSIX_MODULES:
        return f"from {node.module} import ..."
    return None


def scan(source: str) -> list[tuple[int, str]]:
    return list(_unguarded(parse_python(source)))


def test_no_unguarded_posix_only_call_in_the_package() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: {what}"
             for path in sorted((ROOT / "mpsdproxy").rglob("*.py"))
             for line, what in scan(path.read_text(encoding="utf-8"))]
    assert found == [], "POSIX-only calls outside a guard:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for() -> None:
    assert [w for _, w in scan("import fcntl\nloop.add_signal_handler(s, f)\n"
                               "os.kill(pid, signal.SIGKILL)\n")] == \
        ["import fcntl", "loop.add_signal_handler", "signal.SIGKILL"]
    assert scan("try:\n    loop.add_signal_handler(s, f)\nexcept NotImplementedError:\n"
                "    pass\n") == []
    assert scan("if hasattr(signal, 'SIGPIPE'):\n    signal.signal(signal.SIGPIPE, h)\n") == []
    assert scan("if sys.platform != 'win32':\n    os.setsid()\n") == []
    assert scan("with contextlib.suppress(NotImplementedError):\n"
                "    loop.add_signal_handler(s, f)\n") == []
    assert scan("try:\n    pass\nexcept OSError:\n    os.fork()\n") == [(4, "os.fork")]
