"""The package's imports point down a fixed order of folders, and none forms a cycle.

``LAYERS`` is the architecture, lowest first: a module may import its own folder and the folders
below it, never one above (function-level imports count as much as module-level ones). The
package's top-level modules are the two ends: ``errors`` (and the package's ``__init__``) at the
bottom, the commands (``__main__``, ``run_cell``, ``cells``, ``rescore``) at the top. A
function-level import of the package is kept only to defer a heavy import on purpose, and a
comment on its line or just above it says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "outro_sweep"
BOTTOM = ("__init__", "errors")
LAYERS = ("files", "config", "media", "benchmarks", "models", "interventions", "cell", "group", "predict",
          "scoring", "preflight", "report", "atlas", "sweep", "fit", "perf")
TOP = ("cells", "rescore", "run_cell", "__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module of the package that ``name`` (a module or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module of the package, the statement, whether it sits inside a function)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{node.module}" if node.module else anchor
            # ``from package import name`` runs the package's __init__ too: it counts as imported.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            resolved = resolve(target) if target.startswith("outro_sweep") else None
            if resolved and resolved != module:
                found.append((resolved, node, id(node) in in_function))
    return found


def rank(module: str) -> float:
    """The layer of a module: its folder's index in LAYERS; the package's own modules at the ends."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in BOTTOM):
        return -1
    if len(parts) == 2 and parts[1] in TOP:
        return len(LAYERS) + TOP.index(parts[1])
    return LAYERS.index(parts[1])


def test_every_folder_and_top_level_module_has_a_layer():
    unplaced = sorted({m for m in MODULES if rank_or_none(m) is None})
    assert not unplaced, f"modules in no layer of LAYERS/TOP/BOTTOM: {unplaced}"


def rank_or_none(module: str) -> float | None:
    try:
        return rank(module)
    except ValueError:
        return None


def test_no_upward_import():
    upward = [f"{module} imports {target} (line {node.lineno})"
              for module in MODULES for target, node, _ in imports(module)
              if rank(target) > rank(module)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_files():
    graph = {module: {target for target, _, _ in imports(module)} for module in MODULES}
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_say_why_they_are_deferred():
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for _, node, inside in imports(module):
            if not inside:
                continue
            if not deferred_with_a_reason(lines, node.lineno):
                silent.append(f"{module}:{node.lineno}")
    assert not silent, "function-level imports with no comment saying why: " + ", ".join(sorted(set(silent)))


def deferred_with_a_reason(lines: list[str], lineno: int) -> bool:
    """Whether the import at ``lineno`` (1-based) carries a comment: on its own line, or just
    above the block of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    index = lineno - 2
    while index >= 0 and lines[index].strip() and not lines[index].strip().startswith("#"):
        line = lines[index].strip()
        if not line.startswith(("from ", "import ")) and not line.endswith((",", ")")):
            return False  # code, not an import of the same block
        index -= 1
    return index >= 0 and lines[index].strip().startswith("#")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_checks_find_what_they_look_for(tmp_path):
    """The checker itself: a two-module cycle is found."""
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
    # a function-level import with a reason above its block, one with none, one after code
    lines = ["def f():", "    # Deferred on purpose: heavy.", "    from a import b", "    from c import d",
             "", "    from e import g", "    x = 1", "    from h import i"]
    assert [deferred_with_a_reason(lines, n) for n in (3, 4, 6, 8)] == [True, True, False, False]
