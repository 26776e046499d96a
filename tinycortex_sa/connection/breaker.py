"""A per-file circuit breaker around opening and initialising the connection.

Why not pybreaker: the runtime dependencies are fixed (SQLAlchemy, Alembic,
tenacity), pybreaker reads the wall clock (``datetime.now()``), and it wraps
calls rather than letting the pool decide what counts as a failure.  The
states fit in one small class with an injectable monotonic clock.

States: ``closed`` (calls pass), ``open`` (calls are refused until the
cooldown since the last failure has passed), ``half_open`` (one trial call
is in flight; every other caller is refused until it reports).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from ..errors import CircuitOpenError

log = logging.getLogger("tinycortex_sa")

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerState:
    """A snapshot of one file's breaker, for applications and health checks."""

    state: State
    failures: int
    """Consecutive counted failures (reset by a success)."""
    last_error: str | None
    retry_in: float
    """Seconds until a trial is let through (0 unless open)."""


class CircuitBreaker:
    """Counts consecutive open/initialise failures of one database file."""

    def __init__(
        self,
        path: Path,
        threshold: int = 3,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.state: State = "closed"
        self.failures = 0
        self.last_failure_at = 0.0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`CircuitOpenError` if an attempt now would be refused; change nothing."""
        if self.state == "closed":
            return
        with self._lock:
            remaining = self.cooldown - (self.clock() - self.last_failure_at)
            if self.state == "half_open" or (self.state == "open" and remaining > 0):
                self._refuse(remaining)

    def before_attempt(self) -> None:
        """Let a caller try to open the file, or raise :class:`CircuitOpenError`.

        Touches nothing but memory: a refusal costs no file access.  After the
        cooldown exactly one caller is let through as the trial.
        """
        with self._lock:
            if self.state == "closed":
                return
            remaining = self.cooldown - (self.clock() - self.last_failure_at)
            if self.state == "open" and remaining <= 0:
                self.state = "half_open"  # this caller is the one trial
                return
            self._refuse(remaining)

    def _refuse(self, remaining: float) -> NoReturn:
        raise CircuitOpenError(
            f"circuit breaker open for {self.path}: {self.failures} consecutive failures to "
            f"open or initialise it (last: {self.last_error}); the next attempt is allowed in "
            f"{max(remaining, 0.0):.1f}s. Fix the cause, or call tinycortex_sa.invalidate() "
            "to reset the breaker now.",
            path=self.path,
            retry_in=max(remaining, 0.0),
        )

    def record_success(self) -> None:
        """Close the breaker after a successful open; logs a recovery once."""
        with self._lock:
            recovered = self.state != "closed"
            self.state = "closed"
            self.failures = 0
            self.last_error = None
        if recovered:
            log.info("circuit breaker closed for %s: the database opened again", self.path)

    def record_failure(self, error: BaseException) -> None:
        """Count a failed open; the threshold-th consecutive one trips the breaker."""
        with self._lock:
            self.failures += 1
            self.last_failure_at = self.clock()
            self.last_error = f"{type(error).__name__}: {error}"
            tripped = self.state == "closed" and self.failures >= self.threshold
            if tripped or self.state == "half_open":
                self.state = "open"
        if tripped:
            log.warning(
                "circuit breaker opened for %s after %d consecutive failures; last error: %s",
                self.path,
                self.failures,
                self.last_error,
            )

    def record_neutral(self) -> None:
        """An attempt ended in an error that says nothing about the install
        (another process held a lock): release a trial without judging it."""
        with self._lock:
            if self.state == "half_open":
                self.state = "open"
                self.last_failure_at = self.clock() - self.cooldown  # next caller may try

    def snapshot(self) -> BreakerState:
        """Return the breaker's state as an immutable value."""
        with self._lock:
            retry_in = 0.0
            if self.state == "open":
                retry_in = max(self.cooldown - (self.clock() - self.last_failure_at), 0.0)
            return BreakerState(self.state, self.failures, self.last_error, retry_in)
