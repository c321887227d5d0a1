"""Data parallelism for `keras_vitmix.training.train`, through the backends' own engines.

- JAX: `keras.distribution.DataParallel` over every device of every process. The
  trainer's variables (the held training images included) are replicated, each step's
  global batch is sharded over the devices, and XLA's partitioner all-reduces the
  gradients. Several processes (hosts) join through `keras.distribution.initialize`,
  with the coordinator from `initialize_processes`'s arguments, Keras's environment
  variables (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`,
  `..._PROCESS_ID`) or JAX's (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`).
- TensorFlow: `tf.distribute.MirroredStrategy` over every GPU (or the logical CPU
  devices configured).
- torch: Keras's torch backend has no distribution API; data parallelism there is a
  ValueError that says which backends have it.

Nothing here schedules devices or reduces gradients itself.
"""

import contextlib
import os

import keras

DISTRIBUTES = (None, "none", "data_parallel")
# JAX's own variables for a multi-process run; JAX itself reads only the coordinator's.
JAX_ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
KERAS_ENVIRONMENT = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")


def check_distribute(distribute):
    """Raises a ValueError for a `distribute` this backend cannot do."""
    if distribute not in DISTRIBUTES:
        raise ValueError(f"`distribute` must be None or 'data_parallel'. Received: distribute={distribute!r}")
    backend = keras.backend.backend()
    if distribute == "data_parallel" and backend not in ("jax", "tensorflow"):
        raise ValueError(
            "Data parallelism is supported under the jax (keras.distribution.DataParallel) and "
            "tensorflow (tf.distribute.MirroredStrategy) backends: Keras's torch backend has no "
            f"distribution API. Received: distribute={distribute!r} with KERAS_BACKEND={backend}"
        )


def initialize_processes(coordinator=None, num_processes=None, process_id=None, environ=None):
    """Joins this process to a multi-process JAX run, once, before JAX computes anything.

    The arguments win over Keras's environment variables, which win over JAX's. Without
    a coordinator anywhere this is a single-process run and nothing happens.

    Returns:
        The number of processes.
    """
    environ = os.environ if environ is None else environ
    if keras.backend.backend() != "jax":
        if coordinator is not None:
            raise ValueError(
                "Several processes train together under the jax backend (keras.distribution.initialize). "
                f"Received: coordinator={coordinator!r} with KERAS_BACKEND={keras.backend.backend()}"
            )
        return 1
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count()
    keras_values = [environ.get(name) for name in KERAS_ENVIRONMENT]
    jax_values = [environ.get(name) for name in JAX_ENVIRONMENT]
    address = coordinator or keras_values[0] or jax_values[0]
    if address is None:
        return 1
    count = num_processes if num_processes is not None else keras_values[1] or jax_values[1]
    index = process_id if process_id is not None else keras_values[2] or jax_values[2]
    if count is None or index is None:
        raise ValueError(
            "A multi-process run needs the number of processes and this process's id with its coordinator "
            f"(arguments, {', '.join(KERAS_ENVIRONMENT[1:])} or {', '.join(JAX_ENVIRONMENT[1:])}). Received: "
            f"coordinator={address!r}, num_processes={count!r}, process_id={index!r}"
        )
    keras.distribution.initialize(address, int(count), int(index))
    return jax.process_count()


def distribution_scope(distribute, shard_dataset=True):
    """A context for building and compiling under `distribute` ("data_parallel" or None).

    Under JAX it sets `keras.distribution.DataParallel` globally (the caller resets it
    with `keras.distribution.set_distribution(None)`); under TensorFlow it is a
    `MirroredStrategy`'s scope. `shard_dataset`: whether Keras splits a tf.data feed
    between processes; False where each process already yields its own part of every
    global batch (`device_pipeline.IndexBatches`).
    """
    check_distribute(distribute)
    if distribute in (None, "none"):
        return contextlib.nullcontext()
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=keras.distribution.list_devices(), auto_shard_dataset=shard_dataset)
        )
        return contextlib.nullcontext()
    import tensorflow as tf

    # Every GPU, or else every logical CPU device (several only when configured).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices]).scope()


def describe(distribute):
    """What metrics.json records of the run's devices: strategy, devices, processes and
    the devices' kind (read inside the scope of `distribution_scope`)."""
    backend = keras.backend.backend()
    if distribute in (None, "none"):
        strategy, devices, hosts = None, 1, 1
    elif backend == "jax":
        import jax

        strategy = "keras.distribution.DataParallel"
        devices = int(keras.distribution.distribution().device_mesh.devices.size)
        hosts = jax.process_count()
    else:
        import tensorflow as tf

        strategy = "tf.distribute.MirroredStrategy"
        devices, hosts = int(tf.distribute.get_strategy().num_replicas_in_sync), 1
    return {"strategy": strategy, "devices": devices, "hosts": hosts, "device_kind": device_kind()}


def device_kind():
    """The kind of device Keras computes on, e.g. "cpu" or "NVIDIA H100 80GB HBM3"."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"


def local_replicas(distribute):
    """How many parts each process's batches split into: its devices under JAX's data
    parallelism (which needs even parts), else 1 (`tf.distribute` splits unevenly)."""
    if distribute in (None, "none") or keras.backend.backend() != "jax":
        return 1
    import jax

    return int(keras.distribution.distribution().device_mesh.devices.size) // jax.process_count()


def check_batch(batch_size, distribute):
    """Raises a ValueError when a global batch does not split evenly over JAX's devices."""
    if distribute in (None, "none") or keras.backend.backend() != "jax":
        return
    devices = int(keras.distribution.distribution().device_mesh.devices.size)
    if batch_size % devices:
        raise ValueError(
            f"Data parallelism splits each batch evenly over the {devices} devices. Received: "
            f"batch_size={batch_size}; use a multiple of {devices}"
        )


def check_network(network):
    """Raises a ValueError for a network a multi-process run would train wrongly: with
    BatchNormalization layers, whose moving statistics left validation at chance in a
    two-process JAX run on one machine (ConvMixer on digits: 82% training accuracy,
    10.6% validation; the LayerNorm hybrid reached 89.4% the same way)."""
    if keras.backend.backend() != "jax":
        return
    import jax

    if jax.process_count() == 1:
        return
    normalized = [layer.name for layer in _layers(network) if isinstance(layer, keras.layers.BatchNormalization)]
    if normalized:
        raise ValueError(
            f"A multi-process run ({jax.process_count()} processes) does not train BatchNormalization's moving "
            f"statistics correctly here. Received: {network.name!r} with BatchNormalization layers {normalized[:3]}"
            f"{'...' if len(normalized) > 3 else ''}; train it in one process (several devices still work), or "
            "train a model with LayerNormalization (ViT, Mixer, the Mixer-ViT hybrid)."
        )


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
