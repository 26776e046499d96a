"""The benchmark keeps working: one ``--quick`` run produces every row, target and the docs page.

No timing is asserted: benchmarks are never timed assertions in the test suite.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import Row
from benchmark.report import TARGETS, Verdict, _verdict_line, judge

pytestmark = pytest.mark.slow  # a whole benchmark run, at small counts

#: Every row the benchmark produces, by key (see tests/benchmark/).
EXPECTED_ROWS = {
    # reads: floor, lock, transaction cost, open per call
    "raw", "raw_lock", "raw_begin", "open_per_call",
    # SQLAlchemy pools with the same pragmas: plain pysqlite, BEGIN recipe, raw checkout
    "qp_plain", "qp_begin", "qp_checkout", "sp_plain", "sp_begin", "sp_checkout",
    "stp_plain", "stp_begin", "stp_checkout", "sp_tc_dialect",
    "qp_session_plain", "qp_session_begin",
    # tinycortex_sa
    "tc_with_connection", "tc_connect", "tc_checkout", "tc_session", "tc_refusal",
    "tc_ro_connect", "tc_ro_session", "tc_deferred_connect", "fastapi_depends", "fastapi_endpoint",
    # writes
    "bulk_raw", "bulk_raw_prebuilt", "bulk_raw_values", "bulk_core", "bulk_sa_only", "bulk_core_floor",
    "bulk_driver", "bulk_orm", "bulk_orm_uow", "bulk_qp_core", "bulk_qp_orm_uow",
    "tx_raw", "tx_with_connection", "tx_core", "tx_orm", "tx_qp_core",
    # threads
    *(f"threads{n}_{k}" for n in (1, 2, 4, 8) for k in ("raw", "with_connection", "engine")),
    # cold start and scale
    "first_raw", "first_with_connection", "first_engine", "first_sa_recipe", "create_raw",
    "create_with_connection",
    "scale_raw", "scale_with_connection", "scale_engine",
    # asyncio
    "aio_connect", "aiosqlite_connect", "aio_session", "aiosqlite_session",
    "aio_lag_p99", "aio_lag_budget_p99", "aio_lag_max", "aio_lag_budget_max", "aio_tasks", "to_thread_tasks",
    # similarity search
    "search_floor", "search_warm", "search_where", "search_after_commit", "search_after_append",
    "search_cold", "search_udf", "search_floor_small", "search_udf_small",
    # postgresql sync and search
    "pg_sync_first", "pg_sync_first_data", "pg_sync_unchanged", "pg_sync_touched", "pg_sync_1pct",
    "pg_numpy", "pg_sqlite_warm", "pg_query_hnsw", "pg_query_exact",
}  # fmt: skip


def test_quick_run_produces_every_row_and_target(tmp_path: Path) -> None:
    docs, out = tmp_path / "performance.md", tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmark", "--quick", "--dir", str(tmp_path),
         "--write-docs", str(docs), "--json", str(out)],
        capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == EXPECTED_ROWS
    for row in rows.values():
        assert math.isfinite(row["us"]) and row["us"] > 0, row
        assert math.isfinite(row["ratio"]), row
        assert row["label"] in done.stdout  # printed in the table
    items = [3, 4, 5, 6, 6, 7, 7, 8, 9, 9, 10, 11, 12, 12, 12, 12, 12, 13, 13, 13, 13]
    assert [t["item"] for t in result["targets"]] == items
    assert all(math.isfinite(t["ratio"]) for t in result["targets"])
    assert "Targets" in done.stdout
    page = docs.read_text()
    for heading in ("# Performance", "## Machine", "## Targets", "## Method", "## Results"):
        assert heading in page
    for fact in ("| Python |", "| SQLite |", "| SQLAlchemy |", "| CPU |", "| nproc |"):
        assert fact in page
    assert "Quick run" in page
    assert not any(p.name.startswith("tinycortex-bench-") for p in tmp_path.iterdir())  # cleaned up


def _rows(**us: float) -> list[Row]:
    return [Row(key, "section", key, value, "bulk_raw") for key, value in us.items()]


def test_a_missed_target_is_reported_at_its_floor_only_near_a_floor_estimate_above_the_limit() -> None:
    core = next(t for t in TARGETS if t.key == "bulk_core")
    assert core.floor == "bulk_core_floor"

    def verdict(core_us: float, floor_us: float) -> Verdict:
        rows = _rows(bulk_raw=10.0, bulk_core=core_us, bulk_core_floor=floor_us)
        return next(v for v in judge(rows) if v.target is core)

    at_floor = verdict(13.5, 13.6)
    assert not at_floor.met and at_floor.at_floor and math.isclose(at_floor.floor, 1.36)
    assert _verdict_line(at_floor)[2] == "MISSED, at its floor (1.36x)"
    for missed in (
        verdict(13.5, 12.0),
        verdict(15.0, 13.6),
        verdict(13.1, 14.0),
    ):  # floor reachable, far above, far below
        assert not missed.met and not missed.at_floor and _verdict_line(missed)[2] == "MISSED"
    met = verdict(12.0, 13.6)
    assert met.met and not met.at_floor and _verdict_line(met)[2] == "met"


def test_a_ratio_that_rounds_onto_its_limit_is_shown_with_one_more_decimal() -> None:
    core = next(t for t in TARGETS if t.key == "bulk_core")
    line = _verdict_line(
        next(
            v for v in judge(_rows(bulk_raw=10.0, bulk_core=13.04, bulk_core_floor=13.1)) if v.target is core
        )
    )
    assert line[1] == "1.304x (≤ 1.3x)" and line[2] == "MISSED, at its floor (1.31x)"
    line = _verdict_line(
        next(v for v in judge(_rows(bulk_raw=10.0, bulk_core=12.0, bulk_core_floor=13.1)) if v.target is core)
    )
    assert line[1] == "1.20x (≤ 1.3x)" and line[2] == "met"
