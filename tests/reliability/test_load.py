"""Concurrent uploads through the app under gunicorn with several worker processes.

20 clients (the oarepo-s3-client Python API, one Uploader each) upload 8 MiB
files at once into one draft; every file must complete and download
byte-identical, with no error anywhere. The CPU time the gunicorn workers
spent during the uploads is measured (``/proc`` via psutil) and reported
per uploaded GiB: the server only signs and keeps the books, so this is
small and independent of the payload's path. Bigger runs:
``OAREPO_S3_LOAD_FILES``, ``OAREPO_S3_LOAD_MIB``, ``OAREPO_S3_LOAD_WORKERS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from ..conftest import DATABASES, ROOT

sys.path.insert(0, str(ROOT / "client"))
from oarepo_s3_client import Uploader

pytestmark = [pytest.mark.slow, pytest.mark.s3_backends("moto")]

FILES = int(os.environ.get("OAREPO_S3_LOAD_FILES", "20"))
MIB = int(os.environ.get("OAREPO_S3_LOAD_MIB", "8"))
WORKERS = int(os.environ.get("OAREPO_S3_LOAD_WORKERS", "3"))


@pytest.fixture(scope="module", params=["postgresql"] if "postgresql" in DATABASES else DATABASES[:1])
def database_uri(request, tmp_path_factory):
    """PostgreSQL, the production database, when selected: one load run is enough."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgresql_uri")
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'load.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gunicorn(app_config, db, location, users, tmp_path):
    """gunicorn with WORKERS sync workers serving the API app (oarepo_s3.app) on the test's database and S3."""
    port = _free_port()
    config = {k: v for k, v in app_config.items() if k != "TESTING"}
    env = {**os.environ, "OAREPO_S3_LOAD_CONFIG": json.dumps(config)}
    db.session.commit()  # the server processes must not wait for the test's transaction
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "--timeout", "120",
         "tests.reliability.wsgi_app:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited {process.returncode}:\n{(tmp_path / 'gunicorn.log').read_text()}")
            try:
                requests.get(f"{url}/records/none", timeout=60)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        workers = psutil.Process(process.pid).children()
        assert len(workers) == WORKERS
        yield url, workers, tmp_path / "gunicorn.log"
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _cpu_seconds(processes) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def test_concurrent_uploads_under_gunicorn(gunicorn, owner, tmp_path, figures):
    url, workers, log = gunicorn
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {owner.token}"
    draft = api.post(f"{url}/draft/records/", json={"metadata": {"title": "load"}}, timeout=30).json()
    draft_url = draft["links"]["self"]
    paths = []
    for i in range(FILES):
        path = tmp_path / f"file-{i:03d}.bin"
        path.write_bytes(os.urandom(MIB * 1024 * 1024))
        paths.append(path)

    def upload(path: Path):
        with Uploader(draft_url, owner.token, concurrency=2, part_size=5 * 1024 * 1024,
                      state_dir=tmp_path / "state" / path.name) as uploader:
            return uploader.upload(path)

    cpu_before, start = _cpu_seconds(workers), time.perf_counter()
    with ThreadPoolExecutor(FILES) as pool:
        results = list(pool.map(upload, paths))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(workers) - cpu_before

    assert [r.status for r in results] == ["completed"] * FILES
    listing = api.get(draft["links"]["files"], timeout=30).json()["entries"]
    assert sorted(f["key"] for f in listing) == sorted(p.name for p in paths)
    assert {f["status"] for f in listing} == {"completed"}
    for path in paths:
        r = requests.get(f"{draft['links']['files']}{path.name}/content", headers=api.headers, timeout=60)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(path.read_bytes()).digest(), path.name
    errors = [line for line in log.read_text().splitlines() if "Traceback" in line or "[ERROR]" in line]
    assert errors == []

    gib = FILES * MIB / 1024
    figures.update({
        "files": FILES, "mib_each": MIB, "gunicorn_workers": WORKERS, "client_threads_per_file": 2,
        "seconds": round(seconds, 2), "files_per_second": round(FILES / seconds, 2),
        "mib_per_second": round(FILES * MIB / seconds, 1),
        "server_cpu_seconds": round(cpu, 3), "server_cpu_seconds_per_gib": round(cpu / gib, 3),
        "server_cpu_ms_per_file": round(cpu / FILES * 1000, 1),
    })
    print(f"\n{FILES} x {MIB} MiB in {seconds:.2f} s ({FILES / seconds:.1f} files/s); "
          f"gunicorn workers used {cpu:.2f} CPU s = {cpu / gib:.2f} CPU s per GiB uploaded")
