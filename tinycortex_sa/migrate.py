"""Schema initialisation hook (filled in by the schema work)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .options import Options


def initialise(conn: sqlite3.Connection, db_path: Path, options: Options) -> None:
    """Bring the schema of a newly opened connection up to date."""
