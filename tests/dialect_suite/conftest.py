"""Keep the main test run out of this folder.

The dialect suites run under SQLAlchemy's testing plugin, which takes over
pytest (its options, collection and fixtures); ``pytest.ini`` beside this file
loads it.  A run configured by any other file (the main suite, configured by
``pyproject.toml`` with ``testpaths = ["tests"]``) collects nothing here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_OWN_INI = Path(__file__).with_name("pytest.ini")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.inipath != _OWN_INI:
        return True
    return None
