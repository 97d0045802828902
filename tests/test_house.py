"""House rules that a reviewer should not have to check by eye."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import vitkit

SRC = Path(vitkit.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str | None, level: int, here: str, is_package: bool) -> str:
    if not level:
        return module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_imported_across_modules():
    """``from vitkit.x import _name`` or ``vitkit_module._name`` from another module: a seam that should be public."""
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        here = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules: set[str] = set()  # local names bound to vitkit modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(node.module, node.level, here, path.name == "__init__.py")
                if not source.startswith("vitkit"):
                    continue
                for alias in node.names:
                    if _private(alias.name):
                        offences.append(f"{path.relative_to(SRC)}:{node.lineno} imports {source}.{alias.name}")
                    elif importlib.util.find_spec(f"{source}.{alias.name}") if _is_package(source) else False:
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("vitkit") and alias.asname:
                        modules.add(alias.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and _private(node.attr)):
                offences.append(f"{path.relative_to(SRC)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


def _imports(path: Path, here: str) -> set[str]:
    """vitkit modules that ``path`` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(node.module, node.level, here, path.name == "__init__.py")
            if not source.startswith("vitkit"):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if _is_package(source) and importlib.util.find_spec(sub) else source)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("vitkit") and m != here}


def test_no_import_cycle_among_vitkit_modules():
    """Counting imports inside functions too: a cycle there is still two modules that know each other."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: {d for d in _imports(p, m) if d in modules} for m, p in modules.items()}
    cycles, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" → ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
