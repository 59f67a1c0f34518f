"""The package's shape (docs/development.md): imports run one way (no circle, also through
imports inside functions), the layer imports nothing of the reproduction tooling, and no module
is longer than a screenful can map (600 lines)."""
import ast
import os

import pytest

import mixnorm_chainer

PACKAGE_DIR = os.path.dirname(mixnorm_chainer.__file__)
MAX_LINES = 600


def package_modules():
    """``{dotted name: path}`` of every module of the package (``pkg`` for ``pkg/__init__.py``)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith('.py'):
                continue
            rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(PACKAGE_DIR))
            dotted = rel[:-3].replace(os.sep, '.')
            modules[dotted.removesuffix('.__init__')] = os.path.join(folder, name)
    return modules


def imported_modules(path, modules, own):
    """The package modules ``path`` imports anywhere in it (module level or in a function);
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else
    ``pkg``. A package's own parent packages are not counted (Python runs them first anyway)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f'{node.module}.{alias.name}'
                found.add(candidate if candidate in modules else node.module)
    parents = {own.rsplit('.', i)[0] for i in range(1, own.count('.') + 1)}
    return {m for m in found if m in modules and m != own and m not in parents}


def import_graph():
    modules = package_modules()
    return {name: imported_modules(path, modules, name) for name, path in modules.items()}


def find_cycle(graph):
    """A list of modules forming an import circle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert len(graph) > 30 and graph['mixnorm_chainer.links']   # the scan sees the package
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_the_layer_imports_nothing_of_the_tooling():
    tooling = 'mixnorm_chainer.reproduce'
    for name, imports in import_graph().items():
        if not name.startswith(tooling):
            assert not {m for m in imports if m.startswith(tooling)}, name


@pytest.mark.parametrize('name, path', sorted(package_modules().items()))
def test_module_length(name, path):
    with open(path) as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f'{name}: {lines} lines; split it by job (docs/development.md)'
