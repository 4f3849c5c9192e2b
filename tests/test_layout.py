"""The package's layout rules (README's "Layout"): dependencies point one way, no import circle,
one definition of the special token ids, short functions."""

import ast

import pytest

from tests import ROOT

PACKAGE = ROOT / "tfx_transformer"
# Each folder may import only from those listed (besides itself and the package's top-level
# helper modules): layers <- models <- tasks <- training / export.
ALLOWED = {
    "layers": set(),
    "models": {"layers"},
    "data": set(),
    "tasks": {"layers", "models", "data"},
    "export": {"layers", "models", "data", "tasks"},
    "training": {"layers", "models", "data", "tasks", "export"},
}
LONGEST_FUNCTION = 80


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports():
    """{module: set of package modules it imports}, wherever in the module the import is."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from package import module` imports the module; `from module import name` the module
                imported |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def test_no_import_circle():
    graph = package_imports()
    # A package's __init__ that re-exports its submodules is imported by them only implicitly,
    # as Python loads a parent first; that is not an edge here.
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_dependencies_point_one_way():
    folders = set(ALLOWED)
    wrong = []
    for module, targets in package_imports().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in folders:
            continue
        for target in targets:
            target_folder = target.split(".")[1] if target.count(".") else None
            if target_folder in folders and target_folder != parts[1] and target_folder not in ALLOWED[parts[1]]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_special_token_ids_are_defined_once():
    names = {"PAD_ID", "UNK_ID", "START_ID", "END_ID"}
    definitions = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                definitions += [
                    f"{path.relative_to(ROOT)}: {e.id}" for e in elements
                    if isinstance(e, ast.Name) and e.id in names
                ]
    assert sorted(definitions) == sorted(f"tfx_transformer/tokens.py: {n}" for n in names)


def test_functions_are_short():
    long_ones = []
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "serve").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long_ones.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long_ones, "\n".join(long_ones)
