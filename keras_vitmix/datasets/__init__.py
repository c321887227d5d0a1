"""Image-classification data for the models: the embedded digits, any TFDS
image-classification name, or a folder in `train/<class>/` layout, as tf.data pipelines
or (without TensorFlow, but for TFDS) as NumPy arrays.

Every source yields batches of (images, labels): float32 pixel values in [0, 255] shaped
(B, H, W, 3) — the models rescale and normalize inside — and int32 labels (or one-hot
float labels when "strong" augmentation mixes images). Pipelines run in TensorFlow's
tf.data whatever the Keras backend; Keras preprocessing layers work inside them.

Three splits, named as what they are: "train", "validation" (model selection) and
"test" (disjoint from both, never selected on); a source without a test split holds one
out of its training data (`test_fraction`), or gives an empty one whose info says why.

The modules, one responsibility each: `info` (split names, `DatasetInfo`), `folders`
(which files make a folder's split, reading one image; no TensorFlow), `files` (many
files decoded or checked at once, every bad one named; no TensorFlow), `progress`
(progress on a terminal, plain lines elsewhere), `sources`
(digits, folder and TFDS decoded into tf.data), `pipeline` (`load`, `resolve`:
batching, shuffling, augmentation) and `arrays` (`load_arrays`: every source as uint8
NumPy arrays, a folder decoded once and cached; `check_arrays`, `array_info`,
`hold_out_arrays` and `split_arrays` for the caller's own arrays). Everything public is importable from here.
"""

from keras_vitmix.datasets.arrays import array_info, check_arrays, hold_out_arrays, load_arrays, split_arrays
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
    "array_info",
    "as_image_size",
    "check_arrays",
    "hold_out_arrays",
    "list_folder",
    "load",
    "load_arrays",
    "read_image",
    "resolve",
    "split_arrays",
]
