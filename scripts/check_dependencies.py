"""Check that every third-party module the code imports is declared in pyproject.toml.

    python scripts/check_dependencies.py            # exit 1, with one line per problem, when any

Run from a fresh virtual environment holding exactly what the README's set-up command installs
(``.ci/run`` does): a module the package imports but pyproject.toml does not declare is then
missing there too, which is what a new user would hit.

What is read: every ``import`` (also those inside functions) of the package folders named in
pyproject.toml (``[tool.setuptools] package-dir``) and of the test-side folders (tests, benchmarks,
scripts, the example plugin's tests). Each imported top-level module is mapped to the
distribution that provides it in this environment and checked:

- package code: the distribution must be a core dependency, or an optional extra whose every
  import sits inside a function or a ``try`` that catches ImportError (loaded only on the path
  that needs it, where a clear message says what to install);
- test-side code: a core dependency or part of the ``dev`` extra (the README's set-up installs it),
  or an optional extra CI does not install (llama-cpp-python, which compiles for minutes) whose
  every import there sits in a ``try`` that catches ImportError (a benchmark row that says what
  to install);
- a module that only comes as a dependency of a declared package is a problem in both: the
  code relies on it directly, so it must be declared directly.

A module no installed distribution provides is taken to come from the distribution of the same
name (declared or not).

Standard-library modules and the repository's own modules are skipped.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
#: Folders whose imports must be installed by the ``dev`` extra (the README's set-up command).
TEST_SIDE = ("tests", "benchmarks", "scripts", "examples/autocompress-example-plugin/tests")
DEV_EXTRA = "dev"
#: Distributions whose import name differs from their own, for when they are not installed here
#: (an optional extra that the README's set-up leaves out).
DISTRIBUTION_OF = {"llama_cpp": "llama-cpp-python"}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])


@dataclass(frozen=True)
class ImportSite:
    module: str  #: top-level module name
    file: Path
    line: int
    guarded: bool  #: inside a function, or in a try that catches ImportError


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if handler.type is None:
        return True
    for node in ast.walk(handler.type):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
    return bool({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} & set(names))


def import_sites(path: Path) -> Iterator[ImportSite]:
    """Absolute imports of one file, each marked guarded or not."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(node: ast.AST, guarded: bool) -> Iterator[ImportSite]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, True)
            elif isinstance(child, ast.Try):
                protected = guarded or any(_catches_import_error(h) for h in child.handlers)
                for statement in child.body:
                    yield from visit_statement(statement, protected)
                for rest in (*child.handlers, *child.orelse, *child.finalbody):
                    yield from visit_statement(rest, guarded)
            else:
                yield from visit_statement(child, guarded)

    def visit_statement(node: ast.AST, guarded: bool) -> Iterator[ImportSite]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportSite(alias.name.split(".")[0], path, node.lineno, guarded)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield ImportSite(node.module.split(".")[0], path, node.lineno, guarded)
        else:
            yield from visit(node, guarded)

    yield from visit(tree, False)


def python_files(folders: Iterable[Path]) -> Iterator[Path]:
    for folder in folders:
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.py") if "site-packages" not in p.parts)


def own_modules(root: Path, package_dirs: dict[str, str]) -> set[str]:
    """Top-level names that are this repository's own: its packages, and every module or package
    under the test-side folders and the example plugin (imported there by path or after install)."""
    names = {name.split(".")[0] for name in package_dirs} | {Path(d).name for d in package_dirs.values()}
    for folder in (*TEST_SIDE, "examples"):
        for path in (root / folder).rglob("*.py"):
            names.add(path.stem)
            names.update(parent.name for parent in path.parents if (parent / "__init__.py").is_file())
    return names


def declared(project: dict) -> tuple[set[str], dict[str, set[str]]]:
    """Core dependency names, and extra name -> dependency names."""
    core = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {extra: {requirement_name(r) for r in requirements}
              for extra, requirements in project.get("optional-dependencies", {}).items()}
    return core, extras


def requirements_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require unconditionally, as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requirements if "extra ==" not in r]
    return seen


def check(root: Path = ROOT, pyproject: str | None = None) -> list[str]:
    """Every problem found, one line each (empty: all declared). ``pyproject``: the text to read
    instead of ``root/pyproject.toml`` (to show what the check says about an edited file)."""
    text = pyproject if pyproject is not None else (root / "pyproject.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    project = config["project"]
    package_dirs = config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    core, extras = declared(project)
    transitive = requirements_closure(core) - core
    in_extra = {name: {extra for extra, names in extras.items() if name in names} for names in extras.values()
                for name in names}
    own = own_modules(root, package_dirs) | {"__future__"}
    stdlib = set(sys.stdlib_module_names)
    providers = {module: {normalise(d) for d in dists} for module, dists in metadata.packages_distributions().items()}

    problems = []
    sides = (("package", [root / d for d in sorted(set(package_dirs.values()))]),
             ("test-side", [root / d for d in TEST_SIDE]))
    for side, folders in sides:
        sites: dict[str, list[ImportSite]] = {}
        for path in python_files(folders):
            for site in import_sites(path):
                if site.module not in stdlib and site.module not in own:
                    sites.setdefault(site.module, []).append(site)
        for module, found in sorted(sites.items()):
            where = f"{found[0].file.relative_to(root)}:{found[0].line}"
            if len(found) > 1:
                where += f" (+{len(found) - 1} more)"
            # Not installed here: assume the distribution is named like the module (tomli, say,
            # declared for older Pythons only).
            dists = providers.get(module) or {normalise(DISTRIBUTION_OF.get(module, module))}
            if dists & core:
                continue
            extra_names = sorted({extra for dist in dists for extra in in_extra.get(dist, ())})
            if side == "test-side":
                if extra_names and all(site.guarded for site in found):
                    continue  # an optional extra: the code says what to install when it is missing
                if DEV_EXTRA not in extra_names:
                    problems.append(f"{module} (distribution {', '.join(sorted(dists))}): imported in {where}, "
                                    f"not in the dependencies or the '{DEV_EXTRA}' extra of pyproject.toml")
                continue
            if not extra_names:
                if dists & transitive:
                    how = "it only comes as a dependency of a declared package"
                elif module in providers:
                    how = "it is installed here, but a fresh install would not have it"
                else:
                    how = "and no installed distribution provides it"
                problems.append(f"{module} (distribution {', '.join(sorted(dists))}): imported in {where}, not "
                                f"declared in pyproject.toml ({how}): add it to [project] dependencies")
                continue
            unguarded = [s for s in found if not s.guarded]
            for site in unguarded:
                problems.append(f"{module} is only in the optional extra(s) {', '.join(extra_names)}, but "
                                f"{site.file.relative_to(root)}:{site.line} imports it at module level without "
                                "a guard: import it inside the function that needs it, after a check that says "
                                "what to install")
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(f"undeclared: {problem}")
    if not problems:
        print("every third-party import is declared in pyproject.toml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
