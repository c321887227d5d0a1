"""benchmarks/accuracy.py trains only through `keras_vitmix.training.train`: no
augmentation of its own, the flags default to the recipe's row for each family, a short
run writes its RESULTS section, and the archive is extracted once, safely."""

import json

import numpy as np
import pytest

from tests.benchmark_utils import BENCHMARKS, benchmark_script


@pytest.fixture(scope="module")
def script():
    with benchmark_script("accuracy") as module:
        yield module


def test_the_script_has_no_pipeline_or_augmentation_of_its_own():
    """Issue #28's "done when": the one pipeline is `train`'s."""
    source = (BENCHMARKS / "accuracy.py").read_text()
    for own in ("np.pad", "rng.beta", "light_augment", "mix(", "PyDataset", "import numpy", ".fit("):
        assert own not in source, f"benchmarks/accuracy.py has {own!r}"
    assert "training.train(" in source


def test_training_flags_default_to_the_recipe_of_each_family(script):
    from keras_vitmix import recipes

    args = script.parse_arguments([])
    assert args.pipeline == "device" and args.recipe == "cifar" and args.seed == 0
    assert script.training_arguments(args) == {}  # train() takes every value from the recipe
    convmixer, vit = script.planned(args, "convmixer_256_8"), script.planned(args, "vit_cifar_patch4_32")
    assert convmixer == recipes.get_recipe("cifar", "ConvMixer").as_dict()
    assert convmixer["batch_size"] == 512 and vit["batch_size"] == recipes.get_recipe("cifar", "ViT").batch_size
    given = script.parse_arguments(["--batch-size", "64", "--augment", "light", "--ema", "0", "--recipe", "deit"])
    assert script.training_arguments(given) == {"batch_size": 64, "augment": "light", "ema_momentum": False}
    plan = script.planned(given, "convmixer_256_8")
    assert plan["batch_size"] == 64 and plan["learning_rate"] == recipes.get_recipe("deit", "ConvMixer").learning_rate
    with pytest.raises(SystemExit):
        script.parse_arguments(["--pipeline", "numpy"])


def test_input_size_is_the_models_unless_image_size_is_given(script):
    assert script.input_size("seed_vit") == (72, 72)  # the seed notebook's upscaled input
    assert script.input_size("convmixer_256_8") == (32, 32)
    assert script.input_size("seed_vit", 32) == (32, 32)


def _archive(tmp_path, per_class=10):
    """A gzipped tar of train/<class>/*.png in the CIFAR archive's layout: two classes
    of 32x32 images, dark and bright, so that a model can tell them apart."""
    import tarfile

    from PIL import Image

    source = tmp_path / "source"
    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (source / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 96, (32, 32, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(source / "train" / name / f"{i:04d}.png")
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "train", arcname="train")
    return archive


def test_extract_replaces_a_killed_extraction_and_runs_once(script, tmp_path, monkeypatch):
    archive = _archive(tmp_path)
    cache = tmp_path / "cache"
    killed = cache / "cifar10-train-jpeg" / "train" / "dark"
    killed.mkdir(parents=True)
    (killed / "0000.png").write_bytes(b"\x89PNG")  # truncated, and no completion marker
    folder = script.extract(archive, cache)
    assert folder == cache / "cifar10-train-jpeg"
    expected = (tmp_path / "source" / "train" / "dark" / "0000.png").read_bytes()
    assert (folder / "train" / "dark" / "0000.png").read_bytes() == expected
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["dark", "light"]
    assert [p.name for p in cache.iterdir()] == ["cifar10-train-jpeg"]  # no staging folder left

    def fail(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(script.tarfile, "open", fail)
    assert script.extract(archive, cache) == folder  # complete: not extracted again


def test_extract_keeps_the_copy_another_run_completed(script, tmp_path, monkeypatch):
    """Two runs on one cache: the one that finishes second drops its own copy."""
    archive = _archive(tmp_path, per_class=2)
    cache = tmp_path / "cache"
    real_open = script.tarfile.open

    def other_run_finishes_first(*args, **kwargs):
        monkeypatch.setattr(script.tarfile, "open", real_open)
        script.extract(archive, cache)  # the other run, complete before this one renames
        (cache / "cifar10-train-jpeg" / "theirs").touch()
        return real_open(*args, **kwargs)

    monkeypatch.setattr(script.tarfile, "open", other_run_finishes_first)
    folder = script.extract(archive, cache)
    assert (folder / "theirs").exists() and (folder / ".complete").exists()
    assert [p.name for p in cache.iterdir()] == ["cifar10-train-jpeg"]


def test_a_short_run_writes_the_section_through_the_device_pipeline(script, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VITMIX_MALLOC", "system")  # the script tunes malloc: not in the test process
    results, output = tmp_path / "RESULTS.md", tmp_path / "runs"
    results.write_text("# Results\n\n## Accuracy on CIFAR-10\n\nold table\n\n## Other\n\nkept\n")
    arguments = [
        "--archive", str(_archive(tmp_path)), "--cache", str(tmp_path / "cache"), "--per-class", "10",
        "--models", "convmixer_256_8", "--overrides", json.dumps({"hidden_dim": 16, "num_layers": 1}),
        "--epochs", "1", "--batch-size", "6", "--augment", "light", "--results", str(results), "--output", str(output),
    ]
    script.main(arguments)
    metrics = json.loads((output / "convmixer_256_8" / "metrics.json").read_text())
    assert metrics["pipeline"] == "device" and metrics["recipe"] == "cifar" and metrics["epochs"] == 1
    assert metrics["batch_size"] == 6 and metrics["augment"] == "light"  # given
    assert metrics["learning_rate"] == 0.01 and metrics["label_smoothing"] == 0.0  # the ConvMixer row's
    # One held-out image of each class; the benchmark holds out no test split.
    assert metrics["validation_examples"] == 2 and "test_accuracy" not in metrics
    text = results.read_text()
    section = text[text.index("## Accuracy on CIFAR-10"):text.index("## Other")]
    assert "old table" not in section and "kept" in text
    row = next(line for line in section.splitlines() if line.startswith("| convmixer_256_8 | ConvMixer |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[3:6] == ["cifar", "1", "18"] and cells[6] == f"{metrics['validation_accuracy']:.2%}"
    assert "device pipeline" in section and "recipe 'cifar'" in section and "with seed 0" in section
    resolved = next(line for line in section.splitlines()[::-1] if line.startswith("| convmixer_256_8 |"))
    assert "| 6 | 0.01 |" in resolved and "| light |" in resolved

    # Another seed: another initialization, the same validation images.
    script.main([*arguments, "--seed", "1", "--output", str(tmp_path / "seed1")])
    other = json.loads((tmp_path / "seed1" / "convmixer_256_8" / "metrics.json").read_text())
    assert other["validation_examples"] == 2 and other["validation_loss"] != metrics["validation_loss"]
    assert "with seed 0" in results.read_text()
