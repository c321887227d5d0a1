"""The depthwise kernel gradient under TensorFlow's XLA against JAX's, same math, same run.

`keras_vitmix.layers.DepthwiseConv2D` takes a shifted multiply-add route with a
hand-written backward pass under JAX on the CPU and inside TensorFlow XLA functions on
the CPU (see its module docstring). The backward pass's kernel gradient is one reduction
per kernel tap: sum over (batch, height, width) of a shifted window of the padded input
times the output gradient. This script times that reduction, and the input gradient
beside it, for one ConvMixer-768 layer (7x7 kernel, (32, 32, 32, 768)), in the forms
tried:

- TensorFlow, `tf.function(jit_compile=True)`: Gram matrix products summed along their
  diagonals (what the layer runs, `_tf_gram_kernel_gradient`), the taps unrolled, an
  einsum per tap, and a `tf.while_loop` over the taps;
- TensorFlow without XLA: its native `DepthwiseConv2dNativeBackpropFilter` kernel;
- JAX (`jax.jit`): the taps unrolled, and a `fori_loop` over them (the layer's form,
  which also reads the batch in cache-sized chunks).

Times alternate round by round; the table gives the median time and the median of
per-round ratios to JAX's `fori_loop`. TensorFlow and JAX run in one process, on the
same arrays.

    python benchmarks/depthwise_grad.py
    python benchmarks/depthwise_grad.py --repeats 5 --no-record
"""

import argparse
import statistics
import sys
from pathlib import Path

from _timing import alternate, append_section, median_ratio  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 32, 32, 768], help="B H W C")
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    return parser.parse_args(argv)


def tensorflow_forms(x, g, k):
    import tensorflow as tf

    from keras_vitmix.layers.depthwise_conv import _tf_gram_kernel_gradient

    b, h, w, c = x.shape
    p = (k - 1) // 2
    pads = [[0, 0], [p, k - 1 - p], [p, k - 1 - p], [0, 0]]

    def unrolled(x, g):
        xp = tf.pad(x, pads)
        return tf.stack([tf.reduce_sum(xp[:, i : i + h, j : j + w, :] * g, axis=(0, 1, 2)) for i in range(k) for j in range(k)])

    def einsum(x, g):
        xp = tf.pad(x, pads)
        return tf.stack([tf.einsum("bhwc,bhwc->c", xp[:, i : i + h, j : j + w, :], g) for i in range(k) for j in range(k)])

    def while_loop(x, g):
        xp = tf.pad(x, pads)

        def body(index, taps):
            window = tf.slice(xp, tf.stack([0, index // k, index % k, 0]), [b, h, w, c])
            return index + 1, tf.tensor_scatter_nd_update(taps, [[index]], tf.reduce_sum(window * g, axis=(0, 1, 2))[None])

        return tf.while_loop(lambda index, _: index < k * k, body, (tf.constant(0), tf.zeros((k * k, c))))[1]

    def gram(x, g):
        grad = _tf_gram_kernel_gradient(g, tf.pad(x, pads), k, k)
        return tf.reshape(grad, (k * k, c))

    def native(x, g):
        grad = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=x, filter_sizes=[k, k, c, 1], out_backprop=g, strides=[1, 1, 1, 1], padding="SAME"
        )
        return tf.reshape(grad, (k * k, c))

    def input_gradient(g, kernel):
        gp = tf.pad(g, [[0, 0], [k - 1 - p, p], [k - 1 - p, p], [0, 0]])
        flipped = kernel[::-1, ::-1]
        out = 0.0
        for i in range(k):
            for j in range(k):
                out += gp[:, i : i + h, j : j + w, :] * flipped[i, j]
        return out

    xt, gt = tf.constant(x), tf.constant(g)
    kernel = tf.constant(x[0, :k, :k, :])  # any (k, k, C) values
    xla = dict(jit_compile=True)
    forms = {
        "TF+XLA, Gram products (the layer)": (tf.function(gram, **xla), (xt, gt)),
        "TF+XLA, taps unrolled": (tf.function(unrolled, **xla), (xt, gt)),
        "TF+XLA, einsum per tap": (tf.function(einsum, **xla), (xt, gt)),
        "TF+XLA, tf.while_loop": (tf.function(while_loop, **xla), (xt, gt)),
        "TF, native kernel, no XLA": (tf.function(native), (xt, gt)),
        "TF+XLA, input gradient (the layer)": (tf.function(input_gradient, **xla), (gt, kernel)),
    }
    return {name: (lambda f=f, a=a: f(*a).numpy()) for name, (f, a) in forms.items()}


def jax_forms(x, g, k):
    import jax
    import jax.numpy as jnp

    b, h, w, c = x.shape
    p = (k - 1) // 2
    pads = ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0))

    @jax.jit
    def unrolled(x, g):
        xp = jnp.pad(x, pads)
        return jnp.stack([jnp.sum(xp[:, i : i + h, j : j + w, :] * g, axis=(0, 1, 2)) for i in range(k) for j in range(k)])

    @jax.jit
    def fori_loop(x, g):
        xp = jnp.pad(x, pads)

        def tap(index, taps):
            window = jax.lax.dynamic_slice(xp, (0, index // k, index % k, 0), g.shape)
            return taps.at[index].set(jnp.sum(window * g, axis=(0, 1, 2)))

        return jax.lax.fori_loop(0, k * k, tap, jnp.zeros((k * k, c)))

    xj, gj = jnp.asarray(x), jnp.asarray(g)
    return {
        "JAX, taps unrolled": lambda: unrolled(xj, gj).block_until_ready(),
        "JAX, fori_loop": lambda: fori_loop(xj, gj).block_until_ready(),
    }


def main(argv=None):
    import numpy as np

    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    rng = np.random.default_rng(0)
    x = rng.normal(size=args.shape).astype("float32")
    g = np.maximum(rng.normal(size=args.shape), 0).astype("float32")  # a ReLU's gradient: data-dependent
    forms = {**tensorflow_forms(x, g, args.kernel_size), **jax_forms(x, g, args.kernel_size)}
    reference = forms["JAX, fori_loop"]()
    for name, fn in forms.items():  # every kernel-gradient form computes the same numbers
        if "input gradient" not in name:
            np.testing.assert_allclose(fn(), reference, rtol=1e-3, atol=1e-2 * np.abs(reference).max())
    times = alternate(forms, args.repeats, warmup=1)
    base = times["JAX, fori_loop"]
    rows = [
        f"| {name} | {statistics.median(t):.2f} | {median_ratio(t, base):.2f}× |" for name, t in times.items()
    ]
    shape = "×".join(map(str, args.shape))
    table = "\n".join(
        [f"| kernel gradient, {args.kernel_size}x{args.kernel_size} on {shape} | seconds | ÷ JAX fori_loop |", "|---|---:|---:|", *rows]
    )
    print(table)
    if not args.no_record:
        append_section(
            args.results, "Depthwise kernel gradient: TensorFlow's XLA against JAX's", __file__, argv,
            f"Medians of {args.repeats} alternating rounds, one process; the output gradient is a ReLU's "
            "(half zeros), the input random.",
            [table],
        )


if __name__ == "__main__":
    main()
