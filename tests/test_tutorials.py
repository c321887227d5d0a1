"""tutorials/: every notebook runs end to end with small parameters, and is committed clean.

The notebooks execute once, in a Jupyter kernel, under the jax run of `make test` (once is
enough to keep them runnable, and CI time); KERAS_VITMIX_TUTORIALS=1 runs them under any
backend:

    KERAS_BACKEND=torch KERAS_VITMIX_TUTORIALS=1 python -m pytest tests/test_tutorials.py

The kernel imports this checkout's keras_vitmix (PYTHONPATH is the repository root).
"""

import ast
import os
import pathlib
import sys
import time

import keras
import pytest

nbformat = pytest.importorskip("nbformat")

REPO = pathlib.Path(__file__).resolve().parent.parent
TUTORIALS = REPO / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CHAPTERS = [
    "01_attention", "02_vit", "03_visualizing_attention", "04_mlp_mixer", "05_hybrid_mixer_vit", "06_conv_mixer",
    "07_fine_tuning_and_distillation",
]

# Small enough that the seven notebooks run in a few minutes on a 2-core CPU; every name
# must be a parameter of the notebook (checked), so a renamed parameter fails here. The
# batch size is the recipe's, as the notebooks leave it (one epoch of the digits: 19 steps).
SMALL = {"DATASET": "digits", "EPOCHS": 1, "REPEATS": 1}
# What a notebook may pass to training.train: every other training argument is the recipe's
# (chapter 7's adapting arguments choose what is trained, and the recipe then follows).
TRAIN_KEYWORDS = {"epochs", "output_dir", "verbose", "weights", "freeze", "teacher"}
OVERRIDES = {
    "01_attention": {"HIDDEN_DIM": 16, "NUM_HEADS": 2, "COST_TOKENS": [16, 32, 64]},
    "02_vit": {"HIDDEN_DIM": 16, "NUM_LAYERS": 1, "NUM_HEADS": 2},
    "03_visualizing_attention": {"IMAGE_SIZE": 36, "HIDDEN_DIM": 16},
    "04_mlp_mixer": {"HIDDEN_DIM": 16, "NUM_LAYERS": 1, "COST_SIZES": [16, 32]},
    "05_hybrid_mixer_vit": {"HIDDEN_DIM": 16, "DEPTH": 2, "NUM_HEADS": 2, "SPEED_BATCH": 16},
    "06_conv_mixer": {
        "HIDDEN_DIM": 16, "DEPTH": 2, "PATCH_SIZE": 4, "SPEED_BATCH": 4,
        "SPEED_MODELS": ["seed_mixer", "seed_convmixer"],
    },
    "07_fine_tuning_and_distillation": {"TEACHER": "seed_convmixer"},
}


def read(path):
    return nbformat.read(path, as_version=4)


def parameters_cell(notebook):
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "one code cell tagged 'parameters'"
    return tagged[0]


def parameter_names(cell):
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}


def test_the_seven_chapters_are_there_and_listed():
    assert [p.stem for p in NOTEBOOKS] == CHAPTERS
    readme = (TUTORIALS / "README.md").read_text()
    for chapter in CHAPTERS:
        assert f"{chapter}.ipynb" in readme
    assert "KERAS_BACKEND" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_a_parameters_cell(path):
    notebook = read(path)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs left in {path.name}"
    names = parameter_names(parameters_cell(notebook))
    assert {"DATASET", "IMAGE_SIZE"} <= names, names
    assert set(OVERRIDES[path.stem]) <= names
    assert "EPOCHS" in names or path.stem == "01_attention"  # chapter 1 trains nothing


def train_calls(notebook):
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    return [
        node for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "train"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_training_takes_the_recipe(path):
    """Issue #28: the notebooks train through training.train with the recipe it picks
    from the data, the epochs included by default (EPOCHS = None), and the default
    pipeline; the accuracies their text states are those defaults' results."""
    notebook = read(path)
    calls = train_calls(notebook)
    assert bool(calls) == (path.stem != "01_attention")
    for call in calls:
        keywords = {k.arg for k in call.keywords}
        assert keywords <= TRAIN_KEYWORDS, f"{path.name} sets {sorted(keywords - TRAIN_KEYWORDS)}: leave them to the recipe"
    if calls:
        defaults = {
            t.id: node.value for node in ast.parse(parameters_cell(notebook).source).body
            if isinstance(node, ast.Assign) for t in node.targets
        }
        assert isinstance(defaults["EPOCHS"], ast.Constant) and defaults["EPOCHS"].value is None
        assert "BATCH_SIZE" not in defaults


def run_notebook(path, output_dir, monkeypatch):
    """Executes `path` with SMALL parameters in a kernel under this process's backend."""
    from nbclient import NotebookClient

    notebook = read(path)
    cell = parameters_cell(notebook)
    names = parameter_names(cell)
    overrides = {**{k: v for k, v in SMALL.items() if k in names}, **OVERRIDES[path.stem]}
    if "OUTPUT_DIR" in names:
        overrides["OUTPUT_DIR"] = str(output_dir)
    cell.source += "\n\n# test overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    check = "import keras_vitmix\nassert keras_vitmix.__file__.startswith({!r}), keras_vitmix.__file__"
    notebook.cells.insert(notebook.cells.index(cell) + 1, nbformat.v4.new_code_cell(check.format(str(REPO))))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # ipykernel's installed kernel.json starts "python" from PATH: make it this interpreter
    # (make test runs .venv/bin/python without activating the environment).
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no inline PNGs to render
    # XLA's optimization passes dominate the kernels' time at these sizes: compile lightly.
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return notebook, time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    if keras.backend.backend() != "jax" and os.environ.get("KERAS_VITMIX_TUTORIALS") != "1":
        pytest.skip("notebooks execute once, under the jax job, to keep CI time (KERAS_VITMIX_TUTORIALS=1 forces)")
    pytest.importorskip("nbclient")
    notebook, seconds = run_notebook(path, tmp_path, monkeypatch)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    print(f"{path.stem}: {seconds:.1f} s under {keras.backend.backend()}")
