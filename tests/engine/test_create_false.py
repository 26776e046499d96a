"""``create=False``: a mistyped workspace path is an error, not a new, empty workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import db_file

import tinycortex_sa
from tinycortex_sa import DatabaseNotFoundError, OpenError


def _nothing_under(root: Path) -> bool:
    return not any(root.iterdir())


def test_every_entry_point_refuses_a_missing_workspace_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "wokrspace"
    refusal = pytest.raises(DatabaseNotFoundError, match="does not exist and create=False")
    with refusal as refused, tinycortex_sa.create_engine(typo, create=False).connect():
        pass
    assert isinstance(refused.value, OpenError) and str(db_file(typo)) in str(refused.value)
    url = f"sqlite+tinycortex:///{db_file(typo)}?create=false"
    with pytest.raises(DatabaseNotFoundError), sa.create_engine(url).connect():
        pass
    with pytest.raises(DatabaseNotFoundError):
        tinycortex_sa.with_connection(typo, lambda c: None, create=False)
    with pytest.raises(DatabaseNotFoundError):
        tinycortex_sa.upgrade(typo, create=False)

    async def use_async() -> None:
        engine = tinycortex_sa.create_async_engine(typo, create=False)
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    with pytest.raises(DatabaseNotFoundError):
        asyncio.run(use_async())
    assert _nothing_under(tmp_path)


def test_an_existing_database_opens_with_create_false_and_the_default_still_creates(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with tinycortex_sa.create_engine(ws).connect() as conn:  # the default keeps the Rust core's behaviour
        conn.execute(sa.text("SELECT 1"))
    tinycortex_sa.invalidate(ws)
    engine = tinycortex_sa.create_engine(ws, create=False)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks")).scalar_one() == 0
    engine.dispose()
    assert tinycortex_sa.upgrade(ws, create=False).after == tinycortex_sa.upgrade(ws).after
