"""Short, complete messages from keras_vitmix.datasets (issue #33): every corrupt file
of a split named at once on both pipelines, a typo answered with at most five names,
progress that writes plain lines when nobody watches a terminal."""

import io
import os
import re

import numpy as np
import pytest

from keras_vitmix import datasets
from keras_vitmix.datasets import files
from keras_vitmix.datasets.progress import Progress


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "default-cache"))


def jpeg_bytes(seed):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (8, 8, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_jpegs(root, counts):
    for name, count in counts.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(count):
            (root / "train" / name / f"{i:03d}.jpg").write_bytes(jpeg_bytes(hash((name, i)) % 2**31))
    return root


def corrupt(paths):
    """A JPEG cut short, garbage bytes, and a JPEG header followed by garbage."""
    contents = (jpeg_bytes(0)[:120], b"garbage, not an image " * 4, b"\xff\xd8\xff\xe0" + bytes(range(200)))
    for path, content in zip(paths, contents):
        with open(path, "wb") as handle:
            handle.write(content)


@pytest.fixture
def three_corrupt(tmp_path):
    """A folder whose train split holds 3 corrupt files (listing reads no content, so
    the split is listed first and its files then spoilt)."""
    root = write_jpegs(tmp_path / "spoilt", {"cat": 12, "dog": 12})
    train = datasets.list_folder(root, "train")[0]
    bad = [train[1], train[7], train[-2]]
    corrupt(bad)
    return root, bad


def test_load_names_every_corrupt_file_of_the_split(three_corrupt):
    root, bad = three_corrupt
    with pytest.raises(ValueError) as info:
        datasets.load(root, "train")
    message = str(info.value)
    assert message.startswith(f"3 of the 20 image files of the 'train' split of {root} cannot be decoded")
    assert f"{bad[0]}: Not a complete JPEG, PNG, BMP or GIF image (truncated or corrupt file?" in message
    assert f"{bad[1]}: Not a JPEG, PNG, BMP or GIF image (corrupt file? it starts with b'garbage," in message
    assert f"{bad[2]}: Not a complete JPEG" in message
    assert "more" not in message
    _, info = datasets.load(root, "validation")  # the other splits are whole
    assert info.num_examples == 2


def test_load_arrays_names_every_corrupt_file_of_the_split(three_corrupt, tmp_path):
    root, bad = three_corrupt
    with pytest.raises(ValueError) as info:
        datasets.load_arrays(root, "train", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert message.startswith(f"3 of the 20 image files of the 'train' split of {root} cannot be decoded")
    assert all(f"\n  {path}: Not a" in message for path in bad), message
    assert datasets.load_arrays(root, "test", cache_dir=tmp_path / "cache")[0].shape == (2, 8, 8, 3)


def test_twenty_bad_files_are_named_and_the_rest_counted(tmp_path):
    root = write_jpegs(tmp_path / "ruined", {"cat": 30})
    (root / "test" / "cat").mkdir(parents=True)
    bad = [root / "test" / "cat" / f"{i:02d}.jpg" for i in range(25)]
    for path in bad:
        path.write_bytes(b"not a jpeg")
    for load in (lambda: datasets.load(root, "test"), lambda: datasets.load_arrays(root, "test")):
        with pytest.raises(ValueError) as info:
            load()
        lines = str(info.value).splitlines()
        assert lines[0].startswith("25 of the 25 image files of the 'test' split")
        assert [line.split(": ")[0].strip() for line in lines[1:21]] == [str(p) for p in bad[:20]]
        assert lines[21:] == ["  and 5 more"]


def test_a_checked_split_is_not_decoded_again_until_a_file_changes(tmp_path, monkeypatch):
    root = write_jpegs(tmp_path / "pets", {"cat": 10, "dog": 10})
    datasets.load(root, "validation")
    assert len(list((tmp_path / "default-cache").glob("pets-validation-*.checked"))) == 1

    def no_check(path):
        raise AssertionError("checked again")

    monkeypatch.setattr(files, "image_problem", no_check)
    datasets.load(root, "validation")  # the marker: no file decoded
    touched = datasets.list_folder(root, "validation")[0][0]
    os.utime(touched, ns=(os.stat(touched).st_atime_ns, os.stat(touched).st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="checked again"):
        datasets.load(root, "validation")
    # A split that load_arrays decoded is known to be whole: tf.data checks none of it.
    datasets.load_arrays(root, "train")
    datasets.load(root, "train")


@pytest.mark.parametrize("load", [datasets.load, datasets.load_arrays])
def test_a_misspelt_name_gets_five_close_names_at_most(load):
    with pytest.raises(ValueError) as info:
        load("digitz")
    message = str(info.value)
    assert "Did you mean: digits?" in message and len(message) < 400 and "\n" not in message
    assert "mnist" not in message  # no list of every TFDS name
    with pytest.raises(ValueError) as info:
        load("cifar-ten")
    message = str(info.value)
    suggestions = re.search(r"Did you mean: (.*?)\?", message).group(1).split(", ")
    assert "cifar10" in suggestions and len(suggestions) <= 5 and len(message) < 400, message


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    for stream in (io.StringIO(), Terminal()):
        progress = Progress(3_000, "Decoding pets", stream, interval=0.0)
        for done in (1_000, 2_000):
            progress.update(done)
        progress.close()
        out = stream.getvalue()
        if isinstance(stream, Terminal):
            assert out.startswith("\rDecoding pets: 1,000/3,000 files (33%)\rDecoding pets: 2,000/3,000")
            assert re.fullmatch(r".*\rDecoding pets: 3,000/3,000 files in \d+\.\d s\n", out, re.S)
        else:
            assert "\r" not in out and "\x1b" not in out
            lines = out.splitlines()
            assert lines[0] == "Decoding pets: 3,000 files..." and len(lines) == 2
            assert re.fullmatch(r"Decoding pets: 3,000/3,000 files in \d+\.\d s", lines[1])


def test_decoding_and_checking_report_in_plain_lines_when_piped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files, "PROGRESS_FILES", 3)
    monkeypatch.setattr(files, "CHUNKSIZE", 4)
    root = write_jpegs(tmp_path / "pets", {"cat": 20, "dog": 20})
    datasets.load_arrays(root, "train")
    datasets.load(root, "test")
    captured = capsys.readouterr()
    assert captured.out == "" and "\r" not in captured.err and "\x1b" not in captured.err
    lines = captured.err.splitlines()
    assert lines[0] == f"Decoding the 'train' split of {root}: 32 files..."
    assert re.fullmatch(rf"Decoding the 'train' split of {re.escape(str(root))}: 32/32 files in \d+\.\d s", lines[1])
    assert lines[2] == f"Checking the 'test' split of {root}: 4 files..."
    assert lines[3].startswith(f"Checking the 'test' split of {root}: 4/4 files in ") and len(lines) == 4
