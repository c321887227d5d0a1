"""tests/conftest.py: each pytest-xdist worker of `make test` gets its own CPUs."""

import os

import keras
import pytest

from tests.conftest import cpu_share


@pytest.mark.parametrize(
    "cpus, workers, expected",
    [
        ({0, 1}, 2, [{0}, {1}]),
        ({0, 1, 2, 3}, 2, [{0, 1}, {2, 3}]),
        ({4, 6, 9}, 2, [{4}, {6}]),  # the CPUs the process may use, in order; one left over
        ({3}, 1, [{3}]),
    ],
)
def test_each_worker_gets_an_equal_disjoint_share(cpus, workers, expected):
    shares = [cpu_share(cpus, workers, worker) for worker in range(workers)]
    assert shares == expected
    assert set().union(*shares) <= cpus


def test_more_workers_than_cpus_are_left_to_the_scheduler():
    assert cpu_share({0, 1}, 3, 0) is None


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="only a pytest-xdist worker is pinned")
def test_this_worker_runs_on_its_share():
    from tests import conftest

    worker = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    expected = cpu_share(conftest.WORKER_GIVEN_CPUS, workers, worker)
    if expected is None:
        pytest.skip("more workers than CPUs: not pinned")
    assert os.sched_getaffinity(0) == expected
    if keras.backend.backend() == "torch":
        import torch

        assert torch.get_num_threads() == len(expected)  # PyTorch sized its pool to the share
