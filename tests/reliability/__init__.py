"""The reliability and security proving ground (issue 4).

Each scenario is a function ``run(ctx) -> Result`` in one module of this
package.  The test suite runs every scenario at a small scale
(``tests/test_reliability_*.py``); ``python -m tests.reliability --full``
(``make reliability``) runs them at full scale and prints the table that
``docs/reliability.md`` reports.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .common import Context, Result, capture_logs, check_logs, reproduce_command

#: name -> module, in the order of the issue
SCENARIOS: dict[str, str] = {
    "crash": "s1_crash",
    "contention": "s2_contention",
    "threads": "s3_threads",
    "fork": "s4_fork",
    "init-faults": "s5_init_faults",
    "damaged-files": "s6_damaged",
    "bad-input": "s7_bad_input",
    "security": "s8_security",
    "coexistence": "s9_coexistence",
    "not-ours": "s10_not_ours",
}


def scenario(name: str) -> Callable[[Context], Result]:
    module = importlib.import_module(f"{__name__}.{SCENARIOS[name]}")
    fn: Callable[[Context], Result] = module.run
    return fn


def run_scenario(name: str, *, full: bool, seed: int, tmp: Path | None = None) -> Result:
    """Run one scenario in a scratch directory, capturing this process's tinycortex_sa logs."""
    own_tmp = tmp is None
    base = Path(tempfile.mkdtemp(prefix=f"tc-reliability-{name}-")) if tmp is None else tmp
    ctx = Context(full=full, seed=seed, tmp=base)
    start = time.monotonic()
    try:
        with capture_logs() as logs:
            result = scenario(name)(ctx)
        check_logs(result, logs.lines)
    finally:
        for marker in base.glob("*.nobody-dir"):
            shutil.rmtree(marker.read_text(), ignore_errors=True)
        if own_tmp:
            shutil.rmtree(base, ignore_errors=True)
    result.seconds = time.monotonic() - start
    result.reproduce = reproduce_command(name, full, seed)
    return result
