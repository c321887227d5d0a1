"""A TransformerBlock that always returns its attention scores beside its tokens.

Inspection and export read attention from a clone of a model's graph in which each
TransformerBlock is called with `return_attention_scores=True`
(`keras_vitmix.inspection.attention_tensors`). The block itself cannot take that call:
Keras checks a functional graph's outputs against a layer's first call, and a block's
first call, in its own model, returned tokens alone. This layer holds the block (its
weights are the block's own variables, so the clone follows the model's training) and
makes the two-output call its first; it serializes with the block inside, so a `.keras`
file of the clone reloads after `import keras_vitmix`.
"""

import keras

from keras_vitmix.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_vitmix")
class ScoredTransformerBlock(keras.layers.Layer):
    """`block(inputs, return_attention_scores=True, ...)` as a layer of its own.

    Args:
        block: a `TransformerBlock` (or its serialized config), shared, not copied.
        **kwargs: base layer keyword arguments; `name` defaults to the block's.

    Call arguments:
        inputs: tokens (B, N, D).
        attention_mask: optional boolean mask, passed to the block.
        training: bool, passed to the block.

    Returns:
        `(tokens, scores)`: the block's output (B, N, D) and its attention scores
        (B, heads, N, N) in float32.

    Example:

    >>> block = TransformerBlock(num_heads=2, mlp_dim=64)
    >>> tokens, scores = ScoredTransformerBlock(block)(keras.ops.ones((1, 5, 32)))
    >>> scores.shape
    (1, 2, 5, 5)
    """

    def __init__(self, block, **kwargs):
        if isinstance(block, dict):
            block = keras.saving.deserialize_keras_object(block)
        if not isinstance(block, TransformerBlock):
            raise TypeError(f"`block` must be a TransformerBlock. Received: block of type {type(block).__name__}")
        kwargs.setdefault("name", block.name)
        kwargs.setdefault("dtype", block.dtype_policy)
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        if not self.block.built:  # a reloaded clone: the block comes from its config
            self.block.build(input_shape)

    def call(self, inputs, attention_mask=None, training=None):
        return self.block(inputs, attention_mask=attention_mask, return_attention_scores=True, training=training)

    def compute_output_spec(self, inputs, attention_mask=None, training=None):
        return self.block.compute_output_spec(inputs, return_attention_scores=True)

    def get_config(self):
        config = super().get_config()
        config["block"] = keras.saving.serialize_keras_object(self.block)
        return config
