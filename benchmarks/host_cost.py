"""Host time per training batch: the device pipeline against the NumPy pipeline it replaced.

The device pipeline's host work per step is `keras_vitmix.device_pipeline.IndexBatches`
slicing B int32 indices and labels; the images are gathered and augmented on the
accelerator inside the step. The reference is the NumPy pipeline that
benchmarks/accuracy.py had before issue #28 (decode once, then crop, flip and MixUp or
CutMix on the host per batch), read from git at REFERENCE_COMMIT: it kept an H200 waiting
~98% of the time on CIFAR-10. Both run on the same random CIFAR-size uint8 arrays in one
process, one batch after another on one thread.

    python benchmarks/host_cost.py
"""

import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
REFERENCE_COMMIT = "2c9462c"


def reference_module():
    """benchmarks/accuracy.py at REFERENCE_COMMIT, imported from a temporary file."""
    source = subprocess.run(
        ["git", "show", f"{REFERENCE_COMMIT}:benchmarks/accuracy.py"], cwd=REPO, check=True,
        capture_output=True, text=True,
    ).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "accuracy_before_28.py"
    path.write_text(source)
    sys.path.insert(0, str(REPO / "benchmarks"))  # its `from _timing import ...`
    spec = importlib.util.spec_from_file_location("accuracy_before_28", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seconds_per_batch(batches, count=40):
    batches[0]  # first-use costs out of the timing
    start = time.perf_counter()
    for index in range(1, count + 1):
        batches[index]
    return (time.perf_counter() - start) / count


def main():
    from keras_vitmix.device_pipeline import IndexBatches

    reference = reference_module()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (45_000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 45_000).astype(np.int32)
    print("| batch | augmentation | NumPy pipeline (ms/batch) | device pipeline (ms/batch) | ratio |")
    print("|---:|---|---:|---:|---:|")
    for batch in (128, 512):
        device = seconds_per_batch(IndexBatches(labels, batch, 0))
        for augment in ("light", "strong"):
            host = seconds_per_batch(reference.numpy_batches(images, labels, batch, augment, 0, 10))
            print(f"| {batch} | {augment} | {host * 1e3:.2f} | {device * 1e3:.4f} | {host / device:,.0f}x |")


if __name__ == "__main__":
    main()
