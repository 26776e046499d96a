"""The connection core: one handle per database file, its breaker, and the process-wide registry.

:mod:`.handle` is the shared connection of one file and who may use it now;
:mod:`.breaker` its circuit breaker; :mod:`.registry` is the only module that
holds process-wide state (the handles, the directory-lock descriptors, the
Alembic lock) and the fork and exit hooks.
"""
