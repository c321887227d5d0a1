"""`.keras` files that are not models: every reader of the library names the file and
says what it expected, where Keras says "File not found" for a file that exists."""

import zipfile

import keras
import numpy as np
import pytest

from keras_vitmix import saving, training

from tests.small_models import small


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    model = small("ConvMixer", hidden_dim=16, num_layers=1)
    model.save(path)
    return path, model


def broken_files(folder, saved_path):
    """{kind: path} of .keras files that are not models, and what each error says."""
    data = saved_path.read_bytes()
    (folder / "garbage.keras").write_bytes(b"not a zip archive at all" * 10)
    (folder / "empty.keras").write_bytes(b"")
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(folder / "no_config.keras", "w") as archive:
        archive.writestr("notes.txt", "hello")
    # Flip one byte inside the stored weights: the zip opens, a checksum fails.
    with zipfile.ZipFile(saved_path) as archive:
        info = archive.getinfo("model.weights.h5")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    flipped = bytearray(data)
    flipped[start + info.compress_size // 2] ^= 0xFF
    (folder / "flipped.keras").write_bytes(bytes(flipped))
    return {
        "garbage": r"not a readable zip archive \(truncated or corrupt\?\)",
        "empty": r"not a readable zip archive",
        "truncated": r"not a readable zip archive",
        "no_config": r"zip archive without config\.json \(members: notes\.txt\)",
        "flipped": r"corrupt: its member 'model\.weights\.h5' fails its checksum",
    }


def test_broken_files_are_named_with_what_was_expected(tmp_path, saved):
    for kind, message in broken_files(tmp_path, saved[0]).items():
        path = tmp_path / f"{kind}.keras"
        with pytest.raises(ValueError, match=message) as info:
            saving.load_model(path)
        assert repr(str(path)) in str(info.value), info.value
        if kind != "flipped" and kind != "no_config":
            assert "Expected a .keras file as `model.save` writes it" in str(info.value)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"No such model file\. Received: model='.*missing\.keras'"):
        saving.load_model(tmp_path / "missing.keras")
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"ending in \.keras\. Received: model='.*model\.h5'"):
        saving.load_model(tmp_path / "model.h5")
    with pytest.raises(TypeError, match="Received: model of type int"):
        saving.load_model(3)


def test_an_archive_keras_cannot_rebuild_is_named(tmp_path, saved):
    path = tmp_path / "unknown_class.keras"
    with zipfile.ZipFile(saved[0]) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                data = data.replace(b"ConvMixer", b"NoSuchFamily")  # every class name of the family
            target.writestr(item, data)
    with pytest.raises(ValueError, match=r"unknown_class\.keras' is a \.keras archive but does not load.*NoSuchFamily"):
        saving.load_model(path)


def test_a_good_file_loads(saved):
    path, model = saved
    loaded = saving.load_model(path, compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6
    )


def test_train_and_evaluate_name_a_broken_model_file(tmp_path, saved):
    broken_files(tmp_path, saved[0])
    path = str(tmp_path / "truncated.keras")
    with pytest.raises(ValueError, match=r"truncated\.keras.*not a readable zip archive"):
        training.train(path, "digits", epochs=1, output_dir=str(tmp_path / "run"), verbose=0)
    with pytest.raises(ValueError, match=r"truncated\.keras.*not a readable zip archive"):
        training.evaluate(path, "digits")
