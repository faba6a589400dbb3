"""Who commits, and what S3 must undo when a transaction does not.

Every commit of oarepo-s3 happens in :func:`atomic`; nothing else in the
package calls ``db.session.commit()``. S3 and the database cannot share a
transaction, so S3 side effects are tied to the database transaction that
records them:

- :func:`on_rollback` registers an S3 call that undoes one (abort the
  multipart upload just created, delete the empty object just written). It
  runs if the transaction, or a savepoint around the registration, rolls
  back; it is forgotten when the transaction commits. This also covers the
  doors whose transaction belongs to the caller (``record.files[key] = mu``,
  InvenioRDM's transfer): their rollback aborts the S3 upload too.
- :func:`after_commit` registers an S3 call that may only happen once the
  books no longer point at the data (delete the object of a deleted file).

A crash between the two sides leaves an S3 upload or object the database
does not know; the orphan sweep (:mod:`oarepo_s3.cleanup`) removes those.
Compensations never raise: a failure is logged, and the sweep is the net.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from invenio_db import db
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

_PENDING = "oarepo_s3.pending_actions"
_DEPTH = "oarepo_s3.atomic_depth"
_CALLERS = "oarepo_s3.in_callers_transaction"


@dataclass(frozen=True, slots=True)
class _Action:
    transaction: SessionTransaction
    """The innermost transaction (or savepoint) open when the action was registered."""
    what: str
    run: Callable[[], object]
    on_commit: bool
    """True: run after the outermost commit; False: run if ``transaction`` rolls back."""


def _pending(session: Session) -> list[_Action]:
    actions: list[_Action] = session.info.setdefault(_PENDING, [])
    return actions


def _register(action: Callable[[], object], what: str, on_commit: bool) -> None:
    session = db.session()
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:  # autobegin: open the transaction the action belongs to
        transaction = session.begin()
    _pending(session).append(_Action(transaction, what, action, on_commit))


def on_rollback(action: Callable[[], object], what: str) -> None:
    """Run ``action`` if the current transaction (or savepoint) rolls back.

    :param what: names the S3 side effect in the log if undoing it fails.
    """
    _register(action, what, on_commit=False)


def after_commit(action: Callable[[], object], what: str) -> None:
    """Run ``action`` once the current transaction has committed (never if it rolls back)."""
    _register(action, what, on_commit=True)


def _inside(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


def _run(action: _Action) -> None:
    try:
        action.run()
    except Exception:
        log.exception("could not %s; the orphan sweep will clean up after it", action.what)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    """Undo the S3 side effects of the transaction (or savepoint) that rolled back."""
    actions = session.info.get(_PENDING)
    if not actions:
        return
    undone = [a for a in actions if _inside(a.transaction, previous_transaction)]
    if not undone:
        return
    session.info[_PENDING] = [a for a in actions if not _inside(a.transaction, previous_transaction)]
    for action in reversed(undone):
        if not action.on_commit:
            _run(action)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Once the outermost transaction committed: forget the undo actions, run the post-commit ones."""
    if session.in_nested_transaction() or not session.info.get(_PENDING):
        return
    actions = session.info.pop(_PENDING)
    for action in actions:
        if action.on_commit:
            _run(action)


@contextmanager
def in_callers_transaction() -> Iterator[None]:
    """Run service functions as steps of the caller's transaction (records-resources' unit of work).

    Their :func:`atomic` blocks neither commit nor roll back: the caller
    does, and a rollback still undoes their S3 side effects (:func:`on_rollback`).
    """
    session = db.session()
    depth, callers = session.info.get(_DEPTH, 0), session.info.get(_CALLERS, 0)
    session.info[_DEPTH], session.info[_CALLERS] = depth + 1, callers + 1
    try:
        yield
    finally:
        session.info[_DEPTH], session.info[_CALLERS] = depth, callers


def in_callers_hands() -> bool:
    """True inside :func:`in_callers_transaction`: the caller commits, maybe much later, maybe not at all."""
    return bool(db.session().info.get(_CALLERS, 0))


def owns_transaction() -> bool:
    """True inside the outermost :func:`atomic` of a transaction the service began itself.

    Only such a transaction may be started afresh (SQLite's stale-snapshot
    retry in :func:`oarepo_s3.service.locks.sqlite_write_lock`).
    """
    return bool(db.session().info.get(_DEPTH, 0) <= 1)


@contextmanager
def atomic() -> Iterator[None]:
    """Run the block in one transaction and commit it; roll back (and undo S3) on any exception.

    Nested blocks join the outermost one: only it commits, so a service
    function that commits on its own can also be one step of a larger
    operation (publishing a draft, say).
    """
    session = db.session()
    depth = session.info.get(_DEPTH, 0)
    session.info[_DEPTH] = depth + 1
    try:
        yield
        if depth == 0:
            session.commit()
    except BaseException:
        if depth == 0:
            session.rollback()
        raise
    finally:
        session.info[_DEPTH] = depth
