"""Progress of long file passes (decoding, checking): a bar redrawn in place on a
terminal, two plain lines otherwise, so that a log written to a file or a pipe holds
no carriage returns or escape codes."""

import sys
import time


class Progress:
    """Counts files done out of `total` and reports on `stream` (default: stderr).

    On a terminal (`stream.isatty()`) one line is redrawn with "\\r" at most every
    `interval` seconds; elsewhere one line is written at the start and one at the end.

    Args:
        total: int, the files to go through.
        what: what is being done, e.g. "Decoding the 'train' split of data/cifar".
        stream: a text stream; None is `sys.stderr` at the time of the call.
        interval: seconds between redraws on a terminal.
    """

    def __init__(self, total, what, stream=None, interval=0.2):
        self.total, self.what, self.interval = total, what, interval
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _isatty(self.stream)
        self.start = self.shown = time.perf_counter()
        if not self.terminal:
            self._write(f"{what}: {total:,} files...\n")

    def update(self, done):
        now = time.perf_counter()
        if self.terminal and now - self.shown >= self.interval:
            self.shown = now
            self._write(f"\r{self.what}: {done:,}/{self.total:,} files ({done / max(1, self.total):.0%})")

    def close(self):
        seconds = time.perf_counter() - self.start
        done = f"{self.what}: {self.total:,}/{self.total:,} files in {seconds:.1f} s\n"
        self._write(("\r" + done) if self.terminal else done)

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
