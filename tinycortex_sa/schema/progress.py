"""Following an upgrade as it runs: which revision starts, which is done, what the data migrations did.

A listener passed to :func:`reporting` hears :class:`UpgradeEvent`\\ s: the
start of each revision, its end (Alembic's structured ``on_version_apply``
hook, which ``migrations/env.py`` passes to ``context.configure``) and the
data migrations' own reports (:func:`report`).  No log record is parsed and
no logger is changed.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .version import REVISIONS

if TYPE_CHECKING:
    from alembic.config import Config

#: ``config.attributes`` key holding the progress listener of a run.
PROGRESS_KEY = "tinycortex_progress"
#: ``config.attributes`` key holding the ``on_version_apply`` callback ``env.py`` passes on.
ON_VERSION_APPLY_KEY = "on_version_apply"


@dataclass(frozen=True)
class UpgradeEvent:
    """What a progress callback hears: a revision starting or done, or a data migration's report."""

    kind: Literal["start", "done", "report"]
    revision: str
    message: str = ""

    @property
    def number(self) -> int:
        """The revision's place in the history, from 1 (0 if unknown)."""
        return REVISIONS.index(self.revision) + 1 if self.revision in REVISIONS else 0


Listener = Callable[[UpgradeEvent], None]
_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar(
    "tinycortex_sa_progress", default=None
)


@contextlib.contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """Within this block (this thread or task), upgrades call ``listener`` as they advance."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def current_listener() -> Listener | None:
    """The listener of the enclosing :func:`reporting` block, if any (to chain another onto it)."""
    return _listener.get()


_running: contextvars.ContextVar[str] = contextvars.ContextVar("tinycortex_sa_running", default="")


def report(message: str, *args: object) -> None:
    """A data migration says what it did: logged at INFO, and told to the run's progress listener."""
    text = message % args if args else message
    logging.getLogger("tinycortex_sa.migrations").info("%s", text)
    from alembic import context

    listener = context.config.attributes.get(PROGRESS_KEY)
    if callable(listener):
        listener(UpgradeEvent("report", _running.get(), text))


def version_applied_hook(listener: Listener, pending: list[str]) -> Callable[..., None]:
    """An ``on_version_apply`` callback for ``context.configure`` that tells ``listener`` each step."""

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        for revision in getattr(step, "up_revision_ids", ()) or (step.up_revision_id,):
            listener(UpgradeEvent("done", revision))
            if revision in pending:
                pending.remove(revision)
        if pending:
            _running.set(pending[0])
            listener(UpgradeEvent("start", pending[0]))

    return on_version_apply


def pending_revisions(current: tuple[str, ...] | None) -> list[str]:
    """The revisions an upgrade to head runs, in order, from ``current`` (one linear history)."""
    if not current:
        return list(REVISIONS)
    return list(REVISIONS[REVISIONS.index(current[0]) + 1 :]) if current[0] in REVISIONS else []


def attach(config: Config, current: tuple[str, ...] | None) -> None:
    """Make the upgrade about to run on ``config`` tell this context's listener, if there is one."""
    listener = _listener.get()
    pending = pending_revisions(current)
    if listener is None or not pending:
        return
    config.attributes[PROGRESS_KEY] = listener
    config.attributes[ON_VERSION_APPLY_KEY] = version_applied_hook(listener, pending)
    _running.set(pending[0])
    listener(UpgradeEvent("start", pending[0]))
