"""The layout's rules, read from the code itself (DESIGN.md, "Layout").

- only `mpsdproxy/addons/` imports mitmproxy: the domain is plain functions over
  `model` types and is tested as such;
- no module is over 600 lines: a longer one is doing more than one job;
- every third-party package the code imports is declared in pyproject.toml.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from conftest import parse_python

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mpsdproxy"
MAX_LINES = 600

#: Import name -> the distribution that provides it, where the two differ.
DISTRIBUTIONS = {"yaml": "pyyaml", "jinja2": "jinja2"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The top-level names of every module `path` imports (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(parse_python(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_addons_import_mitmproxy() -> None:
    addons = PACKAGE / "addons"
    offenders = [str(p.relative_to(ROOT)) for p in _modules()
                 if "mitmproxy" in _imports(p) and addons not in p.parents]
    assert offenders == []


def test_the_addons_do_import_mitmproxy() -> None:
    """The rule above is not vacuous: the import graph is read for real."""
    assert "mitmproxy" in _imports(PACKAGE / "addons" / "flows.py")


def test_no_module_is_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for spec in project["dependencies"]:
        name = spec.split(";")[0]
        for stop in "<>=!~[ ":
            name = name.split(stop)[0]
        names.add(name.lower().replace("_", "-"))
    return names


def test_every_third_party_import_is_declared() -> None:
    declared = _declared()
    stdlib = set(sys.stdlib_module_names)
    used = set().union(*(_imports(p) for p in _modules())) - stdlib - {"mpsdproxy"}
    missing = {name for name in used
               if DISTRIBUTIONS.get(name, name).lower().replace("_", "-") not in declared}
    assert missing == set()


def _layout_block() -> str:
    """The README's layout listing: the code block that starts with `mpsdproxy/`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    return next(b for b in blocks if b.lstrip("\n").startswith("mpsdproxy/"))


def test_the_readme_layout_names_every_module_and_only_real_ones() -> None:
    block = _layout_block()
    named = {line.split()[0] for line in block.splitlines()
             if line.startswith("  ") and line.split() and line.split()[0].endswith((".py", "/"))}
    actual = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
              or (p.is_dir() and (p / "__init__.py").exists())}
    assert named == actual
