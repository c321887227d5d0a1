"""Data parallel over two JAX processes on one CPU machine, against one process.

`keras-vitmix train --distribute data_parallel --coordinator ... --num-processes 2` joins
two processes through `keras.distribution.initialize` (JAX's distributed runtime); each
holds the digits and yields its half of every global batch, and Keras assembles the
global batch and all-reduces the gradients. This script launches the two processes, each
with one CPU device, and one process alone at the same global batch, on the embedded
digits, and tables what each run's metrics.json says: processes, devices, the first
epoch's training loss, validation and test accuracy, wall time. It is a benchmark, not a
test, because two processes sharing a 2-core CPU take minutes (issue #34).

    python benchmarks/multiprocess.py --epochs 4
"""

import argparse
import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

from _timing import write_section  # benchmarks/ is the script's folder

REPO = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def command(args, output, *extra):
    return [
        sys.executable, "-m", "keras_vitmix_cli", "--backend", "jax", "train", "--model", args.model,
        "--dataset", "digits", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--output", str(output), *extra,
    ]


def launch(commands, log_dir):
    """Runs the commands at once, each with one CPU device; returns the wall time."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    processes = []
    for i, argv in enumerate(commands):
        log = open(log_dir / f"process_{i}.log", "w")
        processes.append((subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log))
    codes = [process.wait() for process, _ in processes]
    for _, log in processes:
        log.close()
    if any(codes):
        raise SystemExit(f"a process failed ({codes}): see {log_dir}/process_*.log")
    return time.perf_counter() - start


def row(title, output, wall):
    metrics = json.loads((output / "metrics.json").read_text())
    with open(output / "history.csv", newline="") as handle:
        first = next(csv.DictReader(handle))
    devices = metrics["distribution"]
    return (
        f"| {title} | {devices['hosts']} | {devices['devices']} | {metrics['batch_size']} | "
        f"{metrics['epochs']} | {float(first['loss']):.4f} | {metrics['validation_accuracy']:.2%} | "
        f"{metrics['test_accuracy']:.2%} | {wall / 60:.1f} min |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hybrid_mixer_vit_cifar_patch4_32")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--output", default=str(REPO / "runs" / "multiprocess"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    root = pathlib.Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    one = root / "one"
    wall_one = launch([command(args, one)], root)
    port = free_port()
    two = [root / f"two_{i}" for i in range(2)]
    wall_two = launch(
        [command(args, two[i], "--distribute", "data_parallel", "--coordinator", f"localhost:{port}",
                 "--num-processes", "2", "--process-id", str(i)) for i in range(2)],
        root,
    )
    rows = [row("one process", one, wall_one), *(row(f"two processes: process {i}", two[i], wall_two) for i in range(2))]
    table = "\n".join([
        "| run | processes | devices | global batch | epochs | first epoch's loss | validation accuracy | "
        "test accuracy | wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    print(table)
    write_section(
        args.results, "Data parallel over two processes", __file__, argv if argv is not None else sys.argv[1:],
        f"JAX, {args.model} on the embedded digits with train's recipe ('small') but {args.epochs} epochs; "
        "every process has one CPU device (XLA_FLAGS=--xla_force_host_platform_device_count=1). The two "
        "processes join through keras.distribution.initialize on localhost and run at once on the same cores, "
        "so their wall time is not a speed-up measure; what the table shows is that they train one model "
        "together: both write the same metrics, on the global batch of the single process.",
        [table],
    )


if __name__ == "__main__":
    main()
