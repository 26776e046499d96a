"""Alembic's dialect compliance suite (``alembic.testing.suite``)."""

from __future__ import annotations

from typing import Any

from alembic.testing.suite import *  # noqa: F403
from alembic.testing.suite import _autogen_fixtures
from dialect_suite_plugin import chunk_db_tables

IncludeObject = Any  # Alembic's include_object hook: (object, name, type_, reflected, compare_to) -> bool


def _without_chunk_db_tables(include_object: IncludeObject) -> IncludeObject:
    """``include_object`` that also leaves out the tables the chunk DB held before the run.

    Alembic's autogenerate fixtures compare the whole database with the
    test's metadata, assuming the database holds nothing but the test's
    tables.  Every file sqlite+tinycortex opens holds the chunk DB's tables
    (they stay), which each comparison would report as tables to drop.  For
    another dialect the set is empty and the hook is the test's own.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and reflected and compare_to is None and name in chunk_db_tables():
            return False
        return include_object is None or bool(include_object(obj, name, type_, reflected, compare_to))

    return include


_original_fixture = _autogen_fixtures.AutogenFixtureTest._fixture
_original_include_object = _autogen_fixtures._default_object_filters


def _fixture(self: Any, m1: Any, m2: Any, *args: Any, **kw: Any) -> Any:
    if args:
        raise TypeError("pass _fixture's options by keyword")  # as every test in the suite does
    kw["object_filters"] = _without_chunk_db_tables(kw.get("object_filters", _original_include_object))
    return _original_fixture(self, m1, m2, **kw)


_autogen_fixtures.AutogenFixtureTest._fixture = _fixture  # type: ignore[method-assign]
# read at set-up time by the ModelOne-based tests (AutogenTest.setUp)
_autogen_fixtures._default_object_filters = _without_chunk_db_tables(_original_include_object)
