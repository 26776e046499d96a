"""Progress of ``tinycortex-sa upgrade``, from the upgrade's own events.

:func:`tinycortex_sa.schema.progress.reporting` tells a listener when each
revision starts (Alembic's ``on_version_apply`` hook marks the end of the one
before) and what the data migrations report; no log record is parsed and no
logger is touched.  On a terminal a live line shows the current revision and
its running time (refreshed by a small thread, so a long data migration
visibly advances); elsewhere each step is one plain line, which suits deploy
logs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from ..schema import progress as events
from ..schema.version import REVISIONS

_CLEAR = "\r\x1b[2K"


class LiveLine:
    """One terminal line, repainted in place at each call and cleared at the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.painted = False

    def __call__(self, text: str) -> None:
        self.stream.write(f"{_CLEAR}{text}"[:200])
        self.stream.flush()
        self.painted = True

    def clear(self) -> None:
        if self.painted:
            self.stream.write(_CLEAR)
            self.stream.flush()


class Progress:
    """A listener for :class:`~tinycortex_sa.schema.progress.UpgradeEvent`\\ s that writes progress output."""

    def __init__(
        self,
        stream: TextIO,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.2,
    ) -> None:
        self.stream = stream
        self.live = live
        self.clock = clock
        self.interval = interval
        self.step: str | None = None
        self.step_started = 0.0
        self._out = threading.Lock()
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, event: events.UpgradeEvent) -> None:
        if event.kind == "report":
            self.write(f"  {event.message}")
        elif event.kind == "start":
            with self._out:
                self.step = f"[{event.number or '?'}/{len(REVISIONS)}] {event.revision}"
                self.step_started = self.clock()
            if self.live:
                self.paint()
            else:
                self.write(f"upgrading {self.step}")

    def write(self, line: str) -> None:
        """Print a permanent line (above the live line, which is then repainted)."""
        with self._out:
            self.stream.write((_CLEAR if self.live else "") + line + "\n")
            self.stream.flush()
        if self.live and self.step is not None:
            self.paint()

    def paint(self) -> None:
        """Redraw the live line: the current revision and how long it has been running."""
        with self._out:
            if self.step is None:
                return
            elapsed = self.clock() - self.step_started
            self.stream.write(f"{_CLEAR}upgrading {self.step}  {elapsed:.1f}s")
            self.stream.flush()

    def start(self) -> None:
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="tinycortex-sa-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._done.wait(self.interval):
            self.paint()

    def stop(self) -> None:
        self._done.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.live and self.step is not None:
            with self._out:
                self.stream.write(_CLEAR)
                self.stream.flush()


@contextlib.contextmanager
def reporting(stream: TextIO, live: bool) -> Iterator[Progress]:
    """Show the progress of upgrades run in this block (this thread) on ``stream``."""
    progress = Progress(stream, live)
    progress.start()
    try:
        with events.reporting(progress):
            yield progress
    finally:
        progress.stop()
