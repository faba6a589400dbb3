"""The cleanup task: called in-process, and run by real Celery workers on a real Redis broker.

The worker tests start ``celery -A tests.worker_app worker --pool=solo``
subprocesses (one per queue) against the test database and, through
tests/fault_proxy.py, the test S3 server; the proxy counts every
AbortMultipartUpload and injects faults. The broker is a Redis server
started once per session by scripts/redis.sh (installing Debian's
redis-server when missing); if it cannot start, the tests fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from celery import Celery
from invenio_db import db
from invenio_files_rest.models import ObjectVersion

from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.s3 import build_boto3_client
from oarepo_s3.tasks import cleanup_expired_multipart_uploads

from .cleanup_helpers import backdate, complete_one, new_record, s3_upload_ids, start_uploads, statuses
from .fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
TASK = "oarepo_s3.tasks.cleanup_expired_multipart_uploads"
EXPIRED, IN_PROGRESS, COMPLETE = (
    MultipartUploadStatus.EXPIRED,
    MultipartUploadStatus.IN_PROGRESS,
    MultipartUploadStatus.COMPLETE,
)


# --- in-process ------------------------------------------------------------------


def test_cleanup_expires_only_unfinished_uploads(location, s3_client, s3_bucket):
    record = new_record()
    done, done_payload = complete_one(record, "done.bin", size=1000, seed=21)
    (stale,) = start_uploads(record, 1, prefix="stale")
    (fresh,) = start_uploads(record, 1, prefix="fresh", size=3000)
    backdate([done["id"], stale["id"]])

    assert cleanup_expired_multipart_uploads() == 1

    assert statuses() == {done["id"]: COMPLETE, stale["id"]: EXPIRED, fresh["id"]: IN_PROGRESS}
    assert s3_upload_ids(s3_client, s3_bucket) == {fresh["upload_id"]}
    assert ObjectVersion.get(record.bucket, stale["file_key"]) is None
    with ObjectVersion.get(record.bucket, "done.bin").file.storage().open() as fp:
        assert fp.read() == done_payload
    assert record.bucket.size == len(done_payload) + 3000

    assert cleanup_expired_multipart_uploads() == 0  # nothing left to do


def test_cleanup_respects_the_limit(location):
    sessions = start_uploads(new_record(), 3, size=10)
    backdate([s["id"] for s in sessions])
    assert cleanup_expired_multipart_uploads(limit=2) == 2
    assert cleanup_expired_multipart_uploads(limit=2) == 1


# --- real workers: Redis, worker processes, the fault proxy -----------------------------


@pytest.fixture(scope="session")
def redis_url():
    """A throw-away Redis (scripts/redis.sh) for the session; the tests fail if it does not start."""
    base = Path(tempfile.mkdtemp(prefix="oarepo-s3-redis-"))
    script = str(ROOT / "scripts" / "redis.sh")
    try:
        started = subprocess.run([script, "start", str(base / "redis")], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"Redis did not start within {e.timeout} s ({script})", pytrace=False)
    if started.returncode != 0 or "=" not in started.stdout:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"Redis did not start ({script} exited {started.returncode}):\n{started.stderr}", pytrace=False)
    try:
        yield started.stdout.strip().split("=", 1)[1]
    finally:
        subprocess.run([script, "stop", str(base / "redis")], capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(s3_server):
    """The fault-injecting proxy in front of the test S3 server (the workers' S3 endpoint)."""
    p = FaultProxy(s3_server).start()
    yield p
    p.stop()


class Workers:
    """Celery worker subprocesses, one per queue, started on demand; their events via Redis."""

    def __init__(self, redis_url: str, config: dict, log_dir: Path):
        self.redis_url = redis_url
        self.config = config
        self.log_dir = log_dir
        self.events_key = f"oarepo-s3-test-events-{uuid.uuid4().hex}"
        self.redis = redis.Redis.from_url(redis_url)
        self.client = Celery("oarepo-s3-tests", broker=redis_url)
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, *names: str) -> None:
        """Workers consuming queues ``names``: running already, or started (in parallel) and ready."""
        starting = {}
        for name in names or ("a",):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                starting[name] = self.processes[name] = self._spawn(name)
        deadline = time.monotonic() + 90
        while starting and time.monotonic() < deadline:
            ready = {e["pid"] for e in self.events("ready")}
            for name, process in list(starting.items()):
                if process.pid in ready:
                    del starting[name]
                elif process.poll() is not None:
                    pytest.fail(f"Celery worker {name} exited {process.returncode}:\n{self.log(name)}", pytrace=False)
            time.sleep(0.1)
        for name in starting:
            pytest.fail(f"Celery worker {name} did not become ready in 90 s:\n{self.log(name)}", pytrace=False)

    def _spawn(self, name: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OAREPO_S3_TEST_WORKER_CONFIG": json.dumps(self.config),
            "OAREPO_S3_TEST_WORKER_NAME": name,
            "OAREPO_S3_TEST_WORKER_EVENTS": self.events_key,
        }
        with open(self.log_dir / f"worker-{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.worker_app", "worker", "--pool=solo",
                 "--concurrency=1", "-Q", self.queue(name), "-n", f"{name}-{os.getpid()}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def queue(self, name: str) -> str:
        return f"oarepo-s3-test-{name}"

    def log(self, name: str) -> str:
        path = self.log_dir / f"worker-{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else "(no log)"

    def kill(self, name: str) -> None:
        """SIGKILL: the worker dies mid-task, as in a crash or an OOM kill."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for _, process in list(self.processes.items()):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()
        self.redis.delete(self.events_key)
        self.redis.close()
        self.client.close()

    def events(self, kind: str | None = None) -> list[dict]:
        found = [json.loads(e) for e in self.redis.lrange(self.events_key, 0, -1)]
        return [e for e in found if kind is None or e["event"] == kind]

    def clear_events(self) -> None:
        """Forget what workers reported (ready events of running workers are kept)."""
        keep = [json.dumps(e) for e in self.events("ready")]
        pipe = self.redis.pipeline()
        pipe.delete(self.events_key)
        if keep:
            pipe.rpush(self.events_key, *keep)
        pipe.execute()

    def send(self, name: str = "a", **kwargs) -> str:
        """Send the cleanup task by its configured name to worker ``name``'s queue; return its id."""
        return self.client.send_task(TASK, kwargs=kwargs, queue=self.queue(name)).id

    def wait(self, task_id: str, timeout: float = 60) -> list[dict]:
        """The ``task`` events of ``task_id`` (one per run, retries included), once it finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [e for e in self.events("task") if e["task_id"] == task_id]
            if runs and runs[-1]["state"] in ("SUCCESS", "FAILURE"):
                return runs
            time.sleep(0.05)
        logs = "\n".join(f"--- worker {n} ---\n{self.log(n)}" for n in self.processes)
        pytest.fail(f"task {task_id} did not finish in {timeout} s:\n{logs}", pytrace=False)


@pytest.fixture(scope="module")
def workers(app_config, proxy, redis_url, tmp_path_factory):
    """Celery workers on this module's database, talking to S3 through the proxy."""
    config = {
        **app_config,
        "S3_ENDPOINT_URL": proxy.url,
        "CELERY_BROKER_URL": redis_url,
        "BROKER_URL": redis_url,  # invenio-celery sets both; flask-celeryext lets this one win
        "CELERY_RESULT_BACKEND": None,
        "CELERY_TASK_IGNORE_RESULT": True,
        # One botocore attempt per call: the task's own retries are under test.
        "OAREPO_S3_MAX_ATTEMPTS": 1,
        "OAREPO_S3_CLEANUP_MAX_RETRIES": 2,
        "OAREPO_S3_CLEANUP_RETRY_BACKOFF": 0.2,
    }
    pool = Workers(redis_url, config, tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


@pytest.fixture()
def worker(workers, proxy, location):
    """Workers ``a`` and ``b`` ready, nothing recorded yet, no faults."""
    workers.start("a", "b")
    workers.clear_events()
    proxy.reset()
    yield workers
    proxy.reset()


def expired_signals(workers) -> Counter:
    return Counter(e["session"] for e in workers.events("expired"))


def test_worker_runs_the_task_by_its_configured_name(worker, proxy, s3_client, s3_bucket):
    record = new_record()
    stale = start_uploads(record, 5, prefix="stale")
    fresh = start_uploads(record, 2, prefix="fresh")
    backdate([s["id"] for s in stale])

    (run,) = worker.wait(worker.send())

    assert run["state"] == "SUCCESS" and run["retval"] == 5
    assert statuses() == {**{s["id"]: EXPIRED for s in stale}, **{s["id"]: IN_PROGRESS for s in fresh}}
    assert expired_signals(worker) == Counter(s["id"] for s in stale)
    assert Counter(e.upload_id for e in proxy.aborts(status=204)) == Counter(s["upload_id"] for s in stale)
    assert len(proxy.aborts()) == 5
    assert s3_upload_ids(s3_client, s3_bucket) == {s["upload_id"] for s in fresh}
    db.session.refresh(record.bucket)
    assert record.bucket.size == 2 * 1000


def test_a_completed_upload_that_looks_expired_stays_intact(worker, proxy, s3_client, s3_bucket):
    record = new_record()
    done, payload = complete_one(record, "done.bin", size=6000, seed=3)
    (stale,) = start_uploads(record, 1, prefix="stale")
    backdate([done["id"], stale["id"]], hours=48)

    (run,) = worker.wait(worker.send())

    assert run["retval"] == 1
    assert statuses() == {done["id"]: COMPLETE, stale["id"]: EXPIRED}
    assert [e.upload_id for e in proxy.aborts()] == [stale["upload_id"]]
    assert s3_client.get_object(Bucket=s3_bucket, Key=done["key"])["Body"].read() == payload
    obj = ObjectVersion.get(record.bucket, "done.bin")
    assert obj.file.readable
    with obj.file.storage().open() as fp:
        assert fp.read() == payload
    db.session.refresh(record.bucket)
    assert record.bucket.size == 6000


def test_two_workers_on_one_backlog_handle_each_session_exactly_once(worker, proxy):
    sessions = start_uploads(new_record(), 40)
    backdate([s["id"] for s in sessions])
    proxy.add_fault("delay", "DELETE", seconds=0.01, times=None)  # each abort takes a moment, so the runs overlap

    first, second = worker.send("a"), worker.send("b")
    runs = worker.wait(first) + worker.wait(second)

    assert [r["state"] for r in runs] == ["SUCCESS", "SUCCESS"]
    assert sum(r["retval"] for r in runs) == 40
    if db.engine.dialect.name == "postgresql":
        # Row locks: the workers interleave. (SQLite's busy handler sleeps while the
        # other writer holds the database lock, so one worker may win every round.)
        assert all(r["retval"] > 0 for r in runs), f"one worker did everything: {runs}"
    assert set(statuses().values()) == {EXPIRED}
    assert expired_signals(worker) == Counter(s["id"] for s in sessions)
    # Exactly one AbortMultipartUpload per upload: no worker even tried a session another had.
    assert Counter(e.upload_id for e in proxy.aborts()) == Counter(s["upload_id"] for s in sessions)
    assert {e.status for e in proxy.aborts()} == {204}


def test_s3_errors_are_retried_with_backoff_until_the_abort_succeeds(app, worker, proxy):
    sessions = start_uploads(new_record(), 3)
    backdate([s["id"] for s in sessions])
    flaky = sessions[1]["upload_id"]
    # botocore retries a 500 itself first: fail every attempt of two task runs.
    per_call = build_boto3_client({**app.config, **worker.config}).meta.config.retries["total_max_attempts"]
    proxy.add_fault("fail", "DELETE", upload_id=flaky, times=2 * per_call, status=500, code="InternalError")

    started = time.monotonic()
    runs = worker.wait(worker.send())

    assert [r["state"] for r in runs] == ["RETRY", "RETRY", "SUCCESS"]
    assert time.monotonic() - started >= 0.2 + 0.4  # backoff 0.2 s, doubled
    assert [r["retval"] for r in runs] == [None, None, 1]  # 2 expired in the first run
    assert set(statuses().values()) == {EXPIRED}
    assert expired_signals(worker) == Counter(s["id"] for s in sessions)
    assert [e.status for e in proxy.aborts(flaky)] == [500] * 2 * per_call + [204]


def test_a_session_is_never_marked_gone_while_s3_keeps_its_upload(worker, proxy, s3_client, s3_bucket):
    record = new_record()
    sessions = start_uploads(record, 2)
    backdate([s["id"] for s in sessions])
    kept = sessions[0]
    proxy.add_fault("fail", "DELETE", upload_id=kept["upload_id"], times=None, status=403, code="AccessDenied")

    runs = worker.wait(worker.send())

    # Retried OAREPO_S3_CLEANUP_MAX_RETRIES (2) times, then left for the next scheduled run.
    assert [r["state"] for r in runs] == ["RETRY", "RETRY", "SUCCESS"]
    assert statuses() == {kept["id"]: IN_PROGRESS, sessions[1]["id"]: EXPIRED}
    assert kept["upload_id"] in s3_upload_ids(s3_client, s3_bucket)
    assert ObjectVersion.get(record.bucket, kept["file_key"]) is not None
    assert expired_signals(worker) == Counter([sessions[1]["id"]])
    assert [e.status for e in proxy.aborts(kept["upload_id"])] == [403, 403, 403]


def test_an_upload_s3_no_longer_has_is_marked_expired(worker, proxy, s3_client, s3_bucket):
    record = new_record()
    (gone,) = start_uploads(record, 1)
    backdate([gone["id"]])
    s3_client.abort_multipart_upload(Bucket=s3_bucket, Key=gone["key"], UploadId=gone["upload_id"])

    (run,) = worker.wait(worker.send())

    assert run["retval"] == 1
    assert statuses() == {gone["id"]: EXPIRED}
    assert [e.status for e in proxy.aborts(gone["upload_id"])] == [404]
    assert expired_signals(worker) == Counter([gone["id"]])
    assert ObjectVersion.get(record.bucket, gone["file_key"]) is None


def test_a_worker_killed_mid_batch_then_a_rerun_cleans_everything_exactly_once(worker, proxy, s3_client, s3_bucket):
    sessions = start_uploads(new_record(), 8)
    backdate([s["id"] for s in sessions])
    held = proxy.add_fault("hold", "DELETE", nth=4)  # the 4th abort reaches S3; its answer never gets back

    worker.send()
    assert held.reached.wait(60), worker.log("a")
    worker.kill("a")
    held.release.set()

    after_crash = statuses()
    assert Counter(after_crash.values()) == {EXPIRED: 3, IN_PROGRESS: 5}
    in_flight = next(e.upload_id for e in proxy.aborts()[3:])
    assert len(s3_upload_ids(s3_client, s3_bucket)) == 4  # S3 aborted the 4th; the database never heard

    worker.start("a")
    for _ in range(3):  # a dead worker's row lock may outlive it a moment: then the next run takes the row
        runs = worker.wait(worker.send())
        if set(statuses().values()) == {EXPIRED}:
            break
    assert runs[-1]["state"] == "SUCCESS"
    assert set(statuses().values()) == {EXPIRED}
    assert expired_signals(worker) == Counter(s["id"] for s in sessions)
    assert Counter(e.upload_id for e in proxy.aborts(status=204)) == Counter(s["upload_id"] for s in sessions)
    assert [e.status for e in proxy.aborts(in_flight)] == [204, 404]
    assert s3_upload_ids(s3_client, s3_bucket) == set()
