"""Griffe extension for the API reference: render Sphinx roles as inline code.

The docstrings cite other objects the Sphinx way (``:class:`~tinycortex_sa.errors.OpenError```),
which Markdown would show literally; this turns each role into a code span
(``OpenError``; the full dotted name without ``~``).  Loaded by
mkdocstrings from docs/mkdocs.yml; it is not part of the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring as a Markdown code span."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
