"""What `pip install .` and `pipx install .` give a user with no checkout: the wheel.

The wheel is built from a copy of the package (the checkout is not written to), installed
with `--no-deps` into a fresh venv that sees the project venv's dependencies through a
`.pth` line (the venv has no network to install them from), and then used from a folder
outside the checkout: the demo, `check` on the shipped scenarios, and mitmdump with the
shipped entry script. The build itself must not warn (a deprecated license table did).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the build reads: the package and the files pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    build_log: str
    python: Path
    bin: Path
    package: Path  # the installed `mpsdproxy` package folder
    outside: Path  # a working folder outside the checkout


def _run(args: list[str | Path], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command to completion, output captured as text, bounded in time."""
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _copy_sources(dest: Path) -> Path:
    """The package and build files, links kept as links (the scenario schema is one)."""
    dest.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "mpsdproxy", dest / "mpsdproxy", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _build_wheel(src: Path, out: Path) -> tuple[Path, str]:
    built = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", out, src],
                 cwd=src, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("mpsdproxy-*.whl")
    return wheel, built.stdout + built.stderr


def _fresh_venv(where: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv with only the wheel installed; the dependencies come from the project venv."""
    made = _run([sys.executable, "-m", "venv", "--without-pip", where], cwd=where.parent)
    assert made.returncode == 0, made.stderr
    python = where / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=where)
    (Path(site.stdout.strip()) / "project-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                 "--no-index", wheel], cwd=where)
    assert done.returncode == 0, done.stdout + done.stderr
    return python, python.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(base / "src")
    (base / "dist").mkdir()
    wheel, log = _build_wheel(src, base / "dist")
    python, bindir = _fresh_venv(base / "venv", wheel)
    where = _run([python, "-c", "import mpsdproxy, os; print(os.path.dirname(mpsdproxy.__file__))"],
                 cwd=base)
    outside = base / "elsewhere"
    outside.mkdir()
    return Installed(wheel, log, python, bindir, Path(where.stdout.strip()), outside)


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_the_wheel_carries_every_shipped_scenario_and_the_mitmproxy_script(
        installed: Installed) -> None:
    names = _names(installed.wheel)
    shipped = {p.name for p in (ROOT / "mpsdproxy" / "scenarios").iterdir()}
    assert {"outage.yaml", "retry-after-drill.yaml", "schema.json"} <= shipped
    assert {f"mpsdproxy/scenarios/{n}" for n in shipped} <= names
    assert "mpsdproxy/script/mpsdproxy.py" in names


def test_the_license_is_an_spdx_string_and_the_build_does_not_warn(
        installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    lowered = installed.build_log.lower()
    assert "deprecat" not in lowered, installed.build_log
    assert "setuptoolswarning" not in lowered, installed.build_log


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    assert ROOT not in installed.package.parents
    assert (installed.package / "scenarios" / "retry-after-drill.yaml").is_file()


def test_the_demo_runs_from_outside_the_checkout(installed: Installed) -> None:
    """`pipx install .` then `mpsdproxy demo`: the demo finds its scenario in the package."""
    demo = _run([installed.bin / "mpsdproxy", "demo"], cwd=installed.outside, timeout=180)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Traceback" not in demo.stdout + demo.stderr
    assert list((installed.outside / "recordings").glob("demo-*.jsonl"))


def test_check_passes_on_the_installed_scenarios(installed: Installed) -> None:
    scenarios = sorted((installed.package / "scenarios").glob("*.yaml"))
    assert len(scenarios) >= 5
    check = _run([installed.bin / "mpsdproxy", "check", *scenarios], cwd=installed.outside)
    assert check.returncode == 0, check.stdout + check.stderr


def test_mitmdump_loads_the_installed_entry_script(installed: Installed) -> None:
    """The shipped script loads the addons under mitmproxy (the option it is given takes
    effect: the recording is opened) though it shares the package's name."""
    script = installed.package / "script" / "mpsdproxy.py"
    flows, record = installed.outside / "none.flows", installed.outside / "via-script.jsonl"
    flows.write_bytes(b"")
    run = _run([installed.python, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()",
                "-n", "-s", script, "-r", flows, "--set", f"confdir={installed.outside}",
                "--set", f"mpsd_record={record}"], cwd=installed.outside, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert record.exists()


def test_the_checkout_paths_lead_to_the_shipped_files() -> None:
    """The README's `scenarios/...` and `addons/mpsdproxy.py` still work in a checkout:
    `scenarios` is a link to the package's folder, the script runs the packaged one."""
    packaged = resources.files("mpsdproxy") / "scenarios"
    assert sorted(p.name for p in (ROOT / "scenarios").iterdir()) == sorted(
        p.name for p in packaged.iterdir())
    assert (ROOT / "scenarios" / "outage.yaml").resolve() == Path(
        str(packaged / "outage.yaml")).resolve()
    checkout_script = (ROOT / "addons" / "mpsdproxy.py").read_text(encoding="utf-8")
    assert '"mpsdproxy", "script", "mpsdproxy.py"' in checkout_script
