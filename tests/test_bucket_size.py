"""Bucket sizes are written as deltas (oarepo_s3.bucket_size): two transactions never lose each other's change."""

from __future__ import annotations

import pytest
from invenio_db import db
from invenio_files_rest.models import Bucket
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session


def test_a_stale_size_does_not_overwrite_a_concurrent_change(location):
    bucket_id = Bucket.create(location).id
    db.session.commit()

    mine = db.session.get(Bucket, bucket_id)
    assert mine.size == 0  # read now, written later (files-rest's ObjectVersion.delete does this)

    with Session(db.engine) as other:  # another request, committed in between
        theirs = other.get(Bucket, bucket_id)
        theirs.size += 1000
        other.commit()

    mine.size -= 300
    if db.engine.dialect.name == "sqlite":
        # SQLite's snapshot isolation refuses a writer whose snapshot is stale: nothing can be lost there.
        with pytest.raises(OperationalError, match="database is locked"):
            db.session.commit()
        db.session.rollback()
        assert db.session.get(Bucket, bucket_id).size == 1000
        return
    db.session.commit()  # PostgreSQL (READ COMMITTED) writes; without the deltas it would write -300
    assert mine.size == 700  # read afresh: 0 + 1000 - 300

    with Session(db.engine) as fresh:
        assert fresh.get(Bucket, bucket_id).size == 700


def test_sizes_set_twice_in_one_transaction_add_up(location):
    bucket = Bucket.create(location)
    db.session.commit()
    bucket.size += 10
    db.session.flush()
    bucket.size += 5
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Bucket, bucket.id).size == 15
