"""Many image files at once, without TensorFlow: decoded into one array (`decode_files`)
or checked whole (`check_files`), in worker processes when that pays, with progress on
a terminal, and every bad file of the pass named in one ValueError.

The check is what lets the tf.data pipeline fail before training rather than at the
first bad file TensorFlow meets mid-epoch (a bare `jpeg::Uncompress failed` naming no
file). It decodes each file once with Pillow and, when all are whole, leaves an empty
marker in the cache folder named by a hash of the paths, sizes and modification times:
the next load of the same files costs one `os.stat` each. `load_arrays` leaves the same
marker after decoding a split, so a split decoded for the in-memory pipeline is not
checked again for tf.data.
"""

import concurrent.futures
import functools
import hashlib
import itertools
import multiprocessing
import os
import pathlib
import tempfile
import time
import warnings

import numpy as np

from keras_vitmix.datasets.folders import decode, image_problem, read_image
from keras_vitmix.datasets.progress import Progress

CACHE_ENV = "KERAS_VITMIX_CACHE"
CHUNKSIZE = 256  # files per task sent to a worker (and done here first, to time them)
# Seconds of work left, at the first chunk's pace, that make worker processes worth
# their start (several seconds each: they import keras_vitmix, Keras and its backend).
POOL_SECONDS = 20.0
PROGRESS_FILES = 2_000  # a pass over more files reports its progress
LISTED = 20  # bad files an error names one by one; the rest are counted
_CHECK_FORMAT = 1  # bump when what the check accepts changes


def decode_files(paths, image_size=None, name="the files"):
    """Image files as one uint8 (N, H, W, 3) array, each resized to `image_size` (default:
    the first file's size) where it differs.

    The first `CHUNKSIZE` files are decoded here and timed. When the rest, at that
    pace, would take more than `POOL_SECONDS`, worker processes decode it: a worker
    takes seconds to start (it imports keras_vitmix, so Keras and its backend), more
    than a CIFAR-sized folder takes to decode in one process, less than an
    ImageNet-sized one. Workers start with "spawn", since the caller may run JAX,
    PyTorch or TensorFlow threads that a forked child would inherit in an undefined
    state; a script that reaches this at its top level needs the
    `if __name__ == "__main__":` guard, as for any spawned worker.

    Raises:
        ValueError: after the whole pass, naming every file that does not decode
            (`LISTED` of them, then how many more), `name` saying whose files they are.
    """
    if not paths:
        raise ValueError(f"`paths` must name at least one image file. Received: paths={paths!r}")
    size = tuple(image_size or _first_size(paths))
    images = np.empty((len(paths), *size, 3), np.uint8)
    problems = []
    read = functools.partial(_read_or_problem, image_size=size)
    for i, result in enumerate(map_files(read, paths, f"Decoding {name}")):
        if isinstance(result, str):
            problems.append((paths[i], result))
        else:
            images[i] = result
    if problems:
        raise bad_files_error(problems, len(paths), name)
    return images


def check_files(paths, name="the files", cache_name="files", cache_dir=None):
    """Every file decoded once with Pillow and found whole, or one ValueError naming
    every bad one (`LISTED`, then a count). A pass without a bad file leaves a marker
    (`cache_file(cache_dir, cache_name, ...)`): the same files are not decoded again.

    Args:
        paths: image files.
        name: whose files they are, for messages (e.g. "the 'train' split of data/pets").
        cache_name: the marker's name before its hash.
        cache_dir: the cache folder; defaults to `$KERAS_VITMIX_CACHE` or
            `~/.cache/keras_vitmix`.
    """
    marker = cache_file(cache_dir, cache_name, ("checked", _CHECK_FORMAT), paths, suffix=".checked")
    if marker.exists():
        return
    results = map_files(image_problem, paths, f"Checking {name}")
    problems = [(paths[i], problem) for i, problem in enumerate(results) if problem is not None]
    if problems:
        raise bad_files_error(problems, len(paths), name)
    _write_marker(marker, len(paths))


def mark_checked(paths, cache_name, cache_dir=None):
    """Leaves `check_files`' marker for files known to decode (a split just decoded)."""
    marker = cache_file(cache_dir, cache_name, ("checked", _CHECK_FORMAT), paths, suffix=".checked")
    if not marker.exists():
        _write_marker(marker, len(paths))


def _write_marker(marker, count):
    write_atomically(marker, lambda file: file.write(f"{count} files decode whole\n".encode()))


def bad_files_error(problems, count, name):
    """One ValueError for every `(path, problem)`: the first `LISTED` named, the rest counted."""
    lines = [f"  {path}: {problem}" for path, problem in problems[:LISTED]]
    if len(problems) > LISTED:
        lines.append(f"  and {len(problems) - LISTED:,} more")
    return ValueError(
        f"{len(problems):,} of the {count:,} image files of {name} cannot be decoded; remove or replace "
        "them. Received:\n" + "\n".join(lines)
    )


def map_files(function, paths, what="Reading files"):
    """`function(path)` for each path, in order: here, or in spawned worker processes when
    the rest would take over `POOL_SECONDS` at the first `CHUNKSIZE` files' pace (see
    `decode_files`). A pass over more than `PROGRESS_FILES` files shows its progress."""
    progress = Progress(len(paths), what) if len(paths) > PROGRESS_FILES else None
    head = min(len(paths), CHUNKSIZE)
    start = time.perf_counter()
    first = [function(path) for path in paths[:head]]
    rest = paths[head:]
    seconds_left = (time.perf_counter() - start) / max(1, head) * len(rest)
    more = map(function, rest) if seconds_left < POOL_SECONDS else _in_workers(function, rest)
    for i, result in enumerate(itertools.chain(first, more)):
        yield result
        if progress is not None and (i + 1) % CHUNKSIZE == 0:
            progress.update(i + 1)
    if progress is not None:
        progress.close()


def read_resized(path, image_size):
    """`read_image`, resized to `image_size` where its size differs (`resize_pixels`)."""
    return resize_pixels(read_image(path), image_size)


def cache_file(cache_dir, cache_name, key, paths, labels=None, suffix=".npz"):
    """The cache file for `paths`, named by a hash of `key` and each path (with its label,
    if given), size and modification time: adding, replacing or touching a file names
    another."""
    digest = hashlib.sha256(repr(key).encode())
    for path, label in zip(paths, labels if labels is not None else itertools.repeat("")):
        stat = os.stat(path)
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    default = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "keras_vitmix")
    return pathlib.Path(cache_dir or default) / f"{cache_name}-{digest.hexdigest()[:24]}{suffix}"


def folder_cache_name(root, split):
    """The start of a folder split's cache file names: "<folder name>-<split>"."""
    return f"{os.path.basename(os.path.abspath(root)) or 'folder'}-{split}"


def write_atomically(path, write):
    """`write(file)` into `path` whole or not at all (temporary file + rename): a second
    process reading it, or an interrupted write, never sees half of it. A cache that
    cannot be written (read-only home?) costs a warning, not the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as error:
        warnings.warn(f"Not cached (set {CACHE_ENV} or pass `cache_dir`): {error}", stacklevel=3)
        return
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read_or_problem(path, image_size):
    """The file's pixels at `image_size`, or (a str) what is wrong with it."""
    pixels, problem = decode(path)
    return problem if problem is not None else resize_pixels(pixels, image_size)


def resize_pixels(pixels, image_size):
    """uint8 pixels (H, W, 3) resized to `image_size` where their size differs.

    Pillow's BILINEAR resize widens its triangle filter by the reduction factor when it
    shrinks, as `tf.image.resize(..., "bilinear", antialias=True)` does in `load`: on
    the same decoded pixels the two differ by at most one level (rounding).
    """
    from PIL import Image

    if pixels.shape[:2] == tuple(image_size):
        return pixels
    resized = Image.fromarray(pixels).resize(tuple(image_size)[::-1], Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized)


def _first_size(paths):
    """The size of the first file that decodes (of the first `CHUNKSIZE`); (1, 1) when
    none does (the pass then fails on them all)."""
    for path in paths[:CHUNKSIZE]:
        pixels, _ = decode(path)
        if pixels is not None:
            return pixels.shape[:2]
    return (1, 1)


def _in_workers(function, paths):
    """`map(function, paths)` in spawned worker processes, `CHUNKSIZE` files per task."""
    workers = min(_cpu_count(), -(-len(paths) // CHUNKSIZE))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            yield from pool.map(function, paths, chunksize=CHUNKSIZE)
        except concurrent.futures.process.BrokenProcessPool as error:
            raise RuntimeError(
                "The image worker processes stopped (out of memory? or a script without a main guard: "
                "workers start with 'spawn', which runs the main script again in each, so a script that "
                "loads a large folder needs `if __name__ == \"__main__\":`)."
            ) from error


def _cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
