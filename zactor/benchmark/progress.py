"""``zactor bench``'s progress line: where a long run is, on a terminal only.

On a terminal the bench shows one line on standard error, rewritten in place:
the phase (``round 2/5``), the step inside it (``latency``) and the time
since the bench started. Anywhere else (CI logs, pipes, files) it writes
nothing, so logs hold the table and nothing else.

The line is redrawn only when the bench moves to the next step, between
measurements, never from a timer thread: a thread waking to redraw would
take the GIL (and wake the terminal) in the middle of the timed loops, and
the figures must not depend on whether a terminal is watching.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO, Iterator

#: Return to the line's start and erase it (ANSI; every terminal emulator knows it).
_ERASE = "\r\x1b[K"


class Progress:
    """A one-line progress display on ``stream`` (default ``sys.stderr``) if it is a terminal.

    :meth:`phase` starts a phase, :meth:`step` names the step inside it; both
    redraw the line with the elapsed time. :meth:`above` wraps output to
    other streams of the same terminal, :meth:`close` erases the line.
    """

    def __init__(self, stream: IO[str] | None = None, label: str = "zactor bench") -> None:
        self.stream = sys.stderr if stream is None else stream
        self.label = label
        self.enabled = _is_terminal(self.stream)
        self.started = time.monotonic()
        self._phase = ""
        self._step = ""
        self._shown = False

    def phase(self, text: str) -> None:
        """Start phase ``text`` (e.g. ``round 2/5``) and show it."""
        self._phase, self._step = text, ""
        self._draw()

    def step(self, text: str) -> None:
        """Name the step inside the current phase (e.g. ``latency``) and show it."""
        self._step = text
        self._draw()

    def line(self) -> str:
        """The text of the progress line as it is drawn now (without control characters)."""
        elapsed = int(time.monotonic() - self.started)
        where = self._phase + (f": {self._step}" if self._step else "")
        return f"{self.label}: {where}  [{elapsed // 60}:{elapsed % 60:02d} elapsed]"

    def clear(self) -> None:
        """Erase the line (if shown) so the terminal's next output starts on a clean line."""
        if self._shown:
            self._write(_ERASE)
            self._shown = False

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Erase the line for the duration, then draw it again below what was printed."""
        self.clear()
        try:
            yield
        finally:
            if self._phase:
                self._draw()

    def close(self) -> None:
        """Erase the line for good: the run is over."""
        self.clear()
        self._phase = self._step = ""

    def _draw(self) -> None:
        if not self.enabled:
            return
        # Cut to the terminal's width: a wrapped line can no longer be rewritten in place.
        text = self.line()[: _columns(self.stream) - 1]
        self._write(_ERASE + text)
        self._shown = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = self._shown = False  # the terminal went away: carry on without it


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80
