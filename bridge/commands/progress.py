"""A progress bar on stderr for long operations, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import Self, TextIO

WIDTH = 30
REDRAW_SECONDS = 0.1


class Progress:
    """`with Progress("replay", total) as bar: bar.advance(n)`; silent when not a TTY."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._stream = sys.stderr if stream is None else stream
        self._shown = self._stream.isatty() and total > 0
        self._drawn_at = 0.0

    def __enter__(self) -> Self:
        self._draw(force=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._shown:
            self._draw(force=True)
            self._stream.write("\n")
            self._stream.flush()

    def advance(self, count: int = 1) -> None:
        self._done = min(self._total, self._done + count)
        self._draw(force=False)

    def _draw(self, *, force: bool) -> None:
        if not self._shown:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        filled = WIDTH * self._done // self._total
        bar = "#" * filled + "." * (WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total}")
        self._stream.flush()
