"""Progress of ``tinycortex-sa upgrade``, read from the log records the upgrade already emits.

No hook in the library: Alembic logs ``Running upgrade A -> B`` before each
revision, and the data migrations log what they copied or purged.  On a
terminal a live line shows the current revision and its running time
(refreshed by a small thread, so a long data migration visibly advances);
elsewhere each step is one plain line, which suits deploy logs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from .schema_version import REVISIONS

#: Loggers listened to: Alembic's runner and the library (migrate, migrations, recovery).
LOGGERS = ("alembic.runtime.migration", "tinycortex_sa")
_STEP = re.compile(r"Running upgrade (\S*) -> ([^\s,]+)")
#: Library loggers whose INFO records are shown (not SQLAlchemy's per-pool instance loggers).
SHOWN = frozenset({"tinycortex_sa", "tinycortex_sa.migrate", "tinycortex_sa.migrations"})
_CLEAR = "\r\x1b[2K"


class Progress(logging.Handler):
    """A logging handler that turns the upgrade's records into progress output."""

    def __init__(
        self,
        stream: TextIO,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.2,
    ) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.live = live
        self.clock = clock
        self.interval = interval
        self.step: str | None = None
        self.step_started = 0.0
        self._out = threading.Lock()
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = _STEP.match(message)
        if match is None:
            if record.name in SHOWN or record.levelno >= logging.WARNING:
                self.write(f"  {message}")  # not Alembic's "Context impl SQLiteImpl." or "Pool recreating"
            return
        target = match.group(2)
        number = REVISIONS.index(target) + 1 if target in REVISIONS else "?"
        with self._out:
            self.step = f"[{number}/{len(REVISIONS)}] {target}"
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
    """Listen to the upgrade's log records at INFO for the duration of the block."""
    progress = Progress(stream, live)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(progress)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    progress.start()
    try:
        yield progress
    finally:
        progress.stop()
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(progress)
            logger.setLevel(level)
