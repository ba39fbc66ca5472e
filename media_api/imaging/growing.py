"""A file still being written by another process, read as if it were whole.

The validation process decodes an upload while its bytes still arrive: a read past what is
written waits until the writer signals progress on a control pipe, or says the final length
(then it is the end of the file), or closes the pipe without one (the upload was abandoned).
Reads also keep a CPU budget, so a decode that costs too much stops before the last byte.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["GrowingFile", "WriterGone", "finished", "progressed"]

# Waits are woken by the writer; this bounds a wait whose wake-up was lost to a full pipe.
_POLL_SECONDS: Final = 0.05
_PROGRESS: Final = b"."
_END: Final = b"="


class WriterGone(Exception):
    """The writer closed the control pipe without saying how long the file is."""


def progressed(control_fd: int) -> None:
    """Writer side: more bytes are in the file (never blocks: a full pipe already wakes)."""
    with contextlib.suppress(BlockingIOError):
        os.write(control_fd, _PROGRESS)


def finished(control_fd: int, size: int) -> None:
    """Writer side: the file is complete at `size` bytes."""
    os.write(control_fd, _END + str(size).encode() + b"\n")


class GrowingFile(io.RawIOBase):
    """Reads of `path` that wait for bytes not written yet; see the module docstring."""

    def __init__(self, path: str, control: str, cpu_budget: float, budget_error: Exception) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._control = os.open(control, os.O_RDONLY | os.O_NONBLOCK)
        self._pos = 0
        self._final: int | None = None
        self._said = b""
        self._cpu_deadline = time.process_time() + cpu_budget
        self._budget_error = budget_error

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._length() + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        if time.process_time() > self._cpu_deadline:
            raise self._budget_error
        view = memoryview(buffer).cast("B")
        while True:
            count = os.preadv(self._fd, [view], self._pos)
            if count:
                self._pos += count
                return count
            if self._final is not None and self._pos >= self._final:
                return 0
            self._wait()

    def _length(self) -> int:
        """The final length, once the writer has said it."""
        while self._final is None:
            self._wait()
        return self._final

    def _wait(self) -> None:
        ready, _, _ = select.select([self._control], [], [], _POLL_SECONDS)
        if not ready:
            return
        data = os.read(self._control, 4096)
        if not data:
            if self._final is None:
                raise WriterGone("the upload ended before its last byte")
            return
        self._said += data
        end = self._said.find(_END)
        if end >= 0 and self._said.endswith(b"\n"):
            self._final = int(self._said[end + 1 : -1])

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            os.close(self._control)
        super().close()
