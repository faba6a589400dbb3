"""Bucket sizes change by deltas in SQL, so that concurrent writers never lose each other's updates.

files-rest changes ``Bucket.size`` in Python (``bucket.size -= file.size``
in ``ObjectVersion.delete``, ``+=`` when a version gets its file) from a
value read earlier in the transaction, and the flush writes the result
back as a constant. Two transactions that read the same size each write
their own result, and one update is lost: on PostgreSQL (READ COMMITTED)
a records-resources delete racing an upload start on the same draft leaves
a bucket size that is neither. Our service takes the bucket's row lock
before it reads (the ordering rule), but files-rest's and
records-resources' own code paths do not, and we cannot change them.

:func:`install` turns every such change, whoever makes it, into
``size = size + delta`` at flush time: the database applies the delta to
the row's current value, under its row lock. The attribute is expired by
the flush and read afresh on next use.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from invenio_files_rest.models import Bucket
from sqlalchemy.orm import Session


def _sizes_as_deltas(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in session.dirty:
        if not isinstance(obj, Bucket):
            continue
        history = sa.inspect(obj).attrs.size.history
        if not history.added or not history.deleted:
            continue  # unchanged, or set without the old value ever being read: written as it is
        new, old = history.added[0], history.deleted[0]
        if isinstance(new, int) and isinstance(old, int) and new != old:
            obj.size = Bucket.size + (new - old)


def install() -> None:
    """Make every session's flush write bucket size changes as deltas (idempotent)."""
    if not sa.event.contains(Session, "before_flush", _sizes_as_deltas):
        sa.event.listen(Session, "before_flush", _sizes_as_deltas)
