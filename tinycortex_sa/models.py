"""The chunk DB's typed ORM models: ``from tinycortex_sa.models import Base, Chunk, …``.

The public import path; they are defined in :mod:`tinycortex_sa.schema.models`
and :mod:`tinycortex_sa.schema.tree_models`.  The column types for vectors and
``*_json`` columns are :mod:`tinycortex_sa.schema.types`.
"""

from __future__ import annotations

from .schema.models import *  # noqa: F403  (the models, by their documented names)
from .schema.models import __all__ as __all__
