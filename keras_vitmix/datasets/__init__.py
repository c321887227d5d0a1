"""Image-classification data for the models: the embedded digits, any TFDS
image-classification name, or a folder in `train/<class>/` layout, as tf.data pipelines.

Every source yields batches of (images, labels): float32 pixel values in [0, 255] shaped
(B, H, W, 3) — the models rescale and normalize inside — and int32 labels (or one-hot
float labels when "strong" augmentation mixes images). Pipelines run in TensorFlow's
tf.data whatever the Keras backend; Keras preprocessing layers work inside them.

The modules, one responsibility each: `info` (split names, `DatasetInfo`), `folders`
(which files make a folder's split, reading one image; no TensorFlow), `sources`
(digits, folder and TFDS decoded into tf.data) and `pipeline` (`load`, `resolve`:
batching, shuffling, augmentation). Everything public is importable from here.
"""

from keras_vitmix.datasets.folders import IMAGE_SUFFIXES, list_folder, read_image
from keras_vitmix.datasets.info import SPLITS, DatasetInfo, DatasetUnavailableError, as_image_size
from keras_vitmix.datasets.pipeline import AUGMENTS, SHUFFLE_BUFFER, load, resolve

__all__ = [
    "AUGMENTS",
    "IMAGE_SUFFIXES",
    "SHUFFLE_BUFFER",
    "SPLITS",
    "DatasetInfo",
    "DatasetUnavailableError",
    "as_image_size",
    "list_folder",
    "load",
    "read_image",
    "resolve",
]
