"""Print pip constraints pinning each runtime dependency to the floor pyproject.toml declares.

`make test-lowest` installs with these constraints, so the tests run against
the lowest SQLAlchemy, Alembic and tenacity the package admits and the
declared ranges stay true.  A dependency without a ``>=`` floor is an error.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def floors(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, specifiers = match.groups()
        lowest = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
        if len(lowest) != 1:
            raise SystemExit(f"{requirement!r} declares no single '>=' floor; give it one")
        pins.append(f"{name}=={lowest[0]}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(floors(root / "pyproject.toml")))
