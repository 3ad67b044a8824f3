"""The package's shape: no module imports another that imports it back, at any depth."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freeal_ray"


def _imports(path: Path) -> set[str]:
    """freeal_ray modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("freeal_ray"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("freeal_ray.")}
    return found - {path.stem}


def test_no_import_circle_inside_the_package():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    circles = []

    def walk(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                circles.append(" -> ".join([*path, start]))
            elif nxt not in path and nxt > start:  # each circle once, from its smallest module
                walk(start, nxt, [*path, nxt])

    for module in sorted(graph):
        walk(module, module, [module])
    assert "loop" in graph and graph["run"] >= {"loop", "entity_loop"}  # the walk sees the real modules
    assert circles == []
