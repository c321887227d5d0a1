"""The loss of the training recipe, importable with the package so saved models reload.

`ClassificationLoss` is registered with Keras's serialization under "keras_vitmix", and
`import keras_vitmix` imports this module: a `.keras` file compiled by
`keras_vitmix.training` then loads, compiled, with `keras.saving.load_model` alone. The
module imports only Keras.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vitmix")
class ClassificationLoss(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer or one-hot (mixed) labels.

    Integer labels are one-hot encoded against the predictions' class axis, so one loss
    serves plain batches and MixUp/CutMix batches (soft one-hot labels) alike.

    Args:
        label_smoothing: float in [0, 1).
        from_logits: bool, whether predictions are logits rather than probabilities.

    Example:

    >>> loss = ClassificationLoss(label_smoothing=0.1)
    >>> value = loss([0, 2], [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    """

    def __init__(self, label_smoothing=0.1, from_logits=False, name="classification_loss", **kwargs):
        label_smoothing = float(label_smoothing)
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}"
            )
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_true = one_hot_like(y_true, y_pred)
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def one_hot_like(y_true, y_pred):
    """`y_true` as one-hot rows of `y_pred`'s dtype: integer labels encoded, one-hot kept."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]:
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    return ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
