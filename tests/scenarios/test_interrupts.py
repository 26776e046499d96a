"""Interrupt-safety: exceptions raised from a signal handler at random moments never wedge the file.

A child process (``interrupt_storm.py``) writes and reads through Sessions,
Core and ``with_connection`` while a one-shot timer raises KeyboardInterrupt,
SystemExit or RuntimeError from its signal handler thousands of times: in
checkouts, statements, commits, rollbacks and checkins.  Afterwards the file
must be free, another thread and the same thread must get the connection at
once, and every acknowledged commit must be there.  SQLAlchemy's own objects,
hit mid-update, may raise their own errors for the interrupted call; none may
be a checkout error of this library.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STORM = Path(__file__).with_name("interrupt_storm.py")
#: What the library itself may never answer after an interrupt.
CHECKOUT_ERRORS = ("NestedCheckoutError", "CheckoutTimeoutError", "CircuitOpenError")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [20261201, 20261202])
def test_thousands_of_interrupts_leave_the_file_usable_and_lose_no_commit(tmp_path: Path, seed: int) -> None:
    done = subprocess.run(
        [sys.executable, str(STORM), str(tmp_path / "ws"), "3000", "90", str(seed)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    tracebacks = report.pop("first_tracebacks")
    assert report["interrupts"] >= 1000, report  # the storm really happened
    assert not [name for name in CHECKOUT_ERRORS if name in report["errors"]], (report, tracebacks)
    assert report["other_thread_s"] is not None and report["other_thread_s"] < 1.0, report
    assert report["this_thread_ok"] is True, report
    assert report["held_after"] is False, report  # and nothing holds it once they are done
    assert report["slow_steps"] == [], report  # no step waited out busy_timeout on a leftover lock
    assert report["integrity"] == "ok"
    assert report["acknowledged"] > 100 and report["lost"] == [], report
