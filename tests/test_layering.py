"""Dependencies point one way (trainer -> core <- service); core.face and read_metadata stay TensorFlow-free."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package):
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


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
