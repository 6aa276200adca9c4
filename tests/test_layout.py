"""The tree reads as the data flow (README, 'Layout'): small modules, no import circles among
bnconf's own modules, bnconf imports at module top, and a Layout section that names every
folder and module there is."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"conformance": "bnconf", "adapters": "bnconf.adapters"}
MAX_LINES = 420   # "no module over ~400 lines"

# Imports of bnconf modules that stay inside a function, and why each must.
DEFERRED = {
    # `import bnconf` must not pull in hypothesis, the engine and the report for every submodule
    ("bnconf", "audit"),
}


def _modules():
    out = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "adapters" or parts[:1] != ["adapters"]:
                out[".".join([package, *parts]) if parts else package] = path
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[:len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """(imported bnconf module, at module top?, function name) for each import of bnconf."""
    tree = ast.parse(path.read_text())
    known = _modules()

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom):
                target = _resolve(module, path, child)
                for alias in child.names:
                    full = f"{target}.{alias.name}"
                    name = full if full in known else target
                    if name.startswith("bnconf"):
                        yield name, func is None, func
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("bnconf"):
                        yield alias.name, func is None, func
            yield from visit(child, f)
    yield from visit(tree, None)


def test_no_module_is_long():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


def test_no_import_circle():
    graph = {m: {t for t, top, _ in _imports(m, p) if top and t != m} for m, p in _modules().items()}
    for m in graph:   # importing a.b imports package a first
        graph[m] |= {".".join(t.split(".")[:i]) for t in set(graph[m]) for i in range(2, t.count(".") + 1)} - {m}
    state, circles = {}, []

    def walk(m, stack):
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                circles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                walk(t, stack + [t])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    # a package's __init__ importing its own submodules is no circle of modules
    circles = [c for c in circles if not all(a.startswith(c[0] + ".") or a == c[0] for a in c)]
    assert not circles, f"import circles: {circles}"


def test_bnconf_imports_are_at_module_top():
    late = sorted((m, t, f) for m, p in _modules().items() for t, top, f in _imports(m, p)
                  if not top and (m, f) not in DEFERRED)
    assert not late, f"imports of bnconf inside functions (move them to the top, or say why in DEFERRED): {late}"


def test_readme_layout_names_every_folder_and_module():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Layout\n(.*?)^## ", text, re.S | re.M)
    assert m, "README has no Layout section"
    layout = m.group(1)
    missing = []
    for folder in ("conformance", "adapters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "__init__.py" or "known" in path.parts:
                continue
            if not re.search(rf"\b{re.escape(path.stem)}\b", layout):
                missing.append(str(path.relative_to(ROOT)))
        for sub in sorted(p for p in (ROOT / folder).iterdir() if p.is_dir() and (p / "__init__.py").exists()):
            if f"{sub.name}/" not in layout:
                missing.append(str(sub.relative_to(ROOT)) + "/")
    assert not missing, f"README's Layout does not name: {missing}"


@pytest.mark.parametrize("folder", sorted(PACKAGE_DIRS))
def test_layout_meta_finds_modules(folder):
    """The checks above look at real files (an empty walk would pass them all)."""
    assert sum(1 for p in _modules().values() if p.is_relative_to(ROOT / folder)) >= 5
