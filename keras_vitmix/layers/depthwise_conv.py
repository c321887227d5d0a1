"""`DepthwiseConv2D`: Keras's layer, computed as shifted multiply-adds under JAX on the CPU
and as one channels-last convolution under torch.

XLA:CPU lowers a grouped convolution with one group per channel (what
`keras.ops.depthwise_conv` becomes under JAX) to a slow generic loop. Written as kh * kw
shifted, channel-scaled copies of the input summed up, the same convolution runs an
order of magnitude faster there. Differentiated automatically, that form keeps every
shifted product alive for the backward pass, so the JAX version (route
"depthwise_jax_cpu") has a hand-written backward pass that keeps memory at Keras's
level. ConvMixer spends most of its time in this layer, so it takes the shifted form
where it is faster: the JAX backend on the CPU (and TensorFlow under XLA, below),
stride 1, "same" or "valid" padding, no dilation, depth multiplier 1.

Under torch (route "conv_torch"), Keras's convolution copies the channels-last input to
channels-first, copies it back to PyTorch's `channels_last` memory layout, and pads it,
on every call. The same tensor permuted to (B, C, H, W) already has that layout, so this
layer hands the view to `torch.nn.functional.conv2d` directly (oneDNN convolves
channels-last memory natively).

TensorFlow's own CPU kernel is fast, but under XLA (`jit_compile=True`) TensorFlow's
depthwise convolution goes through the same slow XLA:CPU lowering as JAX's. Inside an
XLA-compiled function on the CPU the layer therefore takes the shifted form too (route
"depthwise_tf_xla"), with a hand-written backward pass (`tf.custom_gradient`) whose
kernel gradient is computed as matrix products, which TensorFlow's XLA runs far faster
than the per-tap reductions JAX's route uses.

Everywhere else (TensorFlow without XLA has a fast native kernel, GPUs have cuDNN), and
with the routes switched off (`keras_vitmix.config`), it is `keras.layers.DepthwiseConv2D`
unchanged. Same arguments, variables (names, shapes, layout) and numbers either way.
docs/performance.md has the measurements.
"""

import functools

import keras
from keras import ops

from keras_vitmix import config
from keras_vitmix._internals import in_tf_xla_function
from keras_vitmix.layers._platform import jax_on_cpu as _jax_on_cpu  # tests patch this name
from keras_vitmix.layers.conv import same_pads as _pads
from keras_vitmix.layers.conv import torch_conv2d, torch_conv2d_applies


def shifted_depthwise_conv(inputs, kernel, padding="same"):
    """Depthwise convolution at stride 1 as a sum of shifted, channel-scaled copies.

    The portable form, in `keras.ops`; the layer's JAX route runs it (unrolled, which XLA
    fuses into one pass) inside a hand-written backward pass.

    Args:
        inputs: tensor (B, H, W, C), channels last.
        kernel: tensor (kh, kw, C, 1), Keras's depthwise kernel layout.
        padding: "same" or "valid".

    Returns:
        Tensor (B, H', W', C), equal to
        `keras.ops.depthwise_conv(inputs, kernel, padding=padding)`.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    (top, bottom), (left, right) = _pads(kh, padding), _pads(kw, padding)
    padded = ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
    height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    outputs = None
    for i in range(kh):
        for j in range(kw):
            term = padded[:, i : i + height, j : j + width, :] * kernel[i, j, :, 0]
            outputs = term if outputs is None else outputs + term
    return outputs


def _input_gradient(grad, kernel, padding):
    """The input gradient of `shifted_depthwise_conv`: the same sum over the padded output
    gradient, with the kernel flipped (a "valid" convolution)."""
    kh, kw = kernel.shape[0], kernel.shape[1]
    (top, bottom), (left, right) = _pads(kh, padding), _pads(kw, padding)
    grad_padded = ops.pad(grad, [[0, 0], [kh - 1 - top, kh - 1 - bottom], [kw - 1 - left, kw - 1 - right], [0, 0]])
    return shifted_depthwise_conv(grad_padded, kernel[::-1, ::-1], "valid")


@functools.cache  # one custom_vjp function per padding, not one per call
def _jax_shifted_depthwise(padding):
    """`shifted_depthwise_conv` for JAX, with a hand-written backward pass.

    Differentiated automatically, the shifted form let XLA keep every shifted product
    alive for the backward pass: kh * kw copies of the activations per layer, which ran a
    7x7, 768-channel ConvMixer out of 24 GiB. Here the backward pass is written by hand and
    keeps only the input and the kernel: the input gradient is the same sum over the padded
    output gradient with the kernel flipped, the kernel gradient one reduction per tap
    (a `fori_loop`, so one product is alive at a time). The taps read the batch in chunks
    that fit in the cache (`_samples_per_chunk`), so that they read it from the cache
    rather than from memory. The forward sums are unrolled, which XLA fuses into one pass
    (faster than a `fori_loop` over the taps, at the same peak memory).
    """
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def conv(x, kernel):  # kernel (kh, kw, C, 1)
        return shifted_depthwise_conv(x, kernel, padding)

    def conv_forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def conv_backward(residuals, grad):
        x, kernel = residuals
        kh, kw = kernel.shape[0], kernel.shape[1]
        (top, bottom), (left, right) = _pads(kh, padding), _pads(kw, padding)
        grad_x = _input_gradient(grad, kernel, padding)
        padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        batch = grad.shape[0]
        per_sample = (padded[0].size + grad[0].size) * padded.dtype.itemsize
        rows = _samples_per_chunk(batch, per_sample) if isinstance(batch, int) else batch

        def chunk(n, grad_kernel):
            xs = jax.lax.dynamic_slice_in_dim(padded, n * rows, rows, axis=0)
            gs = jax.lax.dynamic_slice_in_dim(grad, n * rows, rows, axis=0)

            def tap(index, grad_kernel):
                i, j = index // kw, index % kw
                window = jax.lax.dynamic_slice(xs, (0, i, j, 0), gs.shape)
                total = jnp.sum((window * gs).astype("float32"), axis=(0, 1, 2))
                return grad_kernel.at[i, j, :, 0].add(total)

            return jax.lax.fori_loop(0, kh * kw, tap, grad_kernel)

        grad_kernel = jax.lax.fori_loop(0, batch // rows, chunk, jnp.zeros(kernel.shape, "float32"))
        return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)

    conv.defvjp(conv_forward, conv_backward)
    return conv


_CHUNK_BYTES = 16 * 2**20  # half the L3 cache of the 2-core EPYC this was measured on


def _samples_per_chunk(batch, bytes_per_sample):
    """The largest divisor of `batch` whose samples' padded input and output gradient fit
    in `_CHUNK_BYTES` (at least 1): the kernel gradient's kh * kw reductions run over
    one such chunk at a time, so that they read it from the cache, not from memory."""
    fitting = max(1, _CHUNK_BYTES // max(1, bytes_per_sample))
    return max(d for d in range(1, min(batch, fitting) + 1) if batch % d == 0)


_GRAM_COLUMNS = 32  # output columns per Gram product: (32 + kw - 1) / kw times the taps' work


def _tf_gram_kernel_gradient(grad, padded, kh, kw):
    """The depthwise kernel gradient as matrix products, for TensorFlow under XLA.

    The gradient of tap (i, j) for channel c is the sum over samples, rows and columns of
    padded[b, h + i, w + j, c] * grad[b, h, w, c]. Per channel and kernel row i, the
    products of every padded column w' with every output-gradient column w, summed over
    samples and rows, form a Gram matrix (w', w); tap (i, j) is the sum of its j-th
    diagonal (w' = w + j). That is (W + kw - 1) / kw times the multiply-adds of the taps,
    but in channel-batched matrix products, which TensorFlow's XLA:CPU runs well, where it
    runs the taps' reductions several times slower than JAX's. Columns go in blocks of
    `_GRAM_COLUMNS`, so that the excess
    stays bounded on wide inputs, and samples in chunks that fit in the cache
    (`_samples_per_chunk`; one at a time when the batch size is not known while tracing).

    Args:
        grad: the output gradient, (B, H, W, C).
        padded: the input, padded for the convolution: (B, H + kh - 1, W + kw - 1, C).
        kh, kw: the kernel's size.

    Returns:
        The kernel gradient, (kh, kw, C, 1), float32.
    """
    import tensorflow as tf

    batch, height, width, channels = grad.shape
    per_sample = (padded.shape[1:].num_elements() + grad.shape[1:].num_elements()) * 4
    rows = _samples_per_chunk(batch, per_sample) if batch is not None else 1
    chunks = batch // rows if batch is not None else tf.shape(grad)[0]

    def chunk(n, total):
        start = tf.stack([n * rows, 0, 0, 0])
        xs = tf.transpose(tf.cast(tf.slice(padded, start, [rows, *padded.shape[1:]]), "float32"), (3, 0, 1, 2))
        gs = tf.transpose(tf.cast(tf.slice(grad, start, [rows, height, width, channels]), "float32"), (3, 0, 1, 2))
        taps = [0.0] * kh  # per kernel row: (kw, C)
        for left in range(0, width, _GRAM_COLUMNS):
            cols = min(_GRAM_COLUMNS, width - left)
            g_block = tf.reshape(gs[..., left : left + cols], (channels, rows * height, cols))
            for i in range(kh):
                x_block = xs[:, :, i : i + height, left : left + cols + kw - 1]
                x_block = tf.reshape(x_block, (channels, rows * height, cols + kw - 1))
                gram = tf.matmul(x_block, g_block, transpose_a=True)  # (C, cols + kw - 1, cols)
                taps[i] += tf.stack([tf.reduce_sum(tf.linalg.diag_part(gram[:, j : j + cols]), -1) for j in range(kw)])
        return n + 1, total + tf.stack(taps)

    _, total = tf.while_loop(lambda n, _: n < chunks, chunk, (tf.constant(0), tf.zeros((kh, kw, channels), "float32")))
    return total[..., None]


def _tf_one_trip(fn, operand, initial, kernel):
    """`fn(operand)` inside a `tf.while_loop` that runs once, so that XLA computes its
    results once, into memory, rather than fusing their producers into every consumer.

    XLA:CPU fuses cheap-looking producers into each consumer, and here they are not cheap:
    the forward sum of kh * kw shifted products went into each of a BatchNormalization's
    mean and variance reductions, and the incoming gradient (an activation's derivative,
    which reads that sum) into each of the kernel gradient's kh * kw reductions, each
    recomputed per consumer. An XLA optimization barrier is removed before fusion, and a
    loop XLA can count or hoist is undone, hence a trip count XLA cannot fold (read from
    the kernel: `finite | ~finite` is true, NaN kernel or not) and the loop-dependent
    factor (1) on the operand.

    Args:
        fn: a function of `operand`, returning a tuple of tensors.
        operand: the tensor `fn` is computed from (other inputs `fn` may capture).
        initial: tensors of the results' shapes and dtypes.
        kernel: the layer's kernel, for the trip count.
    """
    import tensorflow as tf

    finite = tf.math.is_finite(tf.reduce_sum(kernel))
    trips = tf.cast(finite | ~finite, "int32")
    results = tf.while_loop(
        lambda step, *_: step < trips,
        lambda step, *_: (step + 1, *fn(operand * tf.cast(step + 1, operand.dtype))),
        (tf.constant(0), *initial),
    )
    return results[1:]


def _tf_shifted_depthwise(x, kernel, padding, training=False):
    """`shifted_depthwise_conv` for TensorFlow under XLA, with a hand-written backward
    pass: the input gradient as `_jax_shifted_depthwise`'s, the kernel gradient as matrix
    products (`_tf_gram_kernel_gradient`). The backward pass runs inside a one-trip loop
    (`_tf_one_trip`), and so does the forward sum in training, where a normalization's
    batch statistics reduce it. In inference, the loop's state took memory for no gain."""
    import tensorflow as tf

    kh, kw, channels = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    (top, bottom), (left, right) = _pads(kh, padding), _pads(kw, padding)

    @tf.custom_gradient
    def conv(x, kernel):  # kernel (kh, kw, C, 1)
        def backward(grad):
            padded = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
            grad_x, grad_kernel = _tf_one_trip(
                lambda grad: (_input_gradient(grad, kernel, padding), _tf_gram_kernel_gradient(grad, padded, kh, kw)),
                grad, (tf.zeros_like(x, grad.dtype), tf.zeros((kh, kw, channels, 1), "float32")), kernel,
            )
            return tf.cast(grad_x, x.dtype), tf.cast(grad_kernel, kernel.dtype)

        if not training:
            return shifted_depthwise_conv(x, kernel, padding), backward
        # The loop reads the padded input, not `x`: `x` stays alive for the backward pass, so
        # XLA would copy it into the loop's state.
        padded = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
        (outputs,) = _tf_one_trip(
            lambda padded: (shifted_depthwise_conv(padded, kernel, "valid"),),
            padded, (tf.zeros_like(padded[:, :height, :width]),), kernel,
        )
        return outputs, backward

    return conv(x, tf.convert_to_tensor(kernel))


def _tf_xla_on_cpu():
    """True while tracing a function TensorFlow compiles with XLA, on a machine without GPUs."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return in_tf_xla_function() and not tf.config.list_logical_devices("GPU")


@keras.saving.register_keras_serializable(package="keras_vitmix")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D`, computed as shifted multiply-adds under JAX (and
    TensorFlow with XLA) on the CPU and as one channels-last `conv2d` under torch.

    Same arguments, variables and results as `keras.layers.DepthwiseConv2D`; only the
    computation differs, where it is known to be faster (see the module docstring).

    Call arguments:
        inputs: tensor (B, H, W, C).
        training: bool. Only the route inside TensorFlow XLA functions reads it: in
            training it keeps the forward sum in memory for the batch statistics of a
            following normalization (`_tf_shifted_depthwise`). The results are the same.

    Example:

    >>> layer = DepthwiseConv2D(5, padding="same")
    >>> layer(keras.ops.ones((2, 8, 8, 32))).shape
    (2, 8, 8, 32)
    """

    def _shifted_applies(self, inputs):
        return (
            self.data_format == "channels_last"
            and self.depth_multiplier == 1
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.padding in ("same", "valid")
            and inputs.shape[1] is not None
            and inputs.shape[2] is not None
            and (
                (_jax_on_cpu() and config.fast_routes_enabled("depthwise_jax_cpu"))
                or (_tf_xla_on_cpu() and config.fast_routes_enabled("depthwise_tf_xla"))
            )
        )

    def _torch_applies(self, inputs):
        return torch_conv2d_applies(self, inputs)

    def call(self, inputs, training=None):
        if self._torch_applies(inputs):  # one grouped `conv2d` (see the module docstring)
            kh, kw, channels, multiplier = self.kernel.shape
            kernel = ops.reshape(ops.cast(self.kernel, inputs.dtype), (kh, kw, 1, channels * multiplier))
            bias = ops.cast(self.bias, inputs.dtype) if self.use_bias else None
            outputs = torch_conv2d(inputs, kernel, bias, self.strides, self.padding, self.dilation_rate, channels)
            return outputs if self.activation is None else self.activation(outputs)
        if not self._shifted_applies(inputs):
            return super().call(inputs)
        kernel = ops.cast(self.kernel, inputs.dtype)
        if keras.backend.backend() == "tensorflow":
            outputs = _tf_shifted_depthwise(inputs, kernel, self.padding, bool(training))
        else:
            outputs = _jax_shifted_depthwise(self.padding)(inputs, kernel)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
