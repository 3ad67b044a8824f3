"""The package's shape: no import circles at any depth, short modules, one file per stage and per
task kind."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "freeal_ray"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """freeal_ray modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("freeal_ray"):
            names = {f"{node.module}.{a.name}" for a in node.names}
            found |= (names & modules) or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("freeal_ray")}
    return (found & modules) - {_module(path)}


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in files}
    graph = {_module(p): _imports(p, modules) for p in files}
    # A package's __init__ runs before any of its modules: importing freeal_ray.stages.train also
    # imports freeal_ray.stages, so a module depends on the packages above the ones it imports.
    # (A module inside that package is imported by it, not before it.)
    for module, deps in graph.items():
        for dep in list(deps):
            parent = dep.rsplit(".", 1)[0]
            if parent in graph and parent not in ("freeal_ray", module) and not module.startswith(parent + "."):
                deps.add(parent)
    return graph


def test_no_import_circle_inside_the_package():
    graph = _graph()
    circles = []

    def walk(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                circles.append(" -> ".join([*path, start]))
            elif nxt not in path and nxt > start:  # each circle once, from its smallest module
                walk(start, nxt, [*path, nxt])

    for module in sorted(graph):
        walk(module, module, [module])
    assert "freeal_ray.pipeline" in graph["freeal_ray.stages.train"] and "freeal_ray.kinds" in graph["freeal_ray.pipeline"]  # real edges
    assert circles == []


def test_modules_are_short_and_stages_and_kinds_are_files():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    long |= {str(p.relative_to(ROOT)): n for p in (ROOT / "bench").glob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py")}
    assert {"ingest", "synthesize", "annotate", "train", "score", "select", "refine", "expand", "finalize"} <= stages
    assert {p.stem for p in (PACKAGE / "kinds").glob("*.py")} >= {"base", "classification", "entities"}


def test_the_stages_never_branch_on_the_task_kind():
    """What differs between classification and NER lives in kinds/; a stage that tested for it
    would grow a branch per kind."""
    import re

    files = [*(PACKAGE / "stages").glob("*.py"), PACKAGE / "pipeline.py", PACKAGE / "loop.py", PACKAGE / "annotation.py"]
    found = {f.name: hits for f in files if (hits := re.findall(r"isinstance\([^)]*Task\)|\.entities\b|tagger", f.read_text()))}
    assert found == {}
