"""Shared fixtures: a fresh workspace per test and a clean per-process registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import InitCounter, copy_fixture, fixtures_root

from tinycortex_sa.connection import registry
from tinycortex_sa.schema import upgrade

__all__ = ["copy_fixture"]


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Every test starts with no cached connections and leaves none behind."""
    yield
    registry.close_all()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def fixtures_dir() -> Path:
    return fixtures_root()


@pytest.fixture
def init_counter(monkeypatch: pytest.MonkeyPatch) -> InitCounter:
    """Replace schema initialisation with a stub that counts calls and creates nothing.

    For tests about the connection rather than the migrations (which have their own); their
    files hold test tables only, so the refusal of other applications' databases is off too.
    """
    counter = InitCounter()
    monkeypatch.setattr(registry, "initialise", counter)
    monkeypatch.setattr(upgrade, "refuse_foreign", lambda conn, path: None)
    return counter
