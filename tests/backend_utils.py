"""Backend-specific pieces the tests need: gradients of a loss for any backend."""

import keras
import numpy as np


def trainable_gradients(model, x, y):
    """Gradients of the sparse cross-entropy of `model(x, training=True)` w.r.t. its
    trainable weights, as NumPy arrays in `model.trainable_weights` order."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        return [None if g is None else np.asarray(g) for g in grads]
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable_values):
            outputs, _ = model.stateless_call(trainable_values, non_trainable, x, training=True)
            return loss_fn(y, outputs)

        return [np.asarray(g) for g in jax.grad(loss)(trainable)]
    if backend == "torch":
        model.zero_grad()
        loss = loss_fn(keras.ops.convert_to_tensor(y), model(x, training=True))
        loss.backward()
        return [
            None if v.value.grad is None else v.value.grad.detach().cpu().numpy()
            for v in model.trainable_weights
        ]
    raise NotImplementedError(f"No gradient helper for backend {backend!r}")


def input_gradient(fn, x):
    """The gradient of the scalar `fn(x)` with respect to the array `x`, as NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return np.asarray(tape.gradient(value, x))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        fn(x).backward()
        return x.grad.detach().cpu().numpy()
    raise NotImplementedError(f"No gradient helper for backend {backend!r}")
