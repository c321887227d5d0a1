import keras
import pytest

# Seeding: tests/conftest.py's autouse `_seeded` fixture calls
# keras.utils.set_random_seed(0) before every test, these included.


@pytest.fixture(scope="package", autouse=True)
def _fast_jax_compiles():
    """Under JAX every new (op, shape, dtype) and every fit step is compiled by XLA with
    its full optimizer, which is most of this folder's run time on a small CPU and buys
    nothing on these tiny shapes. Turned off for tests/layers only, then restored."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
