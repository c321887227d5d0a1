import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests compile hundreds of small XLA programs under JAX, each run a few times: XLA's
# optimization passes, not the runs, dominate their time (tests/test_inspection_registers.py
# with tests/applications/test_vit_registers.py: 35.0 s -> 24.5 s on 2026-12-08). The
# tests assert values, never speed (benchmarks/ measures speed, with the passes on); set
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test with them.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


WORKER_GIVEN_CPUS = None  # an xdist worker's CPUs before it was pinned


def cpu_share(cpus, workers, worker):
    """The CPUs that worker `worker` (0-based) of `workers` keeps: an equal share of `cpus`,
    disjoint from the others'; None when there are more workers than CPUs."""
    share = len(cpus) // workers
    if share < 1:
        return None
    index = worker % workers
    return set(sorted(cpus)[index * share:(index + 1) * share])


def _pin_xdist_worker():
    """Under pytest-xdist (`make test`), worker gwK keeps the K-th equal share of the CPUs.

    TensorFlow, XLA and PyTorch each start a thread pool as wide as the CPUs they may use.
    Two test processes sharing a 2-core machine that way oversubscribed it, and the
    training tests ran 2-3x slower than with one CPU each (the training test of the small
    ViT took 347 s under TensorFlow beside the torch run, 155 s pinned to one CPU). This
    runs before any of them is imported, so each sizes its pools to its share. Every
    thread of the worker is moved, as execnet's own threads already exist.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    global WORKER_GIVEN_CPUS
    WORKER_GIVEN_CPUS = os.sched_getaffinity(0)
    mine = cpu_share(WORKER_GIVEN_CPUS, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), int(worker[2:]))
    if mine is None:
        return  # more workers than CPUs: the scheduler shares them
    for thread in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
        try:
            os.sched_setaffinity(int(thread), mine)
        except OSError:
            pass


_pin_xdist_worker()

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same seed and the float32 policy."""
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
