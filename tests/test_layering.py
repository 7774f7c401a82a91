"""Dependencies point one way (trainer -> core <- service), no module imports one that imports it back (imports
inside functions included), and core.face and read_metadata stay TensorFlow-free."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every package of the project whose modules may import each other.
PROJECT_PACKAGES = ("core", "trainer", "service", "batch", "bench")


def _imports(package):
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


def _module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``, which never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imported(node, module, is_package, modules):
    """The project modules an import statement loads (``from a import b`` loads ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            yield name


def import_graph(root=ROOT, packages=PROJECT_PACKAGES):
    """``{module: {project modules it imports}}``, imports inside functions included."""
    paths = {_module_name(p, root): p for pkg in packages if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= set(_imported(node, module, path.name == "__init__.py", paths))
        graph[module] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or ``None``."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_sees_a_function_level_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import g\n\n\ndef f():\n    return g()\n")
    (tmp_path / "pkg" / "b.py").write_text("def g():\n    from pkg import a\n\n    return a\n")
    (tmp_path / "pkg" / "c.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == set()
    assert set(find_cycle(graph)) == {"pkg.a", "pkg.b"}


def test_core_imports_no_fastapi_service_or_trainer():
    bad = {(f, m) for f, m in _imports("core") if m in {"fastapi", "starlette", "service", "trainer"}}
    assert not bad


def test_service_never_imports_trainer():
    assert not {(f, m) for f, m in _imports("service") if m == "trainer"}


@pytest.mark.parametrize(
    "statement",
    [
        "import core.face",
        "import core.image",
        "from core.artifact import read_metadata",
    ],
)
def test_module_does_not_import_tensorflow(statement, tmp_path):
    code = f"{statement}\nimport sys\nbad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\nprint(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_read_metadata_works_without_tensorflow(tmp_path):
    script = (
        "import sys, json, h5py\n"
        "sys.modules['tensorflow'] = None\nsys.modules['keras'] = None\n"
        "from core.artifact import read_metadata\n"
        "p = sys.argv[1]\n"
        "with h5py.File(p, 'w') as f:\n"
        "    f.attrs['age_estimation'] = json.dumps({'start_label': 1, 'num_classes': 3, 'img_size': 32,"
        " 'chip_padding': 0.4, 'threshold': 0.5, 'arch_type': 'resnet', 'arch_subtype': 18})\n"
        "print(read_metadata(p)['num_classes'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.h5")], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
