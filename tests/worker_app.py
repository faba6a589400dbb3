"""The Celery app of the worker tests: ``celery -A tests.worker_app worker``.

Builds the same small Invenio app as tests/conftest.py, from the JSON config
in ``OAREPO_S3_TEST_WORKER_CONFIG`` (database, S3 endpoint, broker), with
invenio-celery, and loads the task module named by our
``invenio_celery.tasks`` entry point, as invenio-celery does in an Invenio
instance (only ours: other installed packages' task modules need services
this app does not have).

What the worker does is reported to the test through a Redis list (the
broker's server; key ``OAREPO_S3_TEST_WORKER_EVENTS``): ``ready`` when it
consumes, ``expired`` for each :data:`oarepo_s3.signals.upload_expired`,
``task`` after each task run (with its state: RETRY, SUCCESS, FAILURE).
"""

from __future__ import annotations

import importlib
import json
import os
from importlib.metadata import entry_points

import redis
from celery import signals as celery_signals
from flask import Flask
from invenio_celery import InvenioCelery

from oarepo_s3.app import create_app
from oarepo_s3.signals import upload_expired

CONFIG = json.loads(os.environ["OAREPO_S3_TEST_WORKER_CONFIG"])
WORKER = os.environ.get("OAREPO_S3_TEST_WORKER_NAME", "worker")
EVENTS_KEY = os.environ["OAREPO_S3_TEST_WORKER_EVENTS"]
_events = redis.Redis.from_url(CONFIG["CELERY_BROKER_URL"])


def record(kind: str, **data) -> None:
    """Tell the test something happened in this worker."""
    _events.rpush(EVENTS_KEY, json.dumps({"event": kind, "worker": WORKER, "pid": os.getpid(), **data}))


def create_flask_app() -> Flask:
    """The tests' minimal app, plus invenio-celery."""
    app = create_app(CONFIG, name="oarepo_s3_worker", rest_api=False)
    InvenioCelery(app, entry_point_group=None)
    return app


flask_app = create_flask_app()
celery = flask_app.extensions["invenio-celery"].celery
(_tasks_entry_point,) = entry_points(group="invenio_celery.tasks", name="oarepo_s3")
importlib.import_module(_tasks_entry_point.module)


@upload_expired.connect
def _on_upload_expired(sender, upload):
    record("expired", session=str(upload.id), upload_id=upload.upload_id)


@celery_signals.worker_ready.connect
def _on_worker_ready(**kwargs):
    record("ready")


@celery_signals.task_postrun.connect
def _on_task_postrun(task_id=None, task=None, state=None, retval=None, **kwargs):
    record("task", task_id=task_id, name=task.name, state=state, retval=retval if isinstance(retval, int) else None)
