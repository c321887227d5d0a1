"""keras_vitmix: ViT, MLP-Mixer, ConvMixer and their hybrids for Keras 3 (TensorFlow, JAX, PyTorch).

Importing the package changes nothing process-wide; see `keras_vitmix.config` for the
switches a program may opt in to.
"""

__version__ = "0.1.0"

from keras_vitmix import applications, config, layers, weights  # noqa: F401
