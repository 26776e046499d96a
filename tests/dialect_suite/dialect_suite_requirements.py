"""What the dialect suites may expect of the database under test.

One class serves both suites (they run in one pytest process, which has one
requirements object): SQLAlchemy's :class:`sqlalchemy.testing.requirements.SuiteRequirements`
and Alembic's :class:`alembic.testing.requirements.SuiteRequirements`.

Three kinds of entries:

* **SQLite features** the base classes leave closed (views, CTEs, window
  functions, JSON, ...): opened, so that the suites test them.
* **SQLite limitations**, for any driver: closed, each with the reason.
  Whatever is not named here keeps the base classes' default.
* **sqlite+tinycortex**: closed only when the URL under test is
  ``sqlite+tinycortex`` (see :func:`tinycortex`), each with the reason; the
  same suites against the stock ``sqlite+pysqlite`` dialect run them.  The
  last of them gate tests no requirement of the suites covers: those tests
  are named in :data:`TEST_EXCLUSIONS`.

Requirement checks never open a connection of their own: on sqlite+tinycortex
a check made inside a test that holds the connection would meet the
documented fail-fast :class:`tinycortex_sa.NestedCheckoutError` (one shared
connection per file, docs/concurrency.md) rather than answer; the base
classes open one for the isolation levels and for Alembic's
``unique_constraint_reflection``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alembic.testing.requirements import SuiteRequirements as AlembicSuiteRequirements
from sqlalchemy.engine.reflection import ObjectKind, ObjectScope
from sqlalchemy.testing import exclusions
from sqlalchemy.testing.exclusions import compound
from sqlalchemy.testing.requirements import SuiteRequirements

TINYCORTEX_DRIVER = "tinycortex"


def _is_tinycortex(config: Any) -> bool:
    return bool(config.db.dialect.driver == TINYCORTEX_DRIVER)


def tinycortex(reason: str) -> compound:
    """Closed on sqlite+tinycortex (for ``reason``), open on any other driver."""
    return exclusions.skip_if(_is_tinycortex, f"sqlite+tinycortex: {reason}")


def only_tinycortex(reason: str) -> compound:
    """Open on sqlite+tinycortex only; ``reason`` says why the stock drivers lack it."""
    return exclusions.only_if(_is_tinycortex, reason)


class Requirements(AlembicSuiteRequirements, SuiteRequirements):
    # ---------------------------------------------------------------------------------------------
    # connections and transactions
    # ---------------------------------------------------------------------------------------------
    @property
    def independent_connections(self) -> compound:
        """Closed: two read-write connections on one SQLite file lock each other out.

        (SQLAlchemy's own test requirements close it for every SQLite driver.)
        Its one use, the reflection tests' own ``StaticPool`` engine, would be
        refused on sqlite+tinycortex anyway: its engines keep their own pool
        (``poolclass=`` raises ``OptionError``); they use the main engine.
        """
        return exclusions.closed()

    @property
    def independent_readonly_connections(self) -> compound:
        """Open: the tests behind it open connections of a second engine one after another.

        On sqlite+tinycortex they share the file's one connection, which is
        what such an engine gets, and never nest.
        """
        return exclusions.open()

    @property
    def savepoints(self) -> compound:
        """Open on sqlite+tinycortex, which runs the driver in ``isolation_level=None`` and emits BEGIN.

        The stock pysqlite driver begins transactions itself, only before DML,
        which breaks SAVEPOINT (SQLAlchemy's pysqlite documentation,
        "Serializable isolation / Savepoints / Transactional DDL").
        """
        return only_tinycortex("pysqlite's own transaction handling does not support SAVEPOINT")

    @property
    def isolation_level(self) -> compound:
        return exclusions.open()

    def get_isolation_levels(self, config: Any) -> dict[str, Any]:
        # SQLite's dialect lists its levels without asking the connection: no checkout here
        dialect = config.db.dialect
        return {
            "default": dialect.default_isolation_level or "SERIALIZABLE",
            "supported": dialect.get_isolation_level_values(None),
        }

    @property
    def get_isolation_level_values(self) -> compound:
        return exclusions.open()

    @property
    def autocommit(self) -> compound:
        """Open where the dialect lists AUTOCOMMIT among its isolation levels (pysqlite and tinycortex do)."""
        return exclusions.only_if(
            lambda config: "AUTOCOMMIT" in config.db.dialect.get_isolation_level_values(None),
            "the dialect does not list AUTOCOMMIT",
        )

    @property
    def autocommit_isolation(self) -> compound:
        return self.autocommit

    @property
    def skip_autocommit_rollback(self) -> compound:
        """Open: pysqlite implements ``detect_autocommit_setting`` and the default ``do_rollback``."""
        return exclusions.open()

    @property
    def two_phase_transactions(self) -> compound:
        return exclusions.closed()  # SQLite has no two-phase commit

    @property
    def empty_inserts_executemany(self) -> compound:
        return exclusions.open()

    # ---------------------------------------------------------------------------------------------
    # schema objects SQLite has
    # ---------------------------------------------------------------------------------------------
    @property
    def views(self) -> compound:
        return exclusions.open()

    @property
    def schemas(self) -> compound:
        """Open: ``test_schema`` is a database attached to every connection (the plugin's provisioning)."""
        return exclusions.open()

    @property
    def cross_schema_fk_reflection(self) -> compound:
        return exclusions.closed()  # SQLite: a foreign key cannot refer to another attached database

    @property
    def implicit_default_schema(self) -> compound:
        return exclusions.closed()  # PostgreSQL's search_path; SQLite's "main" is not implied elsewhere

    @property
    def temporary_tables(self) -> compound:
        return exclusions.open()

    @property
    def temp_table_reflection(self) -> compound:
        return exclusions.open()

    @property
    def temp_table_names(self) -> compound:
        return exclusions.open()

    @property
    def temp_table_reflect_indexes(self) -> compound:
        return exclusions.open()

    @property
    def has_temp_table(self) -> compound:
        return exclusions.open()

    @property
    def temporary_views(self) -> compound:
        return exclusions.open()

    @property
    def table_ddl_if_exists(self) -> compound:
        return exclusions.open()

    @property
    def index_ddl_if_exists(self) -> compound:
        return exclusions.open()

    @property
    def create_table_as(self) -> compound:
        return exclusions.open()

    @property
    def create_temp_table_as(self) -> compound:
        return exclusions.open()

    @property
    def indexes_with_expressions(self) -> compound:
        return exclusions.open()

    @property
    def computed_columns(self) -> compound:
        return exclusions.open()

    @property
    def computed_columns_stored(self) -> compound:
        return exclusions.open()

    @property
    def computed_columns_virtual(self) -> compound:
        return exclusions.open()

    @property
    def computed_columns_reflect_persisted(self) -> compound:
        return exclusions.open()

    @property
    def server_defaults(self) -> compound:
        return exclusions.open()

    @property
    def expression_server_defaults(self) -> compound:
        return exclusions.open()

    @property
    def implicitly_named_constraints(self) -> compound:
        return exclusions.closed()  # SQLite keeps unnamed constraints unnamed

    # ---------------------------------------------------------------------------------------------
    # reflection
    # ---------------------------------------------------------------------------------------------
    @property
    def unique_constraint_reflection(self) -> compound:
        return exclusions.open()  # SQLite's dialect implements get_unique_constraints

    @property
    def check_constraint_reflection(self) -> compound:
        return exclusions.open()

    @property
    def inline_check_constraint_reflection(self) -> compound:
        return exclusions.open()

    @property
    def foreign_key_constraint_name_reflection(self) -> compound:
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_ondelete(self) -> compound:
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_restrict(self) -> compound:
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_noaction(self) -> compound:
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_onupdate(self) -> compound:
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_onupdate_restrict(self) -> compound:
        return exclusions.open()

    @property
    def reflect_table_options(self) -> compound:
        return exclusions.open()  # SQLite's dialect reflects WITHOUT ROWID / STRICT

    @property
    def reflects_pk_names(self) -> compound:
        return exclusions.open()

    @property
    def fk_names(self) -> compound:
        return exclusions.open()

    @property
    def fk_ondelete_is_reflected(self) -> compound:
        return exclusions.open()

    @property
    def fk_onupdate_is_reflected(self) -> compound:
        return exclusions.open()

    @property
    def fk_deferrable(self) -> compound:
        return exclusions.open()

    @property
    def fk_deferrable_is_reflected(self) -> compound:
        return exclusions.open()

    @property
    def fk_initially(self) -> compound:
        return exclusions.closed()  # SQLite's dialect does not reflect INITIALLY DEFERRED / IMMEDIATE

    @property
    def column_collation_reflection(self) -> compound:
        return exclusions.closed()  # SQLite's dialect does not reflect a column's COLLATE

    @property
    def reflect_indexes_with_expressions(self) -> compound:
        return exclusions.closed()  # SQLite's dialect skips expression-based indexes in reflection

    # ---------------------------------------------------------------------------------------------
    # SQL
    # ---------------------------------------------------------------------------------------------
    @property
    def ctes(self) -> compound:
        return exclusions.open()

    @property
    def ctes_with_update_delete(self) -> compound:
        return exclusions.open()

    @property
    def ctes_with_values(self) -> compound:
        return exclusions.open()

    @property
    def window_functions(self) -> compound:
        return exclusions.open()

    @property
    def window_range(self) -> compound:
        return exclusions.open()

    @property
    def window_range_numeric(self) -> compound:
        return exclusions.open()

    @property
    def window_range_non_numeric(self) -> compound:
        return exclusions.closed()  # SQLite: a RANGE frame's offset must be a number, not an interval

    @property
    def parens_in_union_contained_select_w_limit_offset(self) -> compound:
        return exclusions.closed()  # SQLite: no parenthesised SELECT inside UNION ("near '(': syntax error")

    @property
    def parens_in_union_contained_select_wo_limit_offset(self) -> compound:
        return exclusions.closed()  # the same SQLite syntax limit

    @property
    def intersect(self) -> compound:
        return exclusions.open()

    @property
    def except_(self) -> compound:
        return exclusions.open()

    @property
    def tuple_in(self) -> compound:
        return exclusions.open()

    @property
    def tuple_in_w_empty(self) -> compound:
        return exclusions.open()

    @property
    def nullsordering(self) -> compound:
        return exclusions.open()

    @property
    def update_from(self) -> compound:
        return exclusions.open()  # UPDATE ... FROM, SQLite 3.33+

    @property
    def mod_operator_as_percent_sign(self) -> compound:
        return exclusions.open()

    @property
    def regexp_match(self) -> compound:
        return exclusions.open()  # pysqlite's dialect registers a Python REGEXP function on connect

    @property
    def supports_bitwise_or(self) -> compound:
        return exclusions.open()

    @property
    def supports_bitwise_and(self) -> compound:
        return exclusions.open()

    @property
    def supports_bitwise_not(self) -> compound:
        return exclusions.open()

    @property
    def supports_bitwise_shift(self) -> compound:
        return exclusions.open()

    @property
    def supports_bitwise_xor(self) -> compound:
        return exclusions.open()  # SQLite has no XOR; its dialect renders (a | b) - (a & b)

    @property
    def fetch_first(self) -> compound:
        return exclusions.closed()  # SQLite has LIMIT / OFFSET, not FETCH FIRST

    @property
    def create_or_replace_view(self) -> compound:
        return exclusions.closed()  # SQLite has no CREATE OR REPLACE VIEW

    @property
    def order_by_collation(self) -> compound:
        return exclusions.open()

    def get_order_by_collation(self, config: Any) -> str:
        return "NOCASE"  # one of SQLite's built-in collations

    @property
    def json_type(self) -> compound:
        return exclusions.open()

    @property
    def json_array_indexes(self) -> compound:
        return exclusions.open()

    @property
    def legacy_unconditional_json_extract(self) -> compound:
        return exclusions.open()  # SQLite's JSON_EXTRACT

    @property
    def dbapi_lastrowid(self) -> compound:
        return exclusions.open()

    # ---------------------------------------------------------------------------------------------
    # types
    # ---------------------------------------------------------------------------------------------
    @property
    def datetime_historic(self) -> compound:
        return exclusions.open()  # dates are stored as ISO strings: any year

    @property
    def date_historic(self) -> compound:
        return exclusions.open()

    @property
    def timestamp_microseconds(self) -> compound:
        return exclusions.open()

    @property
    def infinity_floats(self) -> compound:
        return exclusions.open()

    @property
    def unicode_ddl(self) -> compound:
        return exclusions.open()

    # ---------------------------------------------------------------------------------------------
    # Alembic
    # ---------------------------------------------------------------------------------------------
    @property
    def alter_column(self) -> compound:
        return exclusions.closed()  # SQLite has no ALTER COLUMN (Alembic alters through batch mode)

    # ---------------------------------------------------------------------------------------------
    # sqlite+tinycortex, for the tests in TEST_EXCLUSIONS (no requirement of the suites gates them)
    # ---------------------------------------------------------------------------------------------
    @property
    def default_schema_holds_only_test_tables(self) -> compound:
        """Closed on sqlite+tinycortex: the default schema of every file holds the chunk DB's tables.

        The dialect gives each file it opens the chunk DB schema (the
        ``mem_tree_*`` tables, ``mcp_writes``, ``alembic_version``), and they
        stay; tests that compare everything reflected from the default schema
        with the tables they created find those too.  The same tests run
        against ``test_schema``, which holds only the tests' tables.
        """
        return tinycortex(
            "the default schema also holds the chunk DB's tables (mem_tree_*, mcp_writes, "
            "alembic_version), which every file the dialect opens is given and keeps"
        )

    @property
    def foreign_keys_unenforced(self) -> compound:
        """Closed on sqlite+tinycortex, which opens every file with ``PRAGMA foreign_keys = ON``.

        For tests that declare foreign keys SQLite would refuse to enforce: a
        reference to a column that is neither a primary key nor unique is a
        "foreign key mismatch" error on every write to the table once
        foreign keys are enforced (stock SQLite leaves them OFF).
        """
        return tinycortex(
            "foreign keys are ON; the test references columns that are neither primary keys nor "
            "unique, which SQLite then refuses as 'foreign key mismatch'"
        )

    @property
    def reset_on_return_through_pool(self) -> compound:
        """Closed on sqlite+tinycortex: its pool leaves the reset on return to the shared connection.

        ``TinyCortexPool`` runs with ``reset_on_return=None``: the file's
        handle rolls back any open transaction at checkin (docs/concurrency.md,
        "At checkin any open transaction is rolled back") on the ``sqlite3``
        connection itself, so a mock of the pool-proxied connection's
        ``rollback()`` never sees a call.  What that reset is for, no open
        transaction after checkin, is checked by
        ``AutocommitIsolationTest.test_autocommit_block_leaves_no_transaction``
        (test_sqlalchemy_suite.py), which runs the same variations.
        """
        return tinycortex(
            "the test mocks the pool-proxied connection's rollback() to see SQLAlchemy's "
            "reset-on-return; this pool leaves the reset to the shared connection's checkin "
            "(reset_on_return=None), which rolls back the sqlite3 connection itself"
        )


@dataclass(frozen=True)
class ExcludedTest:
    """A test of the suites that runs only where ``requirement`` (a property above) is open.

    For tests that no requirement of the suites gates: ``cls`` is the suite's
    class name, ``test`` one of its tests (``None``: all of them), ``params``
    which of its parametrisations are excluded (empty: all): a value, or a
    predicate on the value.
    """

    cls: str
    test: str | None
    requirement: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, cls: str, test: str, params: Mapping[str, Any]) -> bool:
        return (
            cls == self.cls
            and (self.test is None or test == self.test)
            and all(_param_matches(params, name, wanted) for name, wanted in self.params.items())
        )


def _param_matches(params: Mapping[str, Any], name: str, wanted: Any) -> bool:
    if name not in params:
        return False
    return bool(wanted(params[name])) if callable(wanted) else bool(params[name] == wanted)


def _includes_tables(kind: ObjectKind) -> bool:
    return ObjectKind.TABLE in kind


def _includes_default_schema_objects(scope: ObjectScope) -> bool:
    return scope in (ObjectScope.DEFAULT, ObjectScope.ANY)


#: Applied at collection by the plugin (``dialect_suite_plugin.pytest_collection_modifyitems``).
TEST_EXCLUSIONS = (
    # every table of the default schema, compared with the tables the class created
    ExcludedTest(
        "ComponentReflectionTest",
        "test_get_table_names",
        "default_schema_holds_only_test_tables",
        {"use_schema": False},
    ),
    *(
        ExcludedTest(
            "ComponentReflectionTest",
            test,
            "default_schema_holds_only_test_tables",
            # all tables of the default schema: not views, not only temporary ones, not by name
            {
                "schema": None,
                "use_filter": False,
                "kind": _includes_tables,
                "scope": _includes_default_schema_objects,
            },
        )
        for test in (
            "test_get_multi_columns",
            "test_get_multi_pk_constraint",
            "test_get_multi_foreign_keys",
            "test_get_multi_indexes",
            "test_get_multi_unique_constraints",
            "test_get_multi_check_constraints",
            "test_multi_get_table_options_tables",
        )
    ),
    # its SQLite variant declares references to non-unique columns
    ExcludedTest("UnicodeSchemaTest", None, "foreign_keys_unenforced"),
    # asserts SQLAlchemy's reset-on-return through a mock of the pool-proxied connection
    ExcludedTest("AutocommitIsolationTest", "test_autocommit_block", "reset_on_return_through_pool"),
)
