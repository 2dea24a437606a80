"""Progress of long work (a deployment, a rollback): each phase as it begins, with the time since
the start; on a terminal also a spinner with the running time, redrawn in place; in CI logs
(stdout not a terminal) plain lines only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

SPINNER = "|/-\\"


class Progress:
    def __init__(
        self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic, tty: bool | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock
        self.started = clock()
        self.tty = self.stream.isatty() if tty is None else tty
        self.current: str | None = None
        self._frame = 0
        self._spinner_shown = False

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def step(self, text: str) -> None:
        """A line that stays: `-----> TEXT`."""
        self.line(f"-----> {text}")

    def phase(self, name: str) -> None:
        """Show that `name` began (once per change of phase)."""
        if name == self.current:
            return
        self.current = name
        self.line(f"-----> {name} (at {self.elapsed:.1f} s)")

    def line(self, text: str) -> None:
        """A line that stays, above the spinner."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def tick(self) -> None:
        """Redraw the spinner (terminals only)."""
        if not self.tty or self.current is None:
            return
        self._frame = (self._frame + 1) % len(SPINNER)
        self.stream.write(f"\r{SPINNER[self._frame]} {self.current} {self.elapsed:.0f} s\033[K")
        self.stream.flush()
        self._spinner_shown = True

    def wait(self, seconds: float) -> None:
        """Sleep, keeping the spinner turning."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            self.tick()
            time.sleep(min(left, 0.1) if self.tty else left)

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._spinner_shown:
            self.stream.write("\r\033[K")
            self._spinner_shown = False
