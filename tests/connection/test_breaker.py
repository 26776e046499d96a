from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import FakeClock

from tinycortex_sa import CircuitOpenError
from tinycortex_sa.connection.breaker import CircuitBreaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(Path("/x/chunks.db"), threshold=3, cooldown=30.0, clock=clock)


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.before_attempt()
        breaker.record_failure(OSError("boom"))


def test_trips_exactly_at_the_threshold(breaker: CircuitBreaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tinycortex_sa")
    fail(breaker, 2)
    assert breaker.snapshot().state == "closed"
    fail(breaker)
    snap = breaker.snapshot()
    assert (snap.state, snap.failures, snap.retry_in) == ("open", 3, 30.0)
    assert "OSError: boom" in (snap.last_error or "")
    with pytest.raises(CircuitOpenError, match=r"chunks\.db") as info:
        breaker.before_attempt()
    assert info.value.retry_in == 30.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/x/chunks.db" in warnings[0].getMessage()


def test_success_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.before_attempt()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.snapshot().state == "closed"


def test_one_trial_after_cooldown_then_recovery(
    breaker: CircuitBreaker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tinycortex_sa")
    fail(breaker, 3)
    clock.now += 29.9
    with pytest.raises(CircuitOpenError):
        breaker.check()
    clock.now += 0.2
    breaker.check()  # would be allowed; check() changes nothing
    breaker.before_attempt()  # the trial
    assert breaker.snapshot().state == "half_open"
    with pytest.raises(CircuitOpenError):
        breaker.before_attempt()  # everyone else waits for the trial's verdict
    breaker.record_success()
    assert breaker.snapshot() == breaker.snapshot().__class__("closed", 0, None, 0.0)
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "closed" in infos[0].getMessage()


def test_failed_trial_reopens_with_a_fresh_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 31
    fail(breaker)  # the trial fails
    assert breaker.snapshot().state == "open"
    clock.now += 29
    with pytest.raises(CircuitOpenError):
        breaker.before_attempt()
    clock.now += 2
    breaker.before_attempt()
    assert breaker.snapshot().state == "half_open"


def test_a_neutral_outcome_releases_the_trial(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 31
    breaker.before_attempt()
    breaker.record_neutral()  # e.g. another process held a lock
    assert breaker.snapshot().state == "open"
    breaker.before_attempt()  # the next caller may try at once
    assert breaker.snapshot().state == "half_open"
