"""Options: names, defaults, conversion and validation.

Options arrive as keyword arguments (native Python values) or as URL query
parameters (strings).  Both pass through the same converters, so
``busy_timeout=5000`` and ``?busy_timeout=5000`` mean the same thing, and an
unknown name or an unusable value raises :class:`OptionError` naming it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import OptionError

OnCorrupt = Literal["quarantine", "raise"]


@dataclass(frozen=True)
class Options:
    """The validated options of one database file (or one engine)."""

    busy_timeout: int = 15000
    """Milliseconds SQLite waits for another process's lock."""
    breaker_threshold: int = 3
    """Consecutive open/initialise failures that trip the circuit breaker."""
    breaker_cooldown: float = 30.0
    """Seconds the breaker refuses callers after the last failure."""
    checkout_timeout: float = 30.0
    """Seconds a thread waits for the shared connection held by another."""
    on_corrupt: OnCorrupt = "quarantine"
    """``quarantine``: rename a corrupt file aside and rebuild; ``raise``: refuse."""
    auto_migrate: bool = True
    """Bring the schema to Alembic head on the first open in a process."""
    content_root: Path | None = None
    """Root of content files; ``<workspace>/memory_tree/content`` when None."""
    embedding_model: str = "nomic-embed-text"
    """Model half of the embedding signature used by data migration 1."""
    embedding_dim: int = 768
    """Vector dimension used by data migration 1."""
    read_only: bool = False
    """Transactions begin DEFERRED and ``PRAGMA query_only`` refuses writes (never takes the write lock)."""
    trace_checkouts: bool = False
    """Record where each checkout was made, so a checkout timeout can name the holder's file and line."""
    create: bool = True
    """Create the workspace and the database if missing (the Rust core's behaviour); False: refuse."""


DEFAULTS = Options()

#: Options that describe the engine's caller rather than the shared file.
ENGINE_SCOPED = frozenset({"checkout_timeout", "read_only", "trace_checkouts", "create"})
#: Options fixed by the first caller for a file (see docs/options.md).
FILE_SCOPED = frozenset(f.name for f in dataclasses.fields(Options)) - ENGINE_SCOPED

#: SQLite keeps busy_timeout in a C int; larger counts are refused here, not at the first open.
INT32_MAX = 2**31 - 1
#: A vector of this many float32 values already takes 64 MiB.
MAX_EMBEDDING_DIM = 2**24

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _int(name: str, value: object, minimum: int, maximum: int = INT32_MAX) -> int:
    if isinstance(value, bool):
        raise OptionError(f"option {name!r} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise OptionError(f"option {name!r} must be an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise OptionError(f"option {name!r} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise OptionError(f"option {name!r} must be from {minimum} to {maximum}, got {value!r}")
    return value


def _float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise OptionError(f"option {name!r} must be a number of seconds, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionError(f"option {name!r} must be a number of seconds, got {value!r}") from None
    if not isinstance(value, (int, float)) or not 0 <= value <= threading.TIMEOUT_MAX:
        raise OptionError(
            f"option {name!r} must be a finite number of seconds from 0 to {threading.TIMEOUT_MAX:g}, "
            f"got {value!r}"
        )
    return float(value)


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OptionError(f"option {name!r} must be true or false, got {value!r}")


def _on_corrupt(name: str, value: object) -> OnCorrupt:
    if value == "quarantine":
        return "quarantine"
    if value == "raise":
        return "raise"
    raise OptionError(f"option {name!r} must be 'quarantine' or 'raise', got {value!r}")


def _path(name: str, value: object) -> Path | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)) and str(value):
        return Path(value)
    raise OptionError(f"option {name!r} must be a path, got {value!r}")


def _model(name: str, value: object) -> str:
    if isinstance(value, str) and value.strip() and "@" not in value:
        return value.strip()
    raise OptionError(f"option {name!r} must be a non-empty model name without '@', got {value!r}")


_CONVERTERS: dict[str, Callable[[str, object], Any]] = {
    "busy_timeout": lambda n, v: _int(n, v, 0),
    "breaker_threshold": lambda n, v: _int(n, v, 1),
    "breaker_cooldown": _float,
    "checkout_timeout": _float,
    "on_corrupt": _on_corrupt,
    "auto_migrate": _bool,
    "content_root": _path,
    "embedding_model": _model,
    "embedding_dim": lambda n, v: _int(n, v, 1, MAX_EMBEDDING_DIM),
    "read_only": _bool,
    "trace_checkouts": _bool,
    "create": _bool,
}


#: Every option name the library knows.
NAMES = frozenset(_CONVERTERS)


def parse(raw: Mapping[str, object]) -> dict[str, Any]:
    """Validate and convert the options a caller gave explicitly.

    Returns only the names that were given, converted to their typed values.
    """
    unknown = sorted(set(raw) - set(_CONVERTERS))
    if unknown:
        known = ", ".join(sorted(_CONVERTERS))
        raise OptionError(f"unknown option(s) {', '.join(map(repr, unknown))}; known options: {known}")
    return {name: _CONVERTERS[name](name, value) for name, value in raw.items()}


def resolve(explicit: Mapping[str, Any], base: Options = DEFAULTS) -> Options:
    """Return ``base`` with the explicitly given (already parsed) options applied."""
    return dataclasses.replace(base, **explicit) if explicit else base
