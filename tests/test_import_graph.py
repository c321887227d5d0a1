"""Imports among keras_vitmix's modules run one way: no module imports, directly or
through others, a module that imports it back (lazy imports inside functions count).

Read from the source with `ast`: no framework is imported.
"""

import ast
import pathlib

PACKAGE = "keras_vitmix"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE


def module_files(root=ROOT):
    """{dotted module name: path} of every module of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name, path, modules):
    """The package's modules that `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level` steps up
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            # `from a import b` imports the module a.b when there is one, else a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph(root=ROOT):
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph()
    assert len(graph) > 20 and "keras_vitmix.applications.registry" in graph  # the walk found the package
    found = cycles(graph)
    detail = [{module: sorted(set(graph[module]) & set(component)) for module in component} for component in found]
    assert not found, f"Import cycles (module -> the modules of its cycle it imports): {detail}"


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_lazy_imports_are_edges(tmp_path):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from keras_vitmix import a\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .. import a\nimport keras_vitmix.sub\n")
    graph = import_graph(package)
    assert graph == {
        "keras_vitmix": {"keras_vitmix.a"},
        "keras_vitmix.a": {"keras_vitmix.sub.b"},
        "keras_vitmix.sub": set(),
        "keras_vitmix.sub.b": {"keras_vitmix.a", "keras_vitmix.sub"},
    }
    assert cycles(graph) == [["keras_vitmix.a", "keras_vitmix.sub.b"]]
