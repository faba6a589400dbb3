"""The demo's cleanup schedule: what Celery beat does in a deployment, in one thread.

Every ``interval`` seconds it runs the cleanup the Celery task
``oarepo_s3.tasks.cleanup_expired_multipart_uploads`` runs (expire
timed-out uploads, abort orphaned ones), so the demo needs no broker.
"""

from __future__ import annotations

import logging
import threading

from oarepo_s3.cleanup import run_cleanup

log = logging.getLogger(__name__)


class CleanupSchedule:
    """Runs :func:`oarepo_s3.cleanup.run_cleanup` in the app's context every ``interval`` seconds."""

    def __init__(self, app, interval: float):
        self.app = app
        self.interval = interval
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cleanup-schedule", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.app.app_context():
                    report = run_cleanup()
                self.runs += 1
                if report.expired or report.orphans or report.failures:
                    print(f"cleanup: {report.expired} expired uploads, {report.orphans} orphaned uploads aborted, "
                          f"{report.failures} failures", flush=True)
            except Exception:
                log.exception("the cleanup failed; next run in %s s", self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
