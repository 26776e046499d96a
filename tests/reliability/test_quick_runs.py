"""Issue 4: every reliability scenario at the test suite's scale (``make reliability`` runs them larger).

The scenarios live in ``tests/reliability`` and are shared with
``python -m tests.reliability --full``; see docs/reliability.md for the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability import SCENARIOS, run_scenario

pytestmark = pytest.mark.slow  # reliability scenarios: seconds each

SEED = 20261126


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str, tmp_path: Path) -> None:
    result = run_scenario(name, full=False, seed=SEED, tmp=tmp_path)
    assert result.trials + result.bad_inputs > 0, "the scenario ran nothing"
    assert result.lost == 0, result.summary()
    assert result.problems == [], result.summary()
    assert result.log_lines > 0, "no tinycortex_sa log line was captured: the content check saw nothing"
