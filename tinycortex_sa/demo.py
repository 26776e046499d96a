"""``make demo``: open a workspace through two engines and show what they share.

Run as ``python -m tinycortex_sa.demo [WORKSPACE]`` (default ``demo-workspace``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

import tinycortex_sa
from tinycortex_sa import registry


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    workspace = Path(args[0] if args else "demo-workspace").resolve()
    db_path = tinycortex_sa.db_path_for(workspace)

    by_function = tinycortex_sa.create_engine(workspace)
    by_url = sa.create_engine(f"sqlite+tinycortex:///{db_path}")
    with by_function.connect() as conn:
        first: object = conn.connection.dbapi_connection
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("busy_timeout", "foreign_keys", "synchronous", "journal_mode")
        }
    with by_url.connect() as conn:
        second = conn.connection.dbapi_connection
    via_function: object = tinycortex_sa.with_connection(workspace, lambda c: c)

    handle = registry.existing_handle(db_path)
    print(f"workspace      {workspace}")
    print(f"database       {db_path}")
    print(f"one connection {first is second is via_function} (opened {handle.opens if handle else 0} time)")
    for name, value in pragmas.items():
        print(f"pragma         {name} = {value}")
    state = tinycortex_sa.breaker_state(workspace)
    print(f"breaker        {state.state}, {state.failures} failures")
    by_function.dispose()
    by_url.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
