"""The public API: each package's ``__all__`` imports, and the README names only what exists.

``patching``, ``attribution`` and ``circuits`` re-export their public names lazily
(module ``__getattr__``), so these tests also hold that importing a package stays
cheap (no torch, transformers or TransformerLens) and that the lazy table, the
``TYPE_CHECKING`` imports (what type checkers see) and ``__all__`` agree.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGES = ("patching", "attribution", "circuits")
HEAVY = ("torch", "transformers", "transformer_lens")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_imports(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package}.__all__ is empty"
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None, f"{package}.{name}"
        exec(f"from {package} import {name}", {})
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError):
        _ = module.no_such_name


@pytest.mark.parametrize("package", PACKAGES)
def test_lazy_table_matches_all_and_type_checking_imports(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module._EXPORTS) == set(module.__all__)
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                typed.update({alias.name: stmt.module for alias in stmt.names})
    assert typed == module._EXPORTS


def test_importing_the_packages_loads_no_heavy_library() -> None:
    code = (
        "import sys, patching, attribution, circuits; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout


def api_table(readme: str) -> list[tuple[str, list[str]]]:
    """The rows of the README's "API on a page" table: (first cell, names in the second)."""
    section = readme.split("## API on a page", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue  # prose, the header and its rule
        names = re.findall(r"`([^`]+)`", cells[1])
        rows.append((cells[0].strip("`"), names))
    return rows


def test_readme_api_page_names_only_what_exists() -> None:
    rows = api_table((ROOT / "README.md").read_text())
    assert {where for where, _ in rows} >= set(PACKAGES)
    for where, names in rows:
        assert names, f"a row for {where} names nothing"
        if where == "refusal-circuits":
            continue  # the console script's commands, checked by the CLI tests
        module = importlib.import_module(where)
        public = getattr(module, "__all__", None) if where in PACKAGES else None
        for name in names:
            assert re.fullmatch(r"[A-Za-z_]\w*", name), f"{name!r} is not a name"
            if public is not None:
                assert name in public, f"README names {where}.{name}, not in its __all__"
            assert hasattr(module, name), f"README names {where}.{name}, which does not exist"


def test_readme_api_page_covers_all() -> None:
    rows = api_table((ROOT / "README.md").read_text())
    named = {(where, name) for where, names in rows for name in names}
    for package in PACKAGES:
        module = importlib.import_module(package)
        missing = [n for n in module.__all__ if (package, n) not in named]
        if package == "patching":  # the README names the base error and the common ones
            missing = [n for n in missing if not n.endswith("Error")]
        assert not missing, f"{package}.__all__ names missing from the README: {missing}"
