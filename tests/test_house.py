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


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
LIBRARY_LINES, BENCHMARK_LINES = 600, 450


def _too_long(paths, limit: int, root: Path) -> list[str]:
    """``"path: N lines (limit L)"`` (path relative to ``root``) for each file of ``paths`` over ``limit`` lines."""
    out = []
    for path in sorted(paths):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(root)}: {n} lines (limit {limit})")
    return out


def test_no_library_file_over_600_lines_and_no_benchmark_script_over_450():
    """A file past its limit holds more than one responsibility: split it (a benchmark keeps its presets, stages
    and tables; the rest goes into vitkit)."""
    assert BENCHMARKS.is_dir(), f"no benchmarks folder at {BENCHMARKS}"
    offences = (_too_long(SRC.rglob("*.py"), LIBRARY_LINES, SRC.parent)
                + _too_long(BENCHMARKS.glob("*.py"), BENCHMARK_LINES, BENCHMARKS.parent))
    assert not offences, "files over their line limit:\n" + "\n".join(offences)


def test_the_size_check_names_the_file_and_its_count(tmp_path):
    (tmp_path / "ok.py").write_text("x = 1\n" * 450)
    (tmp_path / "long.py").write_text("x = 1\n" * 451)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * 601)
    assert _too_long(tmp_path.glob("*.py"), BENCHMARK_LINES, tmp_path) == ["long.py: 451 lines (limit 450)"]
    assert _too_long(tmp_path.rglob("*.py"), LIBRARY_LINES, tmp_path) == ["pkg/big.py: 601 lines (limit 600)"]
