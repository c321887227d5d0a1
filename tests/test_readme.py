"""The README's examples run as written and do what their comments say, and what it
states about the package (variants, allocator settings, commands, links) is true."""

import fnmatch
import pathlib
import re

import numpy as np

from keras_vitmix import _malloc, applications, config
from keras_vitmix.applications import registry

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_block(containing):
    """The README's one ```python block that contains `containing`."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} python blocks contain {containing!r}"
    return blocks[0]


def run(code):
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run(python_block("HybridMixerViT("))
    probabilities = np.asarray(namespace["probabilities"])
    assert probabilities.shape == (8, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "hybrid_mixer_vit.keras").stat().st_size > 0


def test_fast_route_switch_example_runs_and_restores_the_setting():
    before = config.fast_routes_enabled()
    run(python_block("config.fast_routes(False)"))
    assert config.fast_routes_enabled() is before


def test_new_variant_example_registers_a_model_the_shared_suite_lists():
    code = python_block("register_model(")
    name = re.search(r'register_model\(\s*"(\w+)"', code).group(1)
    try:
        namespace = run(code)
        assert name in applications.list_models()  # what tests/applications/test_models.py runs over
        model = namespace["model"]
        assert model.name == name and model.output_shape == (None, 10)
    finally:
        registry._REGISTRY.pop(name, None)


def test_models_table_names_registered_variants_of_every_family():
    names = applications.list_models()
    rows = [line for line in README.splitlines() if re.match(r"\| `(ViT|MLPMixer|ConvMixer|Hybrid\w+)` \|", line)]
    families = {re.match(r"\| `(\w+)`", row).group(1) for row in rows}
    assert families == {applications.model_info(n)["family"].__name__ for n in names}
    for row in rows:
        for pattern in re.findall(r"`([a-z]\w*[\w*]*)`", row.split("|")[2]):
            assert fnmatch.filter(names, pattern), f"the README lists {pattern!r}, which is not registered"


def test_glibc_variables_are_the_settings_tune_malloc_applies():
    variables = dict(re.findall(r"(MALLOC_\w+)=(\d+)", README))
    by_parameter = {_malloc.M_ARENA_MAX: "MALLOC_ARENA_MAX", _malloc.M_MMAP_MAX: "MALLOC_MMAP_MAX_",
                    _malloc.M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_", _malloc.M_TOP_PAD: "MALLOC_TOP_PAD_"}
    assert {by_parameter[param]: str(value) for param, value in _malloc.SETTINGS} == variables


def test_set_up_commands_and_local_links_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"\nmake {target}\n" in README and re.search(rf"^{target}:", makefile, re.M)
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert links and all((ROOT / link).exists() for link in links if "://" not in link), links
