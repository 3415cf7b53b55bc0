"""Console output that cannot end a run: a write to a closed or broken stream is dropped.

`smolgrpo train ... 2>&1 | tee log` where Ctrl-C also kills `tee`, `... | head -n 2`, or an ssh
session that went away: the next write raises (BrokenPipeError, since Python ignores SIGPIPE;
OSError EIO from a hung-up terminal; ValueError from a closed file object) and, uncaught, a
progress line or a signal handler's message ends a run that was fine, with no checkpoint. Here
such a stream is given up on instead: nothing more is written to it, its file descriptor (1 or 2)
is pointed at /dev/null so that the interpreter's last flush and child processes cannot fail on it
either, and the command goes on and ends as it would have (exit 0 for a finished run).

`guard_standard_streams()` (around every command in cli.main) covers every print of a command;
`write_line` is for the writers that must not depend on it: the signal handlers and the watchdog
(interrupts.py) and the progress lines (progress.py), which library code also runs.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

# What a write to a stream that can no longer take it raises.
STREAM_ERRORS = (OSError, ValueError)


def _silence_descriptor(stream) -> None:
    """Point a broken standard stream's descriptor at /dev/null and drop what it buffered."""
    try:
        descriptor = stream.fileno()
    except (*STREAM_ERRORS, AttributeError):
        return
    if descriptor not in (1, 2):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, descriptor)
        os.close(null)
        stream.flush()  # what the failed write left in the buffer now goes to /dev/null
    except (*STREAM_ERRORS, RuntimeError):
        pass


class GuardedStream:
    """A text stream proxy whose write and flush never raise for a closed or broken stream.

    After the first such failure `broken` is True and every later write is dropped."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = stream is None  # Python sets sys.stdout to None when fd 1 is closed

    def _give_up(self) -> None:
        self.broken = True
        _silence_descriptor(self._stream)

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except STREAM_ERRORS:
                self._give_up()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except STREAM_ERRORS:
                self._give_up()

    def isatty(self) -> bool:
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except STREAM_ERRORS:
            return False

    def __getattr__(self, name: str):  # fileno, encoding, buffer, ...: the stream's own
        return getattr(self._stream, name)


def write_line(line: str, stream) -> bool:
    """`line` and a newline to `stream`, flushed; False when the stream is closed or broken, or
    None (the line is dropped), never an exception.

    From a signal handler that interrupted a write to the same stream, Python's buffered writer
    raises RuntimeError (reentrant call): the line then goes straight to the descriptor."""
    if stream is None or getattr(stream, "broken", False):
        return False
    try:
        print(line, file=stream, flush=True)
        return True
    except RuntimeError:
        try:
            os.write(stream.fileno(), (line + "\n").encode())
            return True
        except (*STREAM_ERRORS, AttributeError, RuntimeError):
            return False
    except STREAM_ERRORS:
        _silence_descriptor(stream)
        return False


def _plug_closed_descriptors() -> None:
    """/dev/null on fd 1 and 2 when they were closed at start (`>&- 2>&-`): otherwise the next
    file opened (metrics.jsonl, a checkpoint) takes the number and a library's write to
    "stdout" would land in it."""
    for descriptor in (1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                if null != descriptor:
                    os.dup2(null, descriptor)
                    os.close(null)
            except OSError:
                pass


@contextmanager
def guard_standard_streams():
    """sys.stdout and sys.stderr as GuardedStreams while the block runs (flushed, then put
    back, at its end: a broken pipe surfaces at that flush, never at the interpreter's exit)."""
    saved_stdout, saved_stderr = sys.stdout, sys.stderr
    _plug_closed_descriptors()
    guarded_stdout, guarded_stderr = GuardedStream(saved_stdout), GuardedStream(saved_stderr)
    sys.stdout, sys.stderr = guarded_stdout, guarded_stderr
    try:
        yield
    finally:
        guarded_stdout.flush()
        guarded_stderr.flush()
        if sys.stdout is guarded_stdout:  # unless the block put in a stream of its own
            sys.stdout = saved_stdout
        if sys.stderr is guarded_stderr:
            sys.stderr = saved_stderr
