"""Requirements for the dialect suites: what SQLite offers, and what sqlite+tinycortex does not."""

from __future__ import annotations

from alembic.testing.requirements import SuiteRequirements as AlembicSuiteRequirements
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(AlembicSuiteRequirements, SuiteRequirements):
    pass
