"""pyproject.toml tells the truth: every third-party module src/ imports is declared, with a lower bound, and so is
every one tests/ imports.

Imports are read with `ast`, nothing is imported: every `import` and absolute `from ... import`, at any depth. Each
top-level module is mapped to the installed distribution that provides it, and that distribution's name (PEP
503-normalised) must be declared:
- by src/: in [project].dependencies, or, for an optional feature (`pip install 'ner_accel[onnx]'`), in an extra
  other than dev, provided every import of it is deferred (inside a function, or in a `try` that catches
  ImportError), so that the package imports without the extra;
- by tests/: in [project].dependencies or the dev extra, or in another extra where every import of it is deferred;
  an import in a `try` that catches ImportError is the test's own optional path (it skips without the package) and
  needs no declaration.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
SRC = ROOT / "src" / "ner_accel"
TESTS = ROOT / "tests"
# This repository's own modules: the package, its top-level folders of Python files (tests, benchmarks), and the
# test modules that tests import by name (conftest, test_multilingual).
FIRST_PARTY = (
    {"ner_accel"}
    | {folder.name for folder in ROOT.iterdir() if folder.is_dir() and any(folder.glob("*.py"))}
    | {path.stem for path in TESTS.glob("*.py")}
)
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class Import:
    place: str  # file:line
    module: str  # the top-level module
    deferred: bool  # inside a function, or in a `try` that catches ImportError: not run by importing the file
    guarded: bool  # in a `try` that catches ImportError: the code copes without the module


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def runtime() -> list[Requirement]:
    return [Requirement(entry) for entry in project().get("dependencies", [])]


def extras() -> dict[str, list[Requirement]]:
    return {
        name: [Requirement(entry) for entry in entries]
        for name, entries in project().get("optional-dependencies", {}).items()
    }


def catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if handler.type is None or any(isinstance(c, ast.Name) and c.id in IMPORT_ERRORS for c in caught):
            return True
    return False


def imports(root: Path) -> list[Import]:
    """Every absolute import in the .py files under `root`, relative ones (the package's own) left out."""
    found = []

    def visit(node: ast.AST, deferred: bool, guarded: bool, shown: str) -> None:
        place = f"{shown}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found.extend(Import(place, alias.name.partition(".")[0], deferred, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(place, node.module.partition(".")[0], deferred, guarded))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            deferred = True
        if isinstance(node, ast.Try | getattr(ast, "TryStar", ast.Try)) and catches_import_error(node):
            for child in node.body:
                visit(child, True, True, shown)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, deferred, guarded, shown)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, deferred, guarded, shown)

    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visit(tree, False, False, path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path))
    return found


@cache
def providers() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it."""
    return importlib.metadata.packages_distributions()


def undeclared(
    root: Path,
    required: dict[str, list[Requirement]],
    optional: dict[str, list[Requirement]],
    skip_guarded: bool = False,
) -> list[str]:
    """One line per third-party module imported under `root` that is not declared where it must be: in one of the
    `required` groups, or, where every import of it is deferred, in one of the `optional` ones. skip_guarded: leave
    out imports in a `try` that catches ImportError."""
    everything = [r for group in (*required.values(), *optional.values()) for r in group]
    # Declared for other interpreters only (tomli before Python 3.11): not installed here, and not needed here.
    elsewhere = {canonicalize_name(r.name) for r in everything if r.marker is not None and not r.marker.evaluate()}
    by_module: dict[str, list[Import]] = {}
    for found in imports(root):
        if skip_guarded and found.guarded:
            continue
        if found.module not in sys.stdlib_module_names and found.module not in FIRST_PARTY:
            by_module.setdefault(found.module, []).append(found)
    fix = " or ".join(required)
    problems = []
    for module, found in sorted(by_module.items()):
        where = ", ".join(f.place for f in found)
        distributions = sorted(set(providers().get(module, [])))
        if not distributions:
            if canonicalize_name(module) not in elsewhere:
                problems.append(
                    f"{where}: import {module!r}, which no installed distribution provides; install the package that "
                    f"provides it and declare it in {fix}"
                )
            continue
        names = {canonicalize_name(d) for d in distributions}
        if any(names & {canonicalize_name(r.name) for r in group} for group in required.values()):
            continue
        extra = next(
            (name for name, group in optional.items() if names & {canonicalize_name(r.name) for r in group}), None
        )
        eager = [f.place for f in found if not f.deferred]
        if extra is None:
            also = "" if eager else " (or, as an optional feature, to an extra other than dev)"
            problems.append(
                f"{where}: import {module!r} (distribution {' or '.join(distributions)}), which pyproject.toml does "
                f'not declare; add "{distributions[0]}>=<first release with the APIs used>" to {fix}{also}'
            )
        elif eager:
            problems.append(
                f"{', '.join(eager)}: import {module!r} where the file is imported, but pyproject.toml declares it only "
                f'in the "{extra}" extra, without which this fails; import it inside the function that needs it '
                f"(or in a try that catches ImportError), or declare it in {fix}"
            )
    return problems


def test_every_third_party_import_of_src_is_declared():
    optional = {name: group for name, group in extras().items() if name != "dev"}
    problems = undeclared(SRC, {"[project].dependencies": runtime()}, optional)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_every_third_party_import_of_the_tests_is_declared():
    groups = extras()
    required = {"[project].dependencies": runtime(), 'the "dev" extra': groups.pop("dev", [])}
    problems = undeclared(TESTS, required, groups, skip_guarded=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_every_runtime_dependency_has_a_lower_bound():
    """[project].dependencies and the extras of optional features (not dev's tools)."""
    groups = {"[project].dependencies": runtime()} | {
        f'the "{name}" extra': group for name, group in extras().items() if name != "dev"
    }
    unbounded = [
        (where, r) for where, group in groups.items() for r in group if not any(s.operator == ">=" for s in r.specifier)
    ]
    if unbounded:
        pytest.fail(
            "\n".join(
                f'pyproject.toml: "{r}" in {where} has no lower bound; write "{r.name}>=<first release with every API '
                'src/ uses>", with a comment naming the API that sets it'
                for where, r in unbounded
            ),
            pytrace=False,
        )


def test_the_scan_reads_every_import_and_which_are_deferred(tmp_path):
    (tmp_path / "module.py").write_text(
        "import os\nfrom . import sibling\nfrom .b import c\n"
        "try:\n    import tomllib\nexcept ImportError:\n    import tomli as tomllib\n"
        "try:\n    import yaml\nfinally:\n    pass\n"
        "def load():\n    import numpy.random\n"
        "class A:\n    def f(self):\n        from rich.table import Table\n"
    )
    found = {(f.module, f.deferred, f.guarded) for f in imports(tmp_path)}
    assert found == {
        ("os", False, False),
        ("tomllib", True, True),
        ("tomli", False, False),
        ("yaml", False, False),
        ("numpy", True, False),
        ("rich", True, False),
    }
