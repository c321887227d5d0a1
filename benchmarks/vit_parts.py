"""Where ViT-Ti's JAX training step loses to timm: each part of a transformer block,
forward and backward, under JAX (XLA:CPU) against PyTorch eager, same arrays, same run.

`benchmarks/speed.py` measures our ViT-Ti/16 training step at 1.6x timm's under JAX
(and level with keras-hub's ViT). This script splits a ViT-Ti block (batch 32, 197
tokens, width 192, 3 heads, MLP 768) into its parts and times the gradient of
sum(part(x)**2) with respect to every input, written the same way on both sides:

- the three matrix products of a `Dense` layer's step (forward, input gradient, kernel
  gradient), each alone;
- a `Dense` (the fused qkv projection), LayerNorm, exact (erf) GELU, the MLP (with 3-D
  products, as Keras's `Dense` computes them, and flattened to (B*N, D) matrices, as ours
  does under JAX), the attention (qkv, `dot_product_attention`, output projection) and
  the whole block, with 3-D products;
- under the JAX backend, also our `keras_vitmix.layers.TransformerBlock` (its
  `stateless_call`, jitted) against timm's `Block`: the library's layer against the
  hand-written JAX block shows what the Keras layer adds.

Rounds alternate; the table gives median milliseconds and the median of per-round
ratios (JAX ÷ PyTorch). The JAX and PyTorch gradients of every hand-written part are
checked to agree before timing.

    KERAS_BACKEND=jax python benchmarks/vit_parts.py
    KERAS_BACKEND=jax python benchmarks/vit_parts.py --repeats 9 --no-record
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

from _timing import alternate, append_section, median_ratio  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--mlp-dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--no-record", action="store_true")
    return parser.parse_args(argv)


def arrays(batch, tokens, dim, heads, mlp_dim, seed=0):
    """The inputs of every part, as float32 NumPy arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def weight(*shape):
        return (rng.normal(size=shape) * 0.02).astype("float32")

    rows = batch * tokens
    return {
        "x": rng.normal(size=(batch, tokens, dim)).astype("float32"),
        "x2d": rng.normal(size=(rows, dim)).astype("float32"),
        "dy2d": rng.normal(size=(rows, mlp_dim)).astype("float32"),
        "hidden": rng.normal(size=(batch, tokens, mlp_dim)).astype("float32"),
        "qkv": weight(dim, 3 * dim), "proj": weight(dim, dim),
        "fc1": weight(dim, mlp_dim), "fc2": weight(mlp_dim, dim),
        "w": weight(dim, mlp_dim),
        # Not 1 and 0: sum(LayerNorm(x)**2) would be constant in x, its gradient all cancellation.
        "gamma": (1 + 0.1 * rng.normal(size=dim)).astype("float32"), "beta": (0.1 * rng.normal(size=dim)).astype("float32"),
        "heads": heads,
    }


# Each part: (the arrays it takes, its JAX form, its PyTorch form, differentiated?).
# Products alone are timed without a gradient (they are the gradient's pieces).
PARTS = {
    "matmul x @ W (forward)": (("x2d", "w"), lambda np_, x, w: x @ w, False),
    "matmul dy @ W^T (input gradient)": (("dy2d", "w"), lambda np_, dy, w: dy @ np_.t(w), False),
    "matmul x^T @ dy (kernel gradient)": (("x2d", "dy2d"), lambda np_, x, dy: np_.t(x) @ dy, False),
    "Dense D -> 3D (the qkv projection)": (("x", "qkv"), lambda np_, x, w: x @ w, True),
    "LayerNorm": (("x", "gamma", "beta"), lambda np_, x, g, b: np_.layer_norm(x, g, b), True),
    "GELU (erf)": (("hidden",), lambda np_, h: np_.gelu(h), True),
    "MLP (Dense, GELU, Dense), 3-D products": (("x", "fc1", "fc2"), lambda np_, x, w1, w2: np_.gelu(x @ w1) @ w2, True),
    "MLP, tokens flattened to a matrix": (("x", "fc1", "fc2"), lambda np_, x, w1, w2: np_.flat_mlp(x, w1, w2), True),
    "attention (qkv, dot_product_attention, proj)": (("x", "qkv", "proj"), lambda np_, x, wq, wp: np_.attention(x, wq, wp), True),
    "block (hand-written)": (
        ("x", "qkv", "proj", "fc1", "fc2", "gamma", "beta"),
        lambda np_, x, wq, wp, w1, w2, g, b: np_.block(x, wq, wp, w1, w2, g, b),
        True,
    ),
}


class _Ops:
    """The few operations the parts use, for one framework."""

    def __init__(self, name, heads):
        self.name, self.heads = name, heads
        if name == "jax":
            import jax

            self.jax = jax
        else:
            import torch

            self.torch = torch

    def t(self, a):
        return a.T

    def layer_norm(self, x, gamma, beta):
        if self.name == "torch":
            return self.torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, 1e-6)
        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * self.jax.lax.rsqrt(variance + 1e-6) * gamma + beta

    def gelu(self, x):
        if self.name == "torch":
            return self.torch.nn.functional.gelu(x)
        return self.jax.nn.gelu(x, approximate=False)

    def flat_mlp(self, x, w1, w2):
        """The MLP as (B*N, D) matrix products, what our `Dense` runs under JAX."""
        flat = x.reshape(-1, x.shape[-1])
        return (self.gelu(flat @ w1) @ w2).reshape(x.shape)

    def attention(self, x, w_qkv, w_proj):
        batch, tokens, dim = x.shape
        qkv = (x @ w_qkv).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        if self.name == "torch":  # timm's layout: (B, heads, N, d)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            out = self.torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        else:  # ours: (B, N, heads, d), as keras.ops.dot_product_attention takes it
            out = self.jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return out.reshape(batch, tokens, dim) @ w_proj

    def block(self, x, w_qkv, w_proj, w1, w2, gamma, beta):
        x = x + self.attention(self.layer_norm(x, gamma, beta), w_qkv, w_proj)
        return x + self.gelu(self.layer_norm(x, gamma, beta) @ w1) @ w2


def forms(data):
    """{part: {"jax": fn, "torch": fn}}, each fn returning its results (gradients for a
    differentiated part) as NumPy arrays' sources, ready when it returns."""
    import jax
    import jax.numpy as jnp
    import torch

    ops = {name: _Ops(name, data["heads"]) for name in ("jax", "torch")}
    result = {}
    for part, (names, fn, differentiated) in PARTS.items():
        values = [data[n] for n in names]
        jax_inputs = [jnp.asarray(v) for v in values]
        torch_inputs = [torch.tensor(v, requires_grad=differentiated) for v in values]

        def jax_fn(*a, fn=fn):
            return fn(ops["jax"], *a)

        if differentiated:
            compiled = jax.jit(jax.grad(lambda *a, f=jax_fn: jnp.sum(f(*a) ** 2), argnums=tuple(range(len(values)))))
        else:
            compiled = jax.jit(jax_fn)

        def run_jax(compiled=compiled, inputs=jax_inputs):
            return jax.block_until_ready(compiled(*inputs))

        def run_torch(fn=fn, inputs=torch_inputs, differentiated=differentiated):
            if not differentiated:
                with torch.no_grad():
                    return fn(ops["torch"], *inputs)
            for tensor in inputs:
                tensor.grad = None
            (fn(ops["torch"], *inputs) ** 2).sum().backward()
            return tuple(tensor.grad for tensor in inputs)

        result[part] = {"jax": run_jax, "torch": run_torch}
    return result


def layer_forms(data):
    """Our `TransformerBlock` under the JAX backend against timm's `Block`, or {} under
    another backend (the row needs Keras running on JAX)."""
    import keras

    if keras.backend.backend() != "jax":
        return {}
    import jax
    import jax.numpy as jnp
    import torch

    from keras_vitmix.layers import TransformerBlock
    from keras_vitmix.weights import import_timm

    timm = import_timm()  # safe where TensorFlow is loaded too

    batch, tokens, dim = data["x"].shape
    mlp_dim = data["fc1"].shape[1]
    block = TransformerBlock(num_heads=data["heads"], mlp_dim=mlp_dim, layer_norm_epsilon=1e-6)
    block.build((batch, tokens, dim))
    trainable = [v.value for v in block.trainable_variables]
    frozen = [v.value for v in block.non_trainable_variables]
    x = jnp.asarray(data["x"])

    def loss(trainable, x):
        y, _ = block.stateless_call(trainable, frozen, x)
        return jnp.sum(y**2)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    reference = timm.models.vision_transformer.Block(dim, data["heads"], mlp_ratio=mlp_dim / dim, qkv_bias=True)
    xt = torch.tensor(data["x"], requires_grad=True)

    def run_torch():
        reference.zero_grad(set_to_none=True)
        xt.grad = None
        (reference(xt) ** 2).sum().backward()

    return {"our TransformerBlock (Keras, JAX) vs timm Block": {
        "jax": lambda: jax.block_until_ready(step(trainable, x)), "torch": run_torch,
    }}


def check_agreement(part_forms):
    """The JAX and PyTorch results of every hand-written part agree."""
    import numpy as np

    for part, pair in part_forms.items():
        ours, theirs = pair["jax"](), pair["torch"]()
        ours = ours if isinstance(ours, tuple) else (ours,)
        theirs = theirs if isinstance(theirs, tuple) else (theirs,)
        for a, b in zip(ours, theirs):
            b = b.detach().numpy()
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-3, atol=2e-3 * np.abs(b).max(), err_msg=part)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    data = arrays(args.batch, args.tokens, args.dim, args.heads, args.mlp_dim)
    part_forms = forms(data)
    check_agreement(part_forms)
    part_forms.update(layer_forms(data))
    flat = {(part, side): fn for part, pair in part_forms.items() for side, fn in pair.items()}
    times = alternate(flat, args.repeats, warmup=2)
    header = (
        f"| part (B={args.batch}, N={args.tokens}, D={args.dim}, {args.heads} heads, MLP {args.mlp_dim}) "
        "| JAX ms | PyTorch ms | JAX ÷ PyTorch |"
    )
    rows = [
        f"| {part} | {1e3 * statistics.median(times[part, 'jax']):.1f} | "
        f"{1e3 * statistics.median(times[part, 'torch']):.1f} | {median_ratio(times[part, 'jax'], times[part, 'torch']):.2f}× |"
        for part in part_forms
    ]
    table = "\n".join([header, "|---|---:|---:|---:|", *rows])
    print(table)
    if not args.no_record:
        append_section(
            args.results, "ViT block parts: JAX (XLA:CPU) against PyTorch eager", __file__, argv,
            f"Medians of {args.repeats} alternating rounds, one process; each differentiated part is timed as the "
            "gradient of sum(part(x)**2) with respect to all its inputs, the products alone as forward calls.",
            [table],
        )


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
