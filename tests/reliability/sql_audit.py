"""Security item 9: no SQL is built from caller-supplied strings.

Every call that runs SQL (``execute``, ``executemany``, ``executescript``,
``exec_driver_sql``, ``text``) in the package and its migrations is found with
the ``ast`` module.  A literal string is fine.  Anything else is traced back
within its module: a name must be a module-level constant (a string, or a
tuple/list/dict of constants), a loop variable over such a constant (or over
the models' own table names), or a site reviewed below with the reason it is
safe.  A new site that is none of these fails the audit until it is reviewed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQL_CALLS = frozenset({"execute", "executemany", "executescript", "exec_driver_sql", "text"})

#: (file, expression) -> why it is safe.  Expressions are ast.unparse() of the interpolated part.
REVIEWED: dict[tuple[str, str], str] = {
    ("tinycortex_sa/sqlite/pragmas.py", "ms"): "int(options.busy_timeout): an int converted by options.py",
    (
        "tinycortex_sa/sqlite/pragmas.py",
        "sql",
    ): "_scalar(conn, sql): every caller passes a literal or the ms f-string",
    ("tinycortex_sa/sqlite/pragmas.py", "name"): "read(): loops over a literal tuple of four pragma names",
    (
        "tinycortex_sa/engine/dialect.py",
        "statement",
    ): "do_execute(): SQLAlchemy's compiled statement, parameters bound",
    (
        "tinycortex_sa/schema/base.py",
        "sql",
    ): "default(sql): server defaults spelled in the models, never caller text",
    ("tinycortex_sa/cli/inspect.py", "name"): "loops over FILE_PRAGMAS, a fixed tuple",
    ("tinycortex_sa/cli/inspect.py", "table"): "loops over model_tables(): the models' own table names",
    ("tinycortex_sa/cli/doctor.py", "INTEGRITY_LIMIT"): "a module constant int",
    (
        "migrations/versions/0002_additive_columns.py",
        "table",
    ): "has_column(): called with names from STEPS (fixed)",
    ("migrations/versions/0002_additive_columns.py", "step"): "loops over STEPS, a fixed tuple of DDL",
    (
        "tinycortex_sa/engine/dialect.py",
        "_BEGIN_SQL[mode]",
    ): "a dict built from BEGIN_MODES (fixed); every mode passes _begin_mode() or is a handle constant",
    (
        "tinycortex_sa/engine/aio.py",
        "statement",
    ): "the async cursor's execute(): SQLAlchemy's compiled statement, parameters bound",
    (
        "tinycortex_sa/engine/aio.py",
        "begin",
    ): "the pending BEGIN: only ever a value of dialect._BEGIN_SQL (do_begin), else None",
    **{
        ("tinycortex_sa/search.py", f"self.table.{name}"): "a _Table property: f-strings of the two fixed "
        "table and id-column names in _TABLES and a module constant; the model and rowid are bound"
        for name in ("structure_sql", "content_sql", "count_sql", "rows_sql")
    },
    (
        "migrations/versions/0001_base_schema.py",
        "for_postgresql(statement)",
    ): "DDL, a fixed tuple, with its type names renamed by a fixed mapping",
    ("tinycortex_sa/postgres/engine.py", "schema"): "check_schema_name(): [a-z_][a-z0-9_]{0,62}, quoted",
    (
        "tinycortex_sa/postgres/engine.py",
        "extra",
    ): "pgvector's schema as pg_extension names it, double-quoted, or empty",
    **{
        ("tinycortex_sa/postgres/mirror.py", expression): "built from the models' metadata (table and "
        "column names of Base.metadata, fixed) and placeholders; every value is bound"
        for expression in (
            "spec.name",
            "columns",
            "unnest",
            "', '.join(columns)",
            "name",
            "sql",
            "upsert",
            "spec.select + f' WHERE rowid IN ({marks})'",
            "spec.select + ' WHERE rowid >= ? AND rowid < ? ORDER BY rowid'",
        )
    },
    (
        "tinycortex_sa/postgres/vectors.py",
        "ddl",
    ): "index_ddl(): fixed table names, int dimensions, the model signature as an escaped literal",
    (
        "tinycortex_sa/postgres/vectors.py",
        "statement",
    ): "a SQLAlchemy select; the query vector is bound, the signature rendered by literal_execute",
}


@dataclass
class Site:
    file: str
    line: int
    call: str
    expression: str
    verdict: str
    """'literal', 'constant', 'loop over constant', 'reviewed: ...' or 'UNREVIEWED'."""


def _module_constants(tree: ast.Module) -> set[str]:
    """Names bound at module level to constants, containers of constants, or f-strings of constants."""
    consts: set[str] = set()

    def constant(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(constant(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(k is None or constant(k) for k in node.keys) and all(constant(v) for v in node.values)
        if isinstance(node, ast.JoinedStr):
            return all(
                constant(v.value) if isinstance(v, ast.FormattedValue) else constant(v) for v in node.values
            )
        if isinstance(node, ast.Name):
            return node.id in consts
        if isinstance(node, ast.BinOp):
            return constant(node.left) and constant(node.right)
        if isinstance(node, ast.Call) and not node.keywords:
            # "', '.join(CONST)", len(CONST), sa.text("literal"): built only from constants
            func = node.func
            pure = (isinstance(func, ast.Name) and func.id in {"len", "str", "tuple", "text"}) or (
                isinstance(func, ast.Attribute)
                and (func.attr == "text" or (func.attr in {"join", "format"} and constant(func.value)))
            )
            return pure and all(constant(a) for a in node.args)
        return False

    for stmt in tree.body:
        targets: list[ast.expr] = []
        value: ast.AST | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        if value is not None and constant(value):
            consts |= {t.id for t in targets if isinstance(t, ast.Name)}
    return consts


def _loop_names(tree: ast.Module, consts: set[str]) -> set[str]:
    """Loop / comprehension variables over a module constant or a literal (possibly reversed()),
    and names unpacked from them (``table, column, kind = step``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            pairs.append((node.target, node.iter))
        for target, it in pairs:
            if (
                isinstance(it, ast.Call)
                and isinstance(it.func, ast.Name)
                and it.func.id == "reversed"
                and it.args
            ):
                it = it.args[0]
            literal = isinstance(it, (ast.Tuple, ast.List)) and all(
                isinstance(e, ast.Constant) for e in it.elts
            )
            if literal or (isinstance(it, ast.Name) and it.id in consts):
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    changed = True
    while changed:  # unpacking assignments from a trusted name
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in names:
                new = {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)} - names
                if new:
                    names |= new
                    changed = True
    return names


def _imported_constants(tree: ast.Module, package_consts: dict[str, set[str]]) -> set[str]:
    """Names imported (``from .module import NAME``) from a sibling module that binds them to constants."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in package_consts:
            names |= {a.asname or a.name for a in node.names if a.name in package_consts[node.module]}
    return names


def audit(root: Path = ROOT) -> list[Site]:
    files = sorted(
        [
            *root.joinpath("tinycortex_sa").rglob("*.py"),
            *root.joinpath("migrations").rglob("*.py"),
        ]
    )
    sites: list[Site] = []
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}
    package_consts = {
        p.stem: _module_constants(t) for p, t in trees.items() if p.parent.name == "tinycortex_sa"
    }
    for path in files:
        rel = str(path.relative_to(root))
        tree = trees[path]
        consts = _module_constants(tree) | _imported_constants(tree, package_consts)
        loops = _loop_names(tree, consts)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if name not in SQL_CALLS:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                continue  # a literal
            if not isinstance(
                arg, (ast.JoinedStr, ast.Name, ast.Attribute, ast.Subscript, ast.BinOp, ast.IfExp)
            ):
                continue  # a SQLAlchemy construct (select(), insert(), ...): compiled with bound parameters
            parts: list[ast.expr]
            if isinstance(arg, ast.JoinedStr):
                parts = [v.value for v in arg.values if isinstance(v, ast.FormattedValue)]
            elif isinstance(arg, ast.IfExp):
                parts = [p for p in (arg.body, arg.orelse) if not (isinstance(p, ast.Constant))]
            else:
                parts = [arg]
            for part in parts:
                text = ast.unparse(part)
                if isinstance(part, ast.Name) and part.id in consts:
                    verdict = "constant"
                elif isinstance(part, ast.Name) and part.id in loops:
                    verdict = "loop over constant"
                elif (
                    isinstance(part, ast.Subscript)
                    and isinstance(part.value, ast.Name)
                    and part.value.id in consts
                ):
                    verdict = "constant table lookup"
                elif (rel, text) in REVIEWED:
                    verdict = "reviewed: " + REVIEWED[(rel, text)]
                else:
                    verdict = "UNREVIEWED"
                sites.append(Site(rel, node.lineno, name, text, verdict))
    return sites
