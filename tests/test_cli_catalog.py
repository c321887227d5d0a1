"""`keras-vitmix models` and `--help` without Keras: the static catalogue, kept equal to the
live registry and to benchmarks/RESULTS.md, and the table printed from it."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import pytest

from keras_vitmix_cli import catalog, catalog_data, listing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "keras_vitmix")
# The -c program: every --help and two listings through the entry point, then the
# frameworks that are loaded.
PROBE = """
import json, sys
import keras_vitmix_cli
codes = []
for argv in {argvs!r}:
    try:
        codes.append(keras_vitmix_cli.main(argv))
    except SystemExit as exit_:
        codes.append(exit_.code)
print(json.dumps({{"codes": codes, "loaded": [m for m in {frameworks!r} if m in sys.modules]}}))
"""
HELP_AND_LISTING = [["--help"], *([command, "--help"] for command in
                                  ("models", "train", "evaluate", "predict", "visualize", "export")),
                    ["models"], ["models", "vit_*"], ["--backend", "torch", "models", "seed_*"]]


@pytest.mark.slow
def test_help_and_models_import_no_framework():
    env = {**os.environ, "PYTHONPATH": REPO}
    program = PROBE.format(argvs=HELP_AND_LISTING, frameworks=FRAMEWORKS)
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0] * len(HELP_AND_LISTING), "loaded": []}
    assert "usage: keras-vitmix predict" in done.stdout and "vit_tiny_patch16_224" in done.stdout


def test_the_catalogue_matches_the_registry_and_results():
    """Names, families, descriptions, the configured input sizes and the accuracies of
    RESULTS.md's current tables (the built facts and timm's answers: the slow tests)."""
    live = catalog.live_catalog(build=False, timm=False)
    assert [row["name"] for row in catalog_data.MODELS] == [row["name"] for row in live]
    for stored, now in zip(catalog_data.MODELS, live):
        assert (stored["family"], stored["description"], stored["accuracy"]) == (
            now["family"], now["description"], now["accuracy"]), stored["name"]
        assert now["input_size"] in (None, stored["input_size"]), stored["name"]
    accuracies = {row["name"]: row["accuracy"] for row in catalog_data.MODELS if row["accuracy"]}
    assert accuracies["convmixer_256_8"] == (("48.00%", "Accuracy on CIFAR-10: validation accuracy"),)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="counted once, under jax (the same on every backend)")
def test_the_catalogue_s_parameters_and_input_sizes_are_the_built_models():
    live = catalog.live_catalog(build=True, timm=False)
    stored = [{**row, "timm_weights": None} for row in catalog_data.MODELS]
    assert catalog.stale_rows(stored, live) == []


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="asked once, under jax (timm's answer is the same)")
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm (the [weights] extra)")
def test_the_catalogue_s_timm_weights_are_what_weights_py_finds():
    available = {row["name"] for row in catalog_data.MODELS if row["timm_weights"]}
    assert available == {name for name in (row["name"] for row in catalog_data.MODELS) if catalog.timm_weights(name)}
    assert {"vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "convmixer_768_32"} <= available
    assert not available & {"mixer_s16_224", "vit_cifar_patch4_32", "seed_vit"}  # no timm checkpoint


def test_results_tables_with_a_model_and_an_accuracy_column_are_read():
    text = (
        "# Results\n\n## Speed\n\n| model | accuracy |\n|---|---:|\n| `seed_vit` | 1.00× |\n\n"
        "## Accuracy on X\n\nSome text.\n\n| model | family | validation accuracy | test accuracy |\n"
        "|---|---|---:|---:|\n| seed_vit | ViT | 51.25% | 50.00% |\n| unknown | ViT | 1% | 2% |\n"
        "\n## Digits\n\n| backend | test accuracy |\n|---|---:|\n| jax | 98.00% |\n"
    )
    assert catalog.results_accuracy(text, {"seed_vit"}) == {"seed_vit": [
        ("1.00×", "Speed: accuracy"),
        ("51.25%", "Accuracy on X: validation accuracy"),
        ("50.00%", "Accuracy on X: test accuracy"),
    ]}


def test_stale_rows_names_what_differs():
    rows = [{"name": "a", "parameters": 1}, {"name": "b", "parameters": 2}]
    assert catalog.stale_rows(rows, [{"name": "a", "parameters": 1}, {"name": "b", "parameters": 3},
                                     {"name": "c", "parameters": 4}]) == ["b", "c"]


def test_the_table_has_a_header_aligned_columns_and_notes():
    rows = [
        dict(name="tiny", family="ViT", parameters=1234, input_size=(32, 32), timm_weights=False,
             accuracy=(("48.00%", "Accuracy on X: validation accuracy"),), description="a tiny ViT"),
        dict(name="wider_model", family="MLPMixer", parameters=5_717_416, input_size=(224, 160),
             timm_weights=True, accuracy=(), description="a Mixer"),
    ]
    lines = listing.format_table(rows).splitlines()
    assert lines[0].split() == ["name", "family", "parameters", "input", "size", "timm", "weights", "accuracy",
                                "description"]
    assert [line.split() for line in lines[1:3]] == [
        ["tiny", "ViT", "1,234", "32x32", "no", "48.00%", "[1]", "a", "tiny", "ViT"],
        ["wider_model", "MLPMixer", "5,717,416", "224x160", "yes", "–", "a", "Mixer"],
    ]
    # Every line's description starts in one column; parameters are right-aligned.
    assert {line.index(last) for line, last in zip(lines, ("description", "a tiny ViT", "a Mixer"))} == {73}
    assert {line.index("parameters") + len("parameters") for line in lines[:1]} == {
        line.index(count) + len(count) for line, count in zip(lines[1:3], ("1,234", "5,717,416"))}
    assert lines[3] == "[1] benchmarks/RESULTS.md, Accuracy on X: validation accuracy (its section names the run's " \
                       "data and budget)"


def test_listing_filters_and_says_when_nothing_matches(capsys):
    assert [row["name"] for row in listing.find("mixer_*")] == ["mixer_b16_224", "mixer_cifar_patch4_32",
                                                                  "mixer_s16_224"]
    assert listing.print_models("no_such_*") == 1
    assert capsys.readouterr().err.strip() == "No model matches 'no_such_*'."
