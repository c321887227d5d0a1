"""The `keras-vitmix` command's entry point: the part that must run before `keras_vitmix`
is imported, in the process the command owns.

Importing `keras_vitmix` imports Keras, and under the TensorFlow backend Keras imports
TensorFlow, whose C++ start-up lines (absl's "All log messages before
absl::InitializeLog()", oneDNN, cudart) go straight to file descriptor 2 whatever
`TF_CPP_MIN_LOG_LEVEL` says: only code that runs before that import can hold them back,
hence this small package beside `keras_vitmix` rather than inside it. It parses the
arguments with the standard library alone (`parser.py`), so `--help` and `models` (read
from a static catalogue, `catalog.py`) never import Keras. Otherwise it sets
`TF_CPP_MIN_LOG_LEVEL=3` (unless set) and the Keras backend named by `--backend`, imports
the command (and TensorFlow, where the command will need it) with descriptor 2 filtered,
asks for the allocator tuning of `keras_vitmix.config.tune_malloc` (`KERAS_VITMIX_MALLOC=
system` refuses it), and hands over to `keras_vitmix.cli.main`. A library import does
none of this.
"""

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

from keras_vitmix_cli import listing
from keras_vitmix_cli.parser import BACKENDS, build_parser  # noqa: F401  (BACKENDS: the public copy)

# Commands that never import TensorFlow unless it is the Keras backend.
_WITHOUT_TENSORFLOW = ("models", "predict")
# glog-style lines ("I0000 00:00:1796410050.560654    5868 port.cc:153] ...") and the
# banner absl prints before its first one.
_NATIVE_LOG = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _drop(line, min_level):
    """Whether a line written to descriptor 2 is native log below `min_level` (0-3)."""
    match = _NATIVE_LOG.match(line)
    if match:
        return "IWEF".index(match.group(1)) < min_level
    return min_level > 0 and line.startswith(_ABSL_BANNER)


@contextlib.contextmanager
def filtered_native_stderr():
    """Runs the block with file descriptor 2 going to a temporary file, then writes to
    stderr what it caught, less the native log lines below `TF_CPP_MIN_LOG_LEVEL`
    (everything if the block raised). Python's own stderr output goes through as well."""
    try:
        min_level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        min_level = 0
    if sys.stderr is None:  # started with descriptor 2 closed: nothing to show or filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or not _drop(line, min_level)))
            sys.stderr.flush()


def main(argv=None):
    """Runs `keras-vitmix` with `argv` (default: `sys.argv[1:]`); returns the exit status.

    Arguments are parsed first, with the standard library only: `--help` and bad
    arguments exit, and `models` prints, before Keras or a backend is imported."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    if args.command == "models" and not args.params:
        return listing.print_models(args.pattern)
    with filtered_native_stderr():
        from keras_vitmix import cli, config

        wants = args.command not in _WITHOUT_TENSORFLOW
        if wants and "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow"):
            import tensorflow  # noqa: F401  (datasets, training and export read through tf.data)
    try:
        config.tune_malloc()
        import keras  # already imported, with its backend fixed, by keras_vitmix

        if keras.backend.backend() == "jax":
            config.tune_xla_cpu()  # before JAX computes anything
    except ValueError as error:  # KERAS_VITMIX_MALLOC misspelt: one clear line, like cli.main's
        print(f"keras-vitmix: error: {error}", file=sys.stderr)
        return 2
    return cli.main(argv)
