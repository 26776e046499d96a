"""The chunk DB's schema: typed ORM models, column types, the schema version and the automatic upgrade.

:mod:`.models` (re-exported as :mod:`tinycortex_sa.models`) and
:mod:`.tree_models` are the fifteen tables; :mod:`.base` the declarative base
and shared column helpers; :mod:`.types` the vector and JSON column types;
:mod:`.version` the revisions this version knows, import-free for the open
fast path; :mod:`.upgrade` runs the packaged Alembic revisions on a connection
the connection core holds; :mod:`.purge` moves the retired summary folders of
revision 0005 aside and removes them once its transaction has committed (or
moves them back).
"""
