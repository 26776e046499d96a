"""A real web app: FastAPI with sync endpoints served by uvicorn, Session per request two ways.

The app of ``tests/frameworks/fastapi_app.py`` (POST writes through the default
engine, GETs read through a ``read_only=True`` engine), under the same bounded
load of 90 % GETs from a concurrent client: once with the documented
``Depends`` + ``yield`` Session dependency (FastAPI returns the connection from
another worker thread than the endpoint's) and once opening the Session in the
endpoint.  The runs alternate, and the best of each is kept.
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.fastapi_app import measure

from .core import Row, Settings, new_workspace

SECTION = "Web app (FastAPI, uvicorn, 16 requests in flight)"
CONCURRENCY = 16


def run(root: Path, settings: Settings) -> list[Row]:
    requests = 300 if settings.quick else 2000
    repeats = 1 if settings.quick else 3
    best: dict[str, float] = {"fastapi_depends": 0.0, "fastapi_endpoint": 0.0}
    for n in range(repeats):
        for key, depends in (("fastapi_depends", True), ("fastapi_endpoint", False)):
            workspace = new_workspace(root, f"web-{key}-{n}")
            rps = measure(workspace, depends=depends, requests=requests, concurrency=CONCURRENCY)
            best[key] = max(best[key], rps)
    labels = {
        "fastapi_endpoint": "Session opened in the endpoint: time per request",
        "fastapi_depends": "Session through Depends + yield: time per request",
    }
    note = f"{requests} requests, 90 % GET; best of {repeats}"
    return [
        Row(key, SECTION, label, 1e6 / best[key], "fastapi_endpoint", f"{best[key]:.0f} req/s; {note}")
        for key, label in labels.items()
    ]
