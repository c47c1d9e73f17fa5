"""A one-line progress bar on standard error, for people at a terminal: `contacts import`
draws it over the API (upload, then the import job's progress) and the platform's database
import (`penguinmails-api import-contacts`) while it reads the file."""

from __future__ import annotations

from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not one."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.width = width
        self.enabled = stream.isatty()
        self._drawn = 0

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.width * min(done, total) // total
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{self.label} [{bar}] {100 * min(done, total) // total}%"
        line += f" {note}" if note else ""
        # Over the previous drawing, longer or not.
        self.stream.write("\r" + line.ljust(self._drawn))
        self._drawn = len(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = 0
