"""No module of keras_vitmix but `_internals.py` names private Keras or TensorFlow API.

STYLE.md rule 11: one seam for framework internals. This reads the package's source (no
framework import) and fails on a `keras.src` / `tensorflow.python` import, on an
underscored attribute of anything but the object itself or one of the package's own
modules, and on `getattr`/`setattr`/`hasattr` with an underscored name.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_vitmix"
SEAM = PACKAGE / "_internals.py"
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.compiler", "jax._src", "torch._")
OWN_MODULES = {"_malloc", "_internals", "_platform", "_checks", "_resize"}  # keras_vitmix's own private modules
REFLECTION = {"getattr", "setattr", "hasattr", "delattr"}


def private_uses(source):
    """(line, what) for each use of private framework API in `source`."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PRIVATE_MODULES):
            uses.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Import):
            uses.extend((node.lineno, f"import {a.name}") for a in node.names if a.name.startswith(PRIVATE_MODULES))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if base not in ("self", "cls") and base not in OWN_MODULES:
                uses.append((node.lineno, f"{base or '<expr>'}.{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
        ):
            uses.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
    return uses


def test_the_scan_finds_each_kind_of_private_use():
    source = (
        "from keras.src.backend import global_state\n"
        "import tensorflow.python.framework\n"
        "layer._inbound_nodes\n"
        "getattr(model, '_functional', None)\n"
        "self._own\n"
        "_malloc._state\n"
        "x.__class__\n"
    )
    assert [line for line, _ in private_uses(source)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "path", sorted(p for p in PACKAGE.rglob("*.py") if p != SEAM), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_only_internals_touches_private_framework_api(path):
    assert private_uses(path.read_text()) == [], f"{path}: move these into keras_vitmix/_internals.py"


def test_the_seam_exists_and_is_where_the_private_uses_are():
    assert private_uses(SEAM.read_text()), "_internals.py should hold the private uses (or be deleted)"
