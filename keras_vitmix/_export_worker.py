"""The TensorFlow process that writes exports for the JAX and torch backends.

Keras picks its backend once per process, so a model built under JAX or torch is saved
as `.keras` and re-loaded under TensorFlow in a subprocess. Starting TensorFlow is most
of an export's time, so the subprocess stays up for the session's later exports; it
reads one JSON request per line on stdin, answers one JSON line, and ends with its stdin
(when this process ends). The subprocess writes with `keras_vitmix._export_writer`, as
`keras_vitmix.export` does under TensorFlow; this module imports neither of them here.
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback

_lock = threading.Lock()
_worker = None


class _Worker:
    def __init__(self):
        self.log = tempfile.TemporaryFile(mode="w+")  # TensorFlow's own output, for errors
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keras_vitmix._export_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        atexit.register(self.close)

    def alive(self):
        return self.process.poll() is None

    def request(self, job):
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = self.process.wait()
            self.log.seek(0)
            tail = "\n".join(self.log.read().strip().splitlines()[-20:])
            raise RuntimeError(f"The TensorFlow export process ended (exit code {code}):\n{tail}")
        return json.loads(line)

    def close(self):
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def export(keras_path, path, **options):
    """`keras_vitmix._export_writer.write(keras_path, path, **options)` run under TensorFlow.

    `options` are the writer's (format, image_dtype, batch_size, opset, class_names,
    origin), checked by `keras_vitmix.export.export`; `path` is replaced if it exists.
    Returns what the writer returns (the served output names, the class names written).
    """
    global _worker
    with _lock:
        if _worker is None or not _worker.alive():
            _worker = _Worker()
        # Absolute paths: the worker keeps the working directory it started in.
        reply = _worker.request({"model": os.path.abspath(keras_path), "path": os.path.abspath(path), **options})
    if reply["ok"]:
        return reply["result"]
    if reply["type"] == "ValueError":  # bad input, already worded for the user
        raise ValueError(reply["message"])
    raise RuntimeError(f"Exporting under TensorFlow failed:\n{reply['message']}")


def _serve():
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed while exporting goes to the log, not into the replies
    from keras_vitmix import _export_writer

    for line in sys.stdin:
        job = json.loads(line)
        try:
            reply = {"ok": True, "result": _export_writer.write(job.pop("model"), job.pop("path"), **job)}
        except ValueError as error:
            reply = {"ok": False, "type": "ValueError", "message": str(error)}
        except Exception:  # reported to the caller with its traceback
            reply = {"ok": False, "type": "error", "message": traceback.format_exc()[-4000:]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
