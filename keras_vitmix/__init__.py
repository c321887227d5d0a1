"""keras_vitmix: ViT, MLP-Mixer, ConvMixer and their hybrids for Keras 3 (TensorFlow, JAX, PyTorch)."""

__version__ = "0.1.0"

from keras_vitmix import _malloc

# Before any model runs: XLA:CPU's step buffers then reuse freed memory (see _malloc).
_malloc.tune()

from keras_vitmix import applications, layers, weights  # noqa: E402,F401
