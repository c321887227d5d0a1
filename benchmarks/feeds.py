"""The two feeds of `train`, timed: images per second of training, and host time per batch.

`train` holds data that fits the device (pipeline "device": uint8 images in a variable,
each step a batch of indices) and streams the rest through tf.data (pipeline "tf.data":
decoded and resized on the host, uint8 batches copied to the step). Both augment inside
the compiled step with the same layers. This runs `train` through each feed on the same
CIFAR-10 folder (a class-balanced subset of ../shared/data, extracted once) for a few
epochs and reports:

- training images per second over the epochs after the first (which compiles);
- the host's time to produce one batch from the feed alone (`IndexBatches[i]`, or the
  next element of the tf.data iterator once its cache is warm): the work the
  accelerator may wait on.

Each backend runs in its own process (`--backends`); the table replaces its section of
benchmarks/RESULTS.md (`--no-record`: print only).

    python benchmarks/feeds.py
    python benchmarks/feeds.py --backends jax --per-class 200 --epochs 3 --no-record
"""

import argparse
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _timing import emit, run_backends, write_section  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
MODEL = "hybrid_mixer_vit_cifar_patch4_32"
FEEDS = ("device", "tf.data")


def cifar_subset(per_class, root=None):
    """A train/<class>/ folder with the first `per_class` images of each CIFAR-10 class."""
    root = Path(root or tempfile.gettempdir()) / f"keras_vitmix_feeds_{per_class}"
    if (root / "train").is_dir():
        return root
    taken = {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] != "train":
                continue
            if taken.get(parts[-2], 0) >= per_class:
                continue
            taken[parts[-2]] = taken.get(parts[-2], 0) + 1
            target = root / "train" / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    return root


def host_ms_per_batch(feed, batch_size, count=20):
    """Milliseconds the host takes to produce one training batch of `feed`."""
    batches = feed.training_batches(batch_size, "none", 0)
    if feed.pipeline == "device":
        batches[0]
        start = time.perf_counter()
        for index in range(count):
            batches[index % len(batches)]
        return (time.perf_counter() - start) / count * 1e3
    for _ in batches:  # one pass fills the cache of decoded images
        pass
    iterator, produced = iter(batches), 0
    start = time.perf_counter()
    for _ in range(count):
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(batches)
            next(iterator)
        produced += 1
    return (time.perf_counter() - start) / produced * 1e3


def worker(arguments):
    import keras

    from keras_vitmix import training
    from keras_vitmix.training_callbacks import EpochTimer
    from keras_vitmix.training_data import training_data

    folder = cifar_subset(arguments.per_class)
    for pipeline in FEEDS:
        output, timer = tempfile.mkdtemp(), EpochTimer()
        metrics = training.train(
            MODEL, str(folder), epochs=arguments.epochs, batch_size=arguments.batch_size, augment="light",
            pipeline=pipeline, output_dir=output, verbose=0, test_fraction=0.1, extra_callbacks=[timer],
        )
        times = timer.times[1:] or timer.times
        seen = metrics["images_per_second"] * metrics["seconds_per_epoch"]  # training images per epoch
        feed = training_data(str(folder), None, MODEL, 0, 0.1, pipeline, 0.1)
        emit(dict(
            backend=keras.backend.backend(), feed=pipeline, images_per_second=seen * len(times) / sum(times),
            host_ms=host_ms_per_batch(feed, arguments.batch_size), reason=metrics["pipeline_reason"],
        ))


def table(rows):
    lines = [
        "| backend | feed | training images/s | host ms per batch |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['feed']} | {row['images_per_second']:,.0f} | {row['host_ms']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # the backend of a worker process
    arguments = parser.parse_args(argv)
    if arguments.worker is not None:
        return worker(arguments)
    passed = [f"--per-class={arguments.per_class}", f"--epochs={arguments.epochs}",
              f"--batch-size={arguments.batch_size}"]
    rows = run_backends(__file__, arguments.backends, passed, table)
    if not arguments.no_record:
        preamble = (
            f"`train` on {arguments.per_class * 10:,} CIFAR-10 JPEGs ({MODEL}, batch {arguments.batch_size}, "
            f"augment 'light', {arguments.epochs} epochs; images/s over the epochs after the first) through each "
            "feed, and the host's time to produce one batch from the feed alone (tf.data with its cache warm). "
            "Both feeds augment in the step; the streamed one copies uint8 batches decoded on the host."
        )
        write_section(REPO / "benchmarks" / "RESULTS.md", "Training feeds: held against streamed", __file__,
                      sys.argv[1:], preamble, [table(rows)])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
