"""Shared fixtures: a fresh workspace per test and a clean per-process registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinycortex_sa import api, registry


def _find_fixtures() -> Path:
    # CI clones the repo next to a copy of shared/; developers have it at ../shared
    for base in (Path(__file__).resolve().parents[1].parent, Path.cwd().parent):
        candidate = base / "shared" / "fixtures"
        if candidate.is_dir():
            return candidate
    raise RuntimeError("cannot find ../shared/fixtures beside the repository")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Every test starts with no cached connections and leaves none behind."""
    yield
    for handle in list(registry._handles.values()):
        if handle.held_by_current_thread:
            handle.checkin()
        handle.close()
    registry._handles.clear()
    registry._aliases.clear()
    api._by_workspace.clear()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def fixtures_dir() -> Path:
    return _find_fixtures()


def copy_fixture(name: str, dest: Path) -> Path:
    """Copy the read-only fixture workspace ``name`` to ``dest`` and return it."""
    src = _find_fixtures() / name
    shutil.copytree(src, dest, copy_function=shutil.copy)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o700 if p.is_dir() else 0o600)
    return dest
