"""What every benchmark shares: its servers, CPU accounting, statistics and result files.

The servers are the ones the test suite uses, started the same way:
moto's S3 server in a child process (so that its CPU time can be read and is
never charged to a client), PostgreSQL through ``scripts/postgres.sh`` and
Ceph RGW through ``scripts/ceph-rgw.sh``, each in a temporary directory on
free ports. A server that does not start stops the benchmark with its log:
nothing is silently left out.

Each benchmark writes one JSON file into ``benchmarks/results/`` (not in
git); ``report.py`` turns them into ``docs/performance.md`` and its plots.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MiB = 1024 * 1024
GiB = 1024 * MiB
REGION = "us-east-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- processes and CPU ---------------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``finally`` blocks stop the servers a benchmark started.

    (By default SIGTERM ends Python at once: PostgreSQL, moto or Ceph would outlive a stopped run.)
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_ports(count: int = 1) -> list[int]:
    """Ports free on 127.0.0.1 right now (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def proc_stat(path: str) -> tuple[str, list[str]] | None:
    """The name and the fields after it of a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat``; None: gone.

    The name is in parentheses and may itself hold spaces and ")": the fields start after the last ")".
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    end = text.rindex(")")
    return text[text.index("(") + 1:end], text[end + 1:].split()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, its reaped children included."""
    stat = proc_stat(f"/proc/{pid}/stat")
    if stat is None:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in stat[1][11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (gunicorn's workers, PostgreSQL's backends, Chromium's processes).

    A child is listed under the thread that started it: Chromium starts its
    network service from a launcher thread, so every thread's list is read.
    """
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except FileNotFoundError:
                continue
            for kid in map(int, kids):
                found.append(kid)
                todo.append(kid)
    return found


def process_tree(pids: list[int]) -> set[int]:
    """``pids`` and every live descendant of theirs, each once."""
    return {p for pid in pids for p in (pid, *children_of(pid))}


class CpuMeter:
    """CPU seconds used by a fixed group of processes (and their descendants) between start and stop.

    Descendants are looked up at every reading: a PostgreSQL backend that
    exits in between is charged to its parent's ``cutime`` once reaped.
    """

    def __init__(self, pids: list[int]):
        self.pids = list(pids)
        self.started = 0.0

    def total(self) -> float:
        return sum(process_cpu(p) for p in process_tree(self.pids))

    def start(self) -> CpuMeter:
        self.started = self.total()
        return self

    def read(self) -> float:
        return self.total() - self.started


def machine_busy() -> float:
    """CPU seconds all processes on the machine have used since boot (``/proc/stat``: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


class MachineMeter:
    """CPU seconds the whole machine used between start and read: with the parties' own, it shows others' load."""

    def start(self) -> MachineMeter:
        self.started = machine_busy()
        return self

    def read(self) -> float:
        return machine_busy() - self.started


def wait_for_port(port: int, process: subprocess.Popen | None, what: str, timeout: float = 60) -> None:
    """Until something accepts connections on 127.0.0.1:port; stops the run if ``process`` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before it listened on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:.0f} s")


# --- S3 servers ------------------------------------------------------------------------------------


@dataclass
class S3Server:
    """A running S3 endpoint: its URL, keys and the processes whose CPU is the server's."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    pids: list[int] = field(default_factory=list)
    stop_fn: object = None
    ceph_dir: Path | None = None

    def cpu(self) -> CpuMeter:
        return CpuMeter(self.pids)

    def client(self, max_pool: int = 32):
        return s3_client(self.endpoint, self.access_key, self.secret_key, max_pool)

    def new_user(self, name: str) -> tuple[str, str]:
        """Keys of a new S3 user of this server (Ceph: ``radosgw-admin user create``; moto checks no keys)."""
        access, secret = f"{name[:12]}-{uuid.uuid4().hex[:8]}".upper(), uuid.uuid4().hex + uuid.uuid4().hex
        if self.ceph_dir is not None:
            subprocess.run(["radosgw-admin", "-c", str(self.ceph_dir / "ceph.conf"), "user", "create", f"--uid={name}",
                            f"--display-name={name}", f"--access-key={access}", f"--secret-key={secret}"],
                           capture_output=True, check=True, timeout=120)
        return access, secret

    def stop(self) -> None:
        if self.stop_fn is not None:
            self.stop_fn()
            self.stop_fn = None


def start_moto(min_part_size: int = 5 * MiB) -> S3Server:
    """moto's S3 server in a child process; ``min_part_size`` is S3's rule unless a benchmark lowers it."""
    port = free_ports()[0]
    env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(min_part_size)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "moto's S3 server")
    except BaseException:  # not up, or the run was stopped meanwhile: leave no server behind
        process.kill()
        process.wait()
        raise

    def stop():
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return S3Server("moto", f"http://127.0.0.1:{port}", "bench", "bench-secret", [process.pid], stop)


def start_ceph() -> S3Server:
    """A throw-away Ceph RGW (``scripts/ceph-rgw.sh``); stops the run with its log if it does not start."""
    base = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-ceph-"))
    state = base / "rgw"
    script = str(ROOT / "scripts" / "ceph-rgw.sh")
    port, mon_port = free_ports(2)
    env = {**os.environ, "CEPH_RGW_PORT": str(port), "CEPH_RGW_MON_PORT": str(mon_port),
           "CEPH_RGW_MEMSTORE_BYTES": str(6 * GiB)}
    try:
        done = subprocess.run([script, "start", str(state)], capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired as e:
        done = subprocess.CompletedProcess(e.cmd, 124, e.stdout or "", f"{e.stderr or ''}\ntimed out")
    except BaseException:  # the run was stopped while Ceph was starting: stop what has started
        subprocess.run([script, "stop", str(state)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)
        raise
    exports = dict(w.split("=", 1) for w in shlex.split(done.stdout) if "=" in w) if done.returncode == 0 else {}
    if "S3_ENDPOINT_URL" not in exports:
        tail = "\n".join((done.stderr or "").splitlines()[-40:])
        raise SystemExit(f"Ceph RGW did not start ({script} start {state} exited {done.returncode}):\n{tail}")
    pids = []
    for name in ("client.rgw", "osd.0", "mon.a"):
        try:
            pids.append(int((state / "run" / f"{name}.pid").read_text().strip()))
        except (FileNotFoundError, ValueError):
            pass

    def stop():
        subprocess.run([script, "stop", str(state)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)

    return S3Server("ceph", exports["S3_ENDPOINT_URL"], exports["AWS_ACCESS_KEY_ID"],
                    exports["AWS_SECRET_ACCESS_KEY"], pids, stop, ceph_dir=state)


def s3_client(endpoint: str, access_key: str, secret_key: str, max_pool: int = 32):
    """A boto3 client for set-up and checks (SigV4, path style, checksums only when required)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=max_pool,
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


# --- PostgreSQL ------------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A throw-away PostgreSQL server (``scripts/postgres.sh``); one fresh database per benchmark."""

    uri: str
    pid: int | None
    stop_fn: object = None

    def database(self, name: str) -> str:
        """A new, empty database ``name`` (dropped first if a previous run left it); its URI."""
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        admin = sa.create_engine(self.uri, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        return str(sa.engine.make_url(self.uri).set(database=name).render_as_string(hide_password=False))

    def cpu(self) -> CpuMeter:
        return CpuMeter([self.pid] if self.pid else [])

    def stop(self) -> None:
        if self.stop_fn is not None:
            self.stop_fn()
            self.stop_fn = None


def start_postgres() -> Postgres:
    """Start PostgreSQL on a free port in a temporary directory, or stop the run with its error."""
    base = tempfile.mkdtemp(prefix="oarepo-s3-bench-pg-")
    os.chmod(base, 0o755)  # the server runs as 'postgres' when we are root
    script = str(ROOT / "scripts" / "postgres.sh")
    env = {**os.environ, "OAREPO_S3_PG_PORT": str(free_ports()[0])}
    done = subprocess.run([script, "start", f"{base}/data"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"PostgreSQL did not start:\n{done.stderr}")
    uri = done.stdout.strip().split("=", 1)[1]
    try:
        pid = int(Path(f"{base}/data/postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        pid = None

    def stop():
        subprocess.run([script, "stop", f"{base}/data"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)

    return Postgres(uri, pid, stop)


def postgres_from_args(uri: str | None) -> Postgres:
    """The server named by ``--pg URI`` (the runner's), or a new one this benchmark stops itself."""
    if uri:
        return Postgres(uri, postmaster_pid(uri))
    return start_postgres()


def postmaster_pid(uri: str) -> int | None:
    """The PostgreSQL server's process id, for its CPU time (only when it runs on this machine)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            stat = proc_stat(f"/proc/{backend}/stat")  # read while the backend lives: its parent is the postmaster
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return None if stat is None else int(stat[1][1])


# --- the app ---------------------------------------------------------------------------------------


def app_config(db_uri: str, s3: S3Server, **extra) -> dict:
    """The API app's configuration for a benchmark (the settings a deployment would set)."""
    from oarepo_s3.ratelimit import BUDGETS

    return {
        "SECRET_KEY": "bench-secret",
        "TRUSTED_HOSTS": ["127.0.0.1", "localhost"],
        "SQLALCHEMY_DATABASE_URI": db_uri,
        "S3_ENDPOINT_URL": s3.endpoint,
        "S3_ACCESS_KEY_ID": s3.access_key,
        "S3_SECRET_ACCESS_KEY": s3.secret_key,
        "S3_REGION_NAME": REGION,
        # Throughput is measured, not the per-user budgets (oarepo_s3.ratelimit).
        **{setting: None for setting in BUDGETS.values()},
        **extra,
    }


def quiet() -> None:
    """Known noise of the stack, not of the measurement."""
    import logging
    import warnings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*overriding the default OAuthlib.*")
    warnings.filterwarnings("ignore", message=".*nested transaction already deassociated.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def seed(app, bucket: str) -> dict:
    """Tables, a files location on ``bucket``, one user with a personal token and a draft.

    Returns ``{"token", "user_id", "draft_id"}``.
    """
    from invenio_accounts.utils import hash_password
    from invenio_db import db
    from invenio_files_rest.models import Location
    from invenio_oauth2server.models import Token

    from oarepo_s3.drafts import create_draft

    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.add(Location(name="bench-s3", uri=f"s3://{bucket}", default=True))
        user = app.extensions["security"].datastore.create_user(
            email="bench@example.org", password=hash_password("bench password"), active=True
        )
        db.session.flush()
        user.confirmed_at = datetime.now(UTC)
        token = Token.create_personal("bench", user.id, scopes=[], is_internal=False)
        db.session.commit()
        info = {"token": token.access_token, "user_id": user.id}
        info["draft_id"] = create_draft(user.id, {"title": "benchmark"}).pid_value
        db.session.remove()
        return info


def new_draft(app, user_id: int, title: str) -> str:
    """Another draft of the benchmark's user; its PID value."""
    from invenio_db import db

    from oarepo_s3.drafts import create_draft

    with app.app_context():
        pid = create_draft(user_id, {"title": title}).pid_value
        db.session.remove()
        return pid


def write_random_file(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible, no two runs alike) at ``path``, written 16 MiB at a time."""
    with open(path, "wb") as fp:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fp.write(block)
            left -= len(block)


def new_bucket(s3: S3Server) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@dataclass
class AppServer:
    """The app under gunicorn (``benchmarks/wsgi.py``): its URL and its processes."""

    url: str
    process: subprocess.Popen
    log: Path
    own_logdir: bool = False

    def cpu(self) -> CpuMeter:
        return CpuMeter([self.process.pid])

    def byte_counts(self) -> dict:
        """The body-byte counters of the worker that answers (the payload benchmark runs one)."""
        import requests

        return requests.get(f"{self.url}/_bench/bytes", timeout=30).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.own_logdir:
            shutil.rmtree(self.log.parent, ignore_errors=True)


def start_gunicorn(config: dict, workers: int = 1, threads: int = 1, logdir: Path | None = None,
                   rdm: bool = False, target: str = "wsgi:app") -> AppServer:
    """Serve the API app (oarepo_s3.app) with ``config`` under gunicorn; returns once every worker answers.

    ``rdm``: serve the InvenioRDM stand-in (``benchmarks/rdm_app.py``) instead, its links on this server's URL.
    ``target``: gunicorn's app, a module of ``benchmarks/`` or of the repository (which is on the path).
    """
    import requests

    port = free_ports()[0]
    if rdm:
        config = {**config, "SITE_API_URL": f"http://127.0.0.1:{port}", "SITE_UI_URL": f"http://127.0.0.1:{port}"}
    own_logdir = logdir is None
    logdir = logdir or Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-gunicorn-"))
    log = logdir / "gunicorn.log"
    cmd = [sys.executable, "-m", "gunicorn", "--chdir", str(ROOT / "benchmarks"), "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--log-level", "warning", "--timeout", "600", "--backlog", "2048"]
    if threads > 1:
        cmd += ["--threads", str(threads), "--worker-class", "gthread"]
    env = {**os.environ, "OAREPO_S3_BENCH_CONFIG": json.dumps(config), "OAREPO_S3_BENCH_APP": "rdm" if rdm else "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        process = subprocess.Popen([*cmd, target], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = AppServer(f"http://127.0.0.1:{port}", process, log, own_logdir)
    try:
        wait_for_port(port, process, "gunicorn", timeout=120)
        # Workers import the app after the port opens: wait until as many answer as were started.
        seen, deadline = set(), time.monotonic() + 180
        while len(seen) < workers and time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            def ask(_):
                try:
                    return requests.get(f"{server.url}/_bench/bytes", timeout=60).json()["pid"]
                except requests.RequestException:
                    time.sleep(0.2)
                    return None

            # Concurrent requests: a sync worker takes one at a time, so a batch reaches several.
            with ThreadPoolExecutor(4 * workers) as pool:
                seen.update(p for p in pool.map(ask, range(4 * workers)) if p)
        if len(seen) < workers:
            raise SystemExit(f"only {len(seen)} of {workers} gunicorn workers answered:\n{log.read_text()[-3000:]}")
    except BaseException:
        server.stop()
        raise
    return server


# --- statistics and results ------------------------------------------------------------------------


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    values = sorted(values)
    if not values:
        return float("nan")
    rank = (len(values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def package_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict:
    """What the numbers were measured on."""
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(mem / GiB, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_result(name: str, data: dict, path: Path | None = None) -> Path:
    """``benchmarks/results/<name>.json`` (or ``path``), with the machine's facts; NaN/inf become null."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_facts(), **data}
    path.write_text(json.dumps(_finite(payload), indent=2, default=str, allow_nan=False) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
