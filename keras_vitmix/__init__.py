"""keras_vitmix: ViT, MLP-Mixer, ConvMixer and their hybrids for Keras 3 (TensorFlow, JAX, PyTorch).

Importing the package changes nothing process-wide; see `keras_vitmix.config` for the
switches a program may opt in to.
"""

__version__ = "0.1.0"

# losses, metrics and optimizers register the training recipe's loss, metrics and
# layer-decay optimizer with Keras, so a `.keras` file compiled by `keras_vitmix.training`
# loads, compiled, after this import.
from keras_vitmix import applications, config, layers, losses, metrics, optimizers, weights  # noqa: F401
