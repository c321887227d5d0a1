"""The Keras floor is stated once: pyproject.toml's `keras>=X` is the version pinned in
requirements/keras-floor.txt, the one `make test-keras-floor` (and .ci/run's subset of it)
tests; the development pin is not below it."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def version(text):
    return tuple(int(part) for part in text.split("."))


def pinned(path, package="keras"):
    pins = re.findall(rf"^{package}==([0-9.]+)\s*$", (ROOT / path).read_text(), re.M)
    assert len(pins) == 1, f"{path}: {len(pins)} pins of {package}"
    return pins[0]


def test_pyproject_floor_is_the_tested_floor():
    floors = re.findall(r'"keras>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert floors == [pinned("requirements/keras-floor.txt")]


def test_development_pin_is_not_below_the_floor():
    assert version(pinned("requirements/constraints.txt")) >= version(pinned("requirements/keras-floor.txt"))


def test_make_target_reads_the_floor_pin():
    makefile = (ROOT / "Makefile").read_text()
    assert "test-keras-floor:" in makefile and "requirements/keras-floor.txt" in makefile
