"""Checkpoint files and state dicts as {name: NumPy array}, for `keras_vitmix.weights`.

Reads `.safetensors` (through safetensors, falling back to torch for bfloat16, which
NumPy lacks) and PyTorch's `.pth` / `.pt` / `.bin` (through `torch.load` with
`weights_only=True`: tensors, never arbitrary pickled code). A file that is not what its
suffix says, truncated or corrupt, is a `ValueError` naming the file and its expected
format, rather than the reader's own error (safetensors' "header too large", torch's
`KeyError: 101`), which names neither.
"""

import os
from collections.abc import Mapping

import numpy as np

SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_EXPECTED = {
    SAFETENSORS: "a safetensors file (an 8-byte header size, a JSON header, then every tensor's bytes)",
    "torch": "a PyTorch checkpoint as torch.save writes it (a zip archive, or a legacy pickle, of tensors)",
}


def state_dict(source):
    """Any supported source as {name: float NumPy array}.

    Args:
        source: a model with a `state_dict()` (a `torch.nn.Module`), a mapping of names
            to arrays or tensors, or the path to a `.safetensors`, `.pth`, `.pt` or
            `.bin` file. Training checkpoints that nest the weights under "model" or
            "state_dict", and names prefixed "module." (DataParallel), are unwrapped.
    """
    if isinstance(source, (str, os.PathLike)):
        state = read_file(os.fspath(source))
    elif callable(getattr(source, "state_dict", None)):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError(
            "`source` must be a timm model, a state dict or a checkpoint path. "
            f"Received: source of type {type(source).__name__}"
        )
    for wrapper in ("model", "state_dict"):  # training checkpoints nest the weights
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return {k: _to_numpy(v) for k, v in state.items()}


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor; NumPy has no bfloat16
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value)


def read_file(path):
    """The tensors of a checkpoint file, by name (NumPy arrays or torch tensors)."""
    if not os.path.isfile(path):
        raise ValueError(f"No checkpoint file at this path. Received: source={path!r}")
    if path.endswith(SAFETENSORS):
        return _read_safetensors(path)
    if path.endswith(TORCH_SUFFIXES):
        return _read_torch(path)
    raise ValueError(
        f"A checkpoint file must end in .safetensors, .pth, .pt or .bin. Received: source={path!r}"
    )


def _read_safetensors(path):
    import safetensors
    from safetensors import numpy as safetensors_numpy

    try:
        return safetensors_numpy.load_file(path)
    except safetensors.SafetensorError as error:
        raise _unreadable(path, _EXPECTED[SAFETENSORS], error) from None
    except (TypeError, ValueError):  # bfloat16, which NumPy lacks: read through torch
        from safetensors import torch as safetensors_torch

        try:
            return safetensors_torch.load_file(path)
        except Exception as error:
            raise _unreadable(path, _EXPECTED[SAFETENSORS], error) from error


def _read_torch(path):
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises KeyError, EOFError, OSError, RuntimeError, ...
        raise _unreadable(path, _EXPECTED["torch"], error) from error
    if not isinstance(state, Mapping):
        raise ValueError(
            f"The checkpoint file {path!r} holds a {type(state).__name__}, not a state dict. "
            f"Expected {_EXPECTED['torch']}, mapping names to tensors."
        )
    return state


def _unreadable(path, expected, error):
    return ValueError(
        f"Could not read the checkpoint file {path!r} ({os.path.getsize(path):,} bytes; truncated or "
        f"corrupt?). Expected {expected}. The reader said: {type(error).__name__}: {error}"
    )
