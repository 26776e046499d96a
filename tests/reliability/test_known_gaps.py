"""Known gaps the reliability scenarios found and that are left as they are (issue 4).

Each test states the promise and is a strict xfail: it passes (as xfailed)
while the gap is there and fails (XPASS) once it is closed, so that the mark
is removed together with the gap.  docs/reliability.md says why each is left.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.common import (
    copy_fixture,
    run_worker,
)
from tinycortex_sa import db_path_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="migrations/versions/0005: the retired summary folders are removed before the commit, so a "
    "failed commit (full disk) leaves the database as it was but the folders gone",
)
def test_failed_legacy_migration_leaves_the_content_folders(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    summaries = ws / "memory_tree" / "content" / "wiki" / "summaries"
    before = sorted(p.name for p in summaries.iterdir())
    size = db_path_for(ws).stat().st_size
    report = run_worker("badenv", action="open", ws=str(ws), fsize=size + 4096)
    if report.get("ok") is not False:
        raise RuntimeError(f"the migration did not fail: {report}")
    assert sorted(p.name for p in summaries.iterdir()) == before
