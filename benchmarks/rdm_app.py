"""The InvenioRDM stand-in of the benchmarks: ``tests/rdm``'s app, seeded with one draft record.

invenio-records-resources' own FileService and FileResource on a minimal
record class (nothing indexed), as the RDM tests use them. After a commit
records-resources queues its checksum task: here into memory, never run
(an InvenioRDM runs it later in a Celery worker; it reads the file back).
"""

from __future__ import annotations

import sys
from typing import Any

import common

sys.path.insert(0, str(common.ROOT))


def create_rdm_bench_app(config: dict[str, Any], name: str = "bench_rdm"):
    """records-resources' file API on our storage; its Celery tasks queued in memory."""
    import celery._state
    from celery import Celery

    from tests.rdm.app import create_rdm_app

    celery._state.set_default_app(Celery("bench-rdm", broker="memory://", set_as_current=False))
    app = create_rdm_app(config, name=name)
    for url in ("SITE_API_URL", "SITE_UI_URL"):  # the links' server, when the caller knows it already
        if url in config:
            app.config[url] = config[url]
    return app


def seed_rdm_record(app, bucket: str) -> str:
    """Fresh tables, a files location on ``bucket`` and one record with files: its PID value."""
    from invenio_db import db
    from invenio_files_rest.models import Location

    from tests.rdm.records import RdmRecord, create_tables, drop_tables

    with app.app_context():
        drop_tables()
        db.drop_all()
        db.create_all()
        create_tables()
        db.session.add(Location(name="bench-s3", uri=f"s3://{bucket}", default=True))
        record = RdmRecord.create({})
        record.commit()
        db.session.commit()
        pid = record.pid.pid_value
        db.session.remove()
        return pid
