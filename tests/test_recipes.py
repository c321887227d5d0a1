"""Recipes: docs/recipes.md's tables hold exactly `get_recipe`'s values (issue #28's
done-when), every row is in range, the choice of recipe, and bad input."""

import dataclasses
import pathlib
import subprocess
import sys

import pytest

from keras_vitmix import recipes

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "recipes.md"
MODULE = ROOT / "keras_vitmix" / "recipes.py"
BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"
ROWS = recipes.FAMILIES + ("default",)

# The doc's column headers, as the page promises them, and the Recipe field each shows.
HEADERS = {
    "epochs": "epochs",
    "batch size": "batch_size",
    "learning rate": "learning_rate",
    "weight decay": "weight_decay",
    "warmup epochs": "warmup_epochs",
    "label smoothing": "label_smoothing",
    "augment": "augment",
    "drop path": "drop_path_rate",
    "EMA": "ema_momentum",
    "test-time flip": "test_time_flip",
    "clip norm": "clipnorm",
    "layer decay": "layer_decay",
}


def doc_block():
    text = DOC.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"{DOC}: one {BEGIN} ... {END} block"
    return text.split(BEGIN)[1].split(END)[0]


def typed(cell):
    """A cell as the value it shows: "off" None, "yes"/"no" a bool, else an int, a
    float or the text."""
    if cell in ("off", "yes", "no"):
        return {"off": None, "yes": True, "no": False}[cell]
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def doc_tables():
    """{recipe: {family: {field: value}}} read from the doc's markdown tables."""
    tables, name, header = {}, None, None
    for line in doc_block().splitlines():
        if line.startswith("### "):
            name, header = line[4:].strip(), None
            tables[name] = {}
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):
                tables[name][cells[0]] = {HEADERS[h]: typed(c) for h, c in zip(header[1:], cells[1:])}
    return tables, header


def test_the_docs_tables_are_the_recipes_values():
    tables, header = doc_tables()
    assert header == ["family", *HEADERS]
    assert list(tables) == list(recipes.RECIPES)
    for name, rows in tables.items():
        assert list(rows) == list(ROWS), name
        for family, values in rows.items():
            expected = recipes.get_recipe(name, family).as_dict()
            assert set(values) == set(expected)
            for field, value in values.items():
                want = expected[field]
                assert value == want and type(value) is type(want), (name, family, field, value, want)


def test_the_docs_block_is_describes_output():
    assert doc_block().strip() == recipes.describe().strip(), "run `python -m keras_vitmix.recipes` into docs/recipes.md"


def test_describe_one_recipe_is_its_section():
    assert recipes.describe("cifar").strip() in recipes.describe()
    assert recipes.describe("cifar").startswith("### cifar\n")


@pytest.mark.parametrize("name", recipes.RECIPES)
@pytest.mark.parametrize("family", ROWS)
def test_every_row_is_in_range(name, family):
    recipe = recipes.get_recipe(name, family)
    assert (recipe.name, recipe.family) == (name, family)
    assert isinstance(recipe.epochs, int) and recipe.epochs >= 1
    assert isinstance(recipe.batch_size, int) and recipe.batch_size >= 1
    assert 0 < recipe.learning_rate < 1
    assert 0 <= recipe.weight_decay < 1
    assert isinstance(recipe.warmup_epochs, int) and 0 <= recipe.warmup_epochs < recipe.epochs
    assert 0 <= recipe.label_smoothing < 1
    assert recipe.augment in recipes.AUGMENTATIONS
    assert 0 <= recipe.drop_path_rate < 1
    assert recipe.ema_momentum is None or 0 < recipe.ema_momentum < 1
    assert isinstance(recipe.test_time_flip, bool)
    assert recipe.clipnorm is None or recipe.clipnorm > 0
    assert isinstance(recipe.layer_decay, float) and 0 < recipe.layer_decay <= 1
    # Layer decay is for adapting pretrained weights: off in every recipe trained from scratch.
    assert (recipe.layer_decay < 1) == (name == "finetune")
    if family == "ConvMixer":
        assert recipe.drop_path_rate == 0.0, "ConvMixer takes no drop_path_rate"
    assert list(recipe.as_dict()) == [f.name for f in dataclasses.fields(recipe)][2:]


def test_a_few_values_from_the_references():
    convmixer = recipes.get_recipe("cifar", "ConvMixer")  # locuslab/convmixer-cifar10
    assert (convmixer.learning_rate, convmixer.weight_decay, convmixer.batch_size) == (1e-2, 0.01, 512)
    assert recipes.get_recipe("cifar", "HybridConvMixerMixer").drop_path_rate == 0.1
    deit = recipes.get_recipe("deit", "ViT")
    assert (deit.learning_rate, deit.batch_size, deit.epochs, deit.clipnorm) == (2.5e-4, 256, 300, None)
    assert recipes.get_recipe("small").as_dict() == dict(
        epochs=15, batch_size=64, learning_rate=2e-3, weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1,
        augment="light", drop_path_rate=0.0, ema_momentum=None, test_time_flip=True, clipnorm=1.0,
        layer_decay=1.0,
    )


def test_the_finetune_rows():
    # MAE's fine-tuning rate rule (lr 5e-4 x batch / 256) at batch 64, layer decay 0.75.
    vit = recipes.get_recipe("finetune", "ViT")
    assert (vit.learning_rate, vit.batch_size, vit.layer_decay, vit.weight_decay) == (1.25e-4, 64, 0.75, 0.05)
    assert (vit.epochs, vit.warmup_epochs, vit.augment, vit.drop_path_rate) == (10, 1, "light", 0.1)
    convmixer = recipes.get_recipe("finetune", "ConvMixer")
    assert convmixer.learning_rate == 2.5 * vit.learning_rate and convmixer.layer_decay == 0.75
    assert convmixer.drop_path_rate == 0.0
    hybrid = recipes.get_recipe("finetune", "HybridConvMixerMixer")
    assert (hybrid.learning_rate, hybrid.drop_path_rate) == (convmixer.learning_rate, 0.1)


def test_the_data_never_chooses_finetune():
    chosen = {
        recipes.choose_recipe(n, (side, side, 3)) for n in (1, 9_999, 10_000, 1_281_167) for side in (8, 96, 97, 512)
    }
    assert chosen == {"small", "cifar", "deit"}


@pytest.mark.parametrize(
    "num_examples, image_shape, expected",
    [
        (9_999, (32, 32, 3), "small"),
        (9_999, (224, 224, 3), "small"),
        (10_000, (32, 32, 3), "cifar"),
        (10_000, (96, 96), "cifar"),
        (10_000, 72, "cifar"),
        (10_000, (97, 97, 3), "deit"),
        (10_000, (96, 97), "deit"),
        (1_281_167, (224, 224, 3), "deit"),
    ],
)
def test_choose_recipe(num_examples, image_shape, expected):
    assert recipes.choose_recipe(num_examples, image_shape) == expected


@pytest.mark.parametrize(
    "num_examples, image_shape, named",
    [
        (0, (32, 32), "num_examples=0"),
        (10.5, (32, 32), "num_examples=10.5"),
        (True, (32, 32), "num_examples=True"),
        (100, (32,), "image_shape=(32,)"),
        (100, (0, 32), "image_shape=(0, 32)"),
        (100, "32", "image_shape='32'"),
    ],
)
def test_choose_recipe_rejects_bad_input(num_examples, image_shape, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        recipes.choose_recipe(num_examples, image_shape)


def test_an_unknown_recipe_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"name='cifr'") as error:
        recipes.get_recipe("cifr")
    assert "'cifar'" in str(error.value) and str(recipes.RECIPES) in str(error.value)
    with pytest.raises(ValueError, match="name=None"):
        recipes.get_recipe(None)


def test_an_unknown_family_reads_the_default_row():
    for name in recipes.RECIPES:
        default = recipes.get_recipe(name, "default")
        assert dataclasses.replace(recipes.get_recipe(name, "MyNet"), family="default") == default
        assert recipes.get_recipe(name, "MyNet").family == "default"
    assert recipes.get_recipe("cifar", "convmixer").family == "ConvMixer"  # any case


def test_a_model_class_or_instance_reads_its_familys_row():
    from keras_vitmix import applications

    expected = recipes.get_recipe("cifar", "ConvMixer")
    assert recipes.get_recipe("cifar", applications.ConvMixer) == expected
    assert recipes.get_recipe("cifar", applications.create_model("convmixer_256_8")) == expected

    class MyViT(applications.ViT):
        pass

    assert recipes.get_recipe("cifar", MyViT).family == "ViT"
    assert recipes.get_recipe("cifar", object()).family == "default"


def test_a_recipe_out_of_range_names_the_values():
    recipe = recipes.get_recipe("cifar", "ViT")
    with pytest.raises(ValueError, match=r"augment='heavy'"):
        dataclasses.replace(recipe, augment="heavy")
    with pytest.raises(ValueError, match=r"epochs=0.*warmup_epochs=5"):
        dataclasses.replace(recipe, epochs=0)
    for layer_decay in (0.0, 1.5, True):
        with pytest.raises(ValueError, match=rf"layer_decay={layer_decay!r}"):
            dataclasses.replace(recipe, layer_decay=layer_decay)
    assert dataclasses.replace(recipe, epochs=50).epochs == 50


def test_the_module_imports_no_framework():
    # `import keras_vitmix` imports Keras, so the file is loaded on its own.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('recipes_alone', {str(MODULE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert module.describe()\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_main_entry_prints_describe():
    code = (
        "import runpy\n"
        f"runpy.run_path({str(MODULE)!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == recipes.describe()


def test_the_augmentation_names_are_the_pipelines():
    from keras_vitmix import augmentation

    if not hasattr(augmentation, "AUGMENTATIONS"):
        pytest.skip("keras_vitmix.augmentation names no strengths yet")
    assert recipes.AUGMENTATIONS == augmentation.AUGMENTATIONS
