"""pyproject.toml tells the truth: every third-party module src/ imports is a runtime dependency with a lower bound,
and every one tests/ imports is a runtime dependency or in the dev extra.

Imports are read with `ast` (function-local ones too, nothing is imported), each top-level module is mapped to the
distribution that installs it, and that distribution's name (PEP 503-normalised) must be declared."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from functools import cache
from pathlib import Path

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
# This repository's own modules: the package, its top-level folders of Python files (tests, benchmarks) and the test
# modules that tests import by name (conftest, test_multilingual).
FIRST_PARTY = (
    {"ner_accel"}
    | {folder.name for folder in ROOT.iterdir() if folder.is_dir() and any(folder.glob("*.py"))}
    | {path.stem for path in TESTS.glob("*.py")}
)


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def requirements(*extras: str) -> list[Requirement]:
    """[project].dependencies, then the optional dependencies of each extra named."""
    table = project()
    entries = table.get("dependencies", []) + [e for extra in extras for e in table["optional-dependencies"][extra]]
    return [Requirement(entry) for entry in entries]


def imports(root: Path) -> list[tuple[str, str]]:
    """(file:line, top-level module) of every absolute import under `root`, at any depth of the code."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            place = f"{path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path}:{node.lineno}"
            found += [(place, name.partition(".")[0]) for name in names]
    return found


@cache
def distributions_of_modules() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def undeclared(root: Path, declared: list[Requirement], where: str) -> list[str]:
    """One message per third-party import under `root` whose distribution `declared` lacks."""
    names = {canonicalize_name(requirement.name) for requirement in declared}
    # Declared for other interpreters only (tomli before Python 3.11): not installed here, and not needed.
    elsewhere = {canonicalize_name(r.name) for r in declared if r.marker is not None and not r.marker.evaluate()}
    problems = []
    for place, module in imports(root):
        if module in sys.stdlib_module_names or module in FIRST_PARTY:
            continue
        distributions = distributions_of_modules().get(module)
        if not distributions:
            if canonicalize_name(module) not in elsewhere:
                problems.append(
                    f"{place}: imports {module!r}, which no installed distribution provides; install the package "
                    f"that provides it and declare it in {where} of pyproject.toml"
                )
            continue
        if not names & {canonicalize_name(d) for d in distributions}:
            options = " or ".join(sorted(set(distributions)))
            problems.append(
                f"{place}: imports {module!r} (distribution {options}), which {where} of pyproject.toml does not "
                f'declare; add "{distributions[0]}>=<first release with the API used>" there'
            )
    return problems


def test_every_third_party_import_of_src_is_a_runtime_dependency():
    problems = undeclared(SRC, requirements(), "[project].dependencies")
    assert not problems, "\n".join(problems)


def test_every_third_party_import_of_the_tests_is_declared():
    problems = undeclared(TESTS, requirements("dev"), '[project].dependencies or the "dev" extra')
    assert not problems, "\n".join(problems)


def test_every_runtime_dependency_has_a_lower_bound():
    unbounded = [r for r in requirements() if not any(spec.operator == ">=" for spec in r.specifier)]
    assert not unbounded, "\n".join(
        f'pyproject.toml: runtime dependency "{r}" has no lower bound; write "{r.name}>=<first release that '
        'provides every API src/ uses>" (with a comment naming that API)'
        for r in unbounded
    )


def test_the_scan_reads_imports_inside_functions_and_skips_relative_ones(tmp_path):
    (tmp_path / "module.py").write_text(
        "import os\n\ndef load():\n    import yaml.constructor\n    from . import sibling\n    from .b import c\n"
        "\nclass A:\n    def f(self):\n        from numpy.random import default_rng\n"
    )
    assert sorted(module for _, module in imports(tmp_path)) == ["numpy", "os", "yaml"]
