"""The demo's web page in headless Chromium vs ``oarepo-s3 upload``: the same file, S3 and app.

Run::

    .venv/bin/python benchmarks/bench_browser.py [--s3 moto|ceph] [--size-mib 1024] [--repeat 3] [--pg URI]
        [--json FILE]

One app under gunicorn (one worker, 8 threads, PostgreSQL) serves both the
REST API and the demo's web page (``demo/web.py``, registered on the same
app: :func:`demo_wsgi`), so that both clients go through the very same app:

* ``browser`` - Debian's Chromium, headless, driven by Playwright (the
  launch flags of ``tests/e2e``): signs in through the page's form, opens
  the draft's page, picks the file in the Dashboard's file input and clicks
  Upload; timed from the click until the page's Uppy reports the upload's
  success (the page's own uploader, ``demo/static/src/parallel-s3.js``:
  parts in parallel, batch signing, Content-MD5 hashed in Web Workers);
* ``oarepo-s3`` - ``python -m oarepo_s3_client upload FILE --draft URL
  --json`` (its defaults: parts of 16 MiB, 8 in flight), timed around the
  subprocess (its interpreter's start included, ~0.3 s).

Per run: wall time, MB/s, requests to the app (the WSGI counters of
``benchmarks/wsgi.py``, per upload and per GiB), the client's CPU (the
browser: every Chromium process's user + system time from ``/proc``; the
CLI: its subprocess's), the app's and the S3 server's CPU, and how busy the
whole machine was. After every upload the file is checked: completed, its
size, and S3's multipart ETag equal to the one computed here from the file's
bytes with the part size the client used (every part's MD5, so a missing,
short or wrong part shows), and the API's checksum the same; then the file
is deleted.

The two clients alternate (browser first in odd runs, the CLI first in even
ones) after one warm-up upload each; medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import ROOT, GiB, MiB, median

from oarepo_s3_client.parts import file_part_md5s, s3etag

METHODS = ("browser", "oarepo-s3")
CORS_RULES = [{
    "AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
    "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600,
}]
"""What the demo sets on its bucket (``demo/__main__.py``): browsers PUT parts with a Content-MD5 and read ETags."""
CLI_PART_SIZE = 16 * MiB
PASSWORD = "bench password"
"""The seeded user's password (``common.seed``)."""


def demo_wsgi():
    """gunicorn's app (``bench_browser:demo_wsgi()``): ``benchmarks/wsgi.py``'s counted app plus the demo's page."""
    import wsgi

    from demo.web import blueprint

    wsgi.app.app.register_blueprint(blueprint)
    return wsgi.app


def run_script(name: str) -> str:
    done = subprocess.run([str(ROOT / "scripts" / name)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"scripts/{name} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done.stdout.strip()


def chromium_pids(root: int) -> list[int]:
    """The Chromium processes among ``root``'s descendants whose parent is not Chromium (the browsers)."""
    def name(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            return ""

    def parent(pid: int) -> int:
        stat = common.proc_stat(f"/proc/{pid}/stat")
        return 0 if stat is None else int(stat[1][1])

    found = [p for p in common.children_of(root) if name(p).startswith("chrom")]
    return [p for p in found if not name(parent(p)).startswith("chrom")]


def chromium_process_kind(pid: int) -> str:
    """``renderer``, ``gpu-process``, ``network`` (the network service)... from ``--type=``; ``browser`` without one."""
    try:
        # Chromium rewrites its children's command lines into one string: split on NULs and spaces alike.
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except FileNotFoundError:
        return "gone"
    kind = next((a.removeprefix("--type=") for a in args if a.startswith("--type=")), "browser")
    sub = next((a.removeprefix("--utility-sub-type=") for a in args if a.startswith("--utility-sub-type=")), "")
    return "network" if kind == "utility" and sub.endswith("NetworkService") else kind


class ChromiumCpuByThread:
    """Chromium's CPU between start and read, by process kind and thread name (``renderer DedicatedWorker``).

    Which thread does what: in the renderer, ``DedicatedWorker`` threads
    are the page's hashing workers, the main thread is named ``chromium``
    and ``Compositor`` composites; the browser's and the network service's
    ``Chrome_IOThread`` and ``ThreadPoolForeg`` move IPC, file reads and
    socket writes. A process's CPU not seen on its live threads (threads
    that ended) is its ``(ended threads)``. Processes that end meanwhile are
    not counted (the total is the benchmark's CpuMeter).
    """

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.started: dict[tuple[int, str, str], float] = {}

    def _now(self) -> dict[tuple[int, str, str], float]:
        found: dict[tuple[int, str, str], float] = {}
        for pid in common.process_tree(self.roots):
            kind = chromium_process_kind(pid)
            found[(pid, kind, "")] = common.process_cpu(pid)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                stat = common.proc_stat(f"/proc/{pid}/task/{tid}/stat")
                if stat is None:
                    continue
                name, fields = stat[0].rstrip("0123456789"), stat[1]
                key = (pid, kind, name)
                # utime + stime only: a thread's cutime and cstime are its whole process's.
                found[key] = found.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / common.CLK_TCK
        return found

    def start(self) -> ChromiumCpuByThread:
        self.started = self._now()
        return self

    def read(self) -> dict[str, float]:
        by_thread: dict[str, float] = {}

        def add(label: str, cpu: float) -> None:
            by_thread[label] = by_thread.get(label, 0.0) + cpu

        for (pid, kind, name), cpu in self._now().items():
            spent = cpu - self.started.get((pid, kind, name), 0.0)
            if name:  # a live thread's: its own, and not its process's ended threads'
                add(f"{kind} {name}", spent)
                add(f"{kind} (ended threads)", -spent)
            else:  # the whole process's
                add(f"{kind} (ended threads)", spent)
        return {k: v for k, v in by_thread.items() if v >= 0.01}


class Bench:
    """S3, PostgreSQL, the app (API + page), a signed-in browser page and the CLI."""

    def __init__(self, args):
        common.quiet()
        self.args = args
        self.size = args.size_mib * MiB
        self.work = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-browser-"))
        self.s3 = common.start_ceph() if args.s3 == "ceph" else common.start_moto()
        self.pg = self.server = self.playwright = None
        self.expected: dict[int, str] = {}
        try:
            self.pg = common.postgres_from_args(args.pg)
            self.s3_client = self.s3.client()
            self.bucket = common.new_bucket(self.s3)
            self.s3_client.put_bucket_cors(Bucket=self.bucket, CORSConfiguration={"CORSRules": CORS_RULES})
            config = common.app_config(self.pg.database(f"bench_browser_{args.s3}"), self.s3,
                                       OAREPO_S3_SIGN_RATE_LIMIT=None)
            from oarepo_s3.app import create_app

            seeded = common.seed(create_app(config), self.bucket)
            run_script("web-assets.sh")
            self.server = common.start_gunicorn(config, threads=8, logdir=self.work, target="bench_browser:demo_wsgi()")
            self.draft_id = seeded["draft_id"]
            self.draft = f"{self.server.url}/draft/records/{self.draft_id}"
            self.token = seeded["token"]
            self.start_browser()
        except BaseException:
            self.close()
            raise
        self.path = self.work / "random.bin"
        self.env = {**os.environ, "OAREPO_S3_TOKEN": self.token,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "client"), os.environ.get("PYTHONPATH")]))}
        import requests

        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {self.token}"
        self.runs = 0

    def start_browser(self) -> None:
        from playwright.sync_api import sync_playwright

        from tests.e2e.conftest import CHROMIUM_ARGS

        executable = run_script("chromium.sh").splitlines()[-1]
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        self.browser_pids = chromium_pids(os.getpid())
        if not self.browser_pids:
            raise SystemExit("no Chromium process found under this one: its CPU could not be measured")
        self.page = self.browser.new_context().new_page()
        self.page.set_default_timeout(600_000)
        self.created: list = []  # the answers to the page's create requests (they name the part size)
        self.page.on("response", lambda r: self.created.append(r.json()) if r.request.method == "POST"
                     and r.url.split("?")[0].endswith("/uppy/s3/multipart") else None)
        self.page.goto(f"{self.server.url}/sign-in")
        self.page.get_by_label("E-mail").fill("bench@example.org")
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Your records").wait_for()
        self.version = self.browser.version

    def close(self) -> None:
        if self.playwright is not None:
            try:
                self.browser.close()
            finally:
                self.playwright.stop()
        if self.server is not None:
            self.server.stop()
        if self.pg is not None:
            self.pg.stop()
        self.s3.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)

    def meters(self) -> dict:
        return {"s3": self.s3.cpu().start(), "app": self.server.cpu().start(), "machine": common.MachineMeter().start(),
                "browser": common.CpuMeter(self.browser_pids).start()}

    def upload(self, method: str) -> dict:
        self.runs += 1
        if method == "browser":
            run, key, part_size = self.upload_with_browser()
        else:
            run, key, part_size = self.upload_with_cli()
        run["part_size"] = part_size
        self.check(key, part_size)
        self.api.delete(f"{self.draft}/files/{key}", timeout=120).raise_for_status()
        self.collect_garbage()
        return run

    def upload_with_browser(self) -> tuple[dict, str, int]:
        page = self.page
        page.goto(f"{self.server.url}/drafts/{self.draft_id}")
        page.wait_for_function("window.uppy !== undefined && window.uppy !== null")
        page.wait_for_load_state("networkidle")  # the page, its scripts and its hashing workers are loaded
        page.evaluate("""() => {
            window.benchResult = null
            window.uppy.on('upload-success', () => { window.benchResult = {ok: true} })
            window.uppy.on('upload-error', (file, error) => { window.benchResult = {error: String(error.message)} })
        }""")
        page.locator("input.uppy-Dashboard-input[name='files[]']").first.set_input_files(str(self.path))
        self.created.clear()
        before = self.server.byte_counts()  # the upload's requests, not the page's own (HTML, script, file list)
        meters = self.meters()
        threads = ChromiumCpuByThread(self.browser_pids).start()
        wall = time.perf_counter()
        page.locator(".uppy-StatusBar-actionBtn--upload").click()
        page.wait_for_function("window.benchResult !== null", polling=20, timeout=3_600_000)
        wall = time.perf_counter() - wall
        run = {"wall_s": wall, **{f"{k}_cpu_s": m.read() for k, m in meters.items()}, "cpu_by_thread_s": threads.read()}
        run["cpu_s"] = run.pop("browser_cpu_s")
        result = page.evaluate("window.benchResult")
        if not result.get("ok"):
            raise SystemExit(f"the page's upload failed: {result}")
        # The page lists the draft's files after an upload: wait for it, so that its requests are counted.
        page.wait_for_function("() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null")
        page.wait_for_load_state("networkidle")
        run["app"] = delta(before, self.server.byte_counts())
        return run, self.path.name, self.created[0]["partSize"]

    def upload_with_cli(self) -> tuple[dict, str, int]:
        key = f"cli-{self.runs}.bin"
        before = self.server.byte_counts()
        meters = self.meters()
        cpu, wall = child_cpu(), time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "oarepo_s3_client", "upload", str(self.path), "--key", key,
                               "--draft", self.draft, "--part-size", str(CLI_PART_SIZE), "--json",
                               "--state-dir", str(self.work / "state")], env=self.env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - wall, child_cpu() - cpu
        run = {"wall_s": wall, **{f"{k}_cpu_s": m.read() for k, m in meters.items() if k != "browser"}, "cpu_s": cpu,
               "app": delta(before, self.server.byte_counts())}
        if done.returncode != 0:
            raise SystemExit(f"oarepo-s3 upload failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.splitlines()[-1])
        run["checksum_algorithm"] = result.get("checksum_algorithm")
        return run, key, CLI_PART_SIZE

    def check(self, key: str, part_size: int) -> None:
        """Completed with every byte: S3's ETag (of the parts' MD5s), size and the API's checksum as computed here."""
        if part_size not in self.expected:
            self.expected[part_size] = s3etag(file_part_md5s(self.path, part_size)).removeprefix("s3etag:")
        etag = self.expected[part_size]
        entry = self.api.get(f"{self.draft}/files/{key}", timeout=60).json()
        objects = self.s3_client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        if len(objects) != 1:
            raise SystemExit(f"expected one object in {self.bucket}, found {[o['Key'] for o in objects]}")
        head = self.s3_client.head_object(Bucket=self.bucket, Key=objects[0]["Key"])
        found = (entry.get("status"), entry.get("size"), entry.get("checksum"), head["ContentLength"],
                 head["ETag"].strip('"'))
        wanted = ("completed", self.size, f"s3etag:{etag}", self.size, etag)
        if found != wanted:
            raise SystemExit(f"{key}: found {found}, expected {wanted}")

    def collect_garbage(self) -> None:
        """Ceph keeps deleted objects' data until its garbage collector runs: run it now (memstore is RAM)."""
        if self.s3.ceph_dir is None:
            return
        subprocess.run(["radosgw-admin", "-c", str(self.s3.ceph_dir / "ceph.conf"), "gc", "process", "--include-all"],
                       capture_output=True, timeout=300, check=False)


def child_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before if k != "pid"}


def summarize(runs: list[dict], size: int) -> dict:
    wall = median(r["wall_s"] for r in runs)
    requests = median(r["app"]["requests"] for r in runs)
    return {
        "wall_s": wall, "throughput_mb_s": size / wall / 1e6,
        "app_requests": requests, "app_requests_per_gib": requests * GiB / size,
        "client_cpu_s_per_gib": median(r["cpu_s"] for r in runs) * GiB / size,
        "app_cpu_s": median(r["app_cpu_s"] for r in runs),
        "s3_cpu_s_per_gib": median(r["s3_cpu_s"] for r in runs) * GiB / size,
        "machine_busy_cores": median(r["machine_cpu_s"] / r["wall_s"] for r in runs),
        "part_size_mib": runs[0]["part_size"] / MiB,
        **({"client_cpu_s_per_gib_by_thread": {
            thread: median(r["cpu_by_thread_s"].get(thread, 0.0) for r in runs) * GiB / size
            for thread in sorted({thread for r in runs for thread in r["cpu_by_thread_s"]})}}
           if "cpu_by_thread_s" in runs[0] else {}),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    common.exit_on_sigterm()  # a stopped run still stops its servers and the browser
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--s3", choices=("moto", "ceph"), default="moto", help="the S3 server to start (default moto)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client; medians are reported (default 3)")
    parser.add_argument("--pg", help="PostgreSQL server URI for the app (default: start one)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/browser-<s3>.json)")
    args = parser.parse_args(argv)

    bench = Bench(args)
    try:
        print(f"  writing {args.size_mib} MiB of random bytes ...", file=sys.stderr)
        common.write_random_file(bench.path, args.size_mib * MiB)
        bench.path.read_bytes()  # into the page cache, for both clients alike
        for method in METHODS:
            print(f"  warm-up: {method} ...", file=sys.stderr)
            bench.upload(method)
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for i in range(args.repeat):
            for method in METHODS if i % 2 == 0 else METHODS[::-1]:
                print(f"  run {i + 1}/{args.repeat}: {method} upload ...", file=sys.stderr)
                runs[method].append(bench.upload(method))
        s3_name = ("Ceph RGW " + ceph_version() if args.s3 == "ceph"
                   else f"moto {common.package_versions('moto')['moto']}")
        chromium = bench.version
    finally:
        bench.close()

    rows = {m: summarize(runs[m], bench.size) for m in METHODS}
    browser, cli = rows["browser"], rows["oarepo-s3"]
    ratios = {"throughput": browser["throughput_mb_s"] / cli["throughput_mb_s"],
              "app_requests": browser["app_requests_per_gib"] / cli["app_requests_per_gib"],
              "client_cpu": browser["client_cpu_s_per_gib"] / cli["client_cpu_s_per_gib"]}
    report(args, s3_name, chromium, rows, ratios)
    common.write_result(f"browser-{args.s3}", {
        "s3": s3_name, "s3_kind": args.s3, "size_mib": args.size_mib, "repeat": args.repeat,
        "chromium": chromium, "results": rows, "ratios": ratios,
        "versions": common.package_versions("oarepo-s3-client", "playwright", "gunicorn", "moto"),
    }, args.json)
    return 0


def ceph_version() -> str:
    try:
        out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "(version unknown)"


def report(args, s3_name: str, chromium: str, rows: dict, ratios: dict) -> None:
    print(f"\n{args.size_mib} MiB, median of {args.repeat}; S3: {s3_name}; Chromium {chromium}; {os.cpu_count()} CPUs")
    print(f"{'':<12} {'part MiB':>8} {'wall s':>7} {'MB/s':>7} {'app req':>8} {'req/GiB':>8} {'client CPU s/GiB':>17} "
          f"{'app CPU s':>9} {'S3 CPU s/GiB':>13} {'busy cores':>10}")
    for method, r in rows.items():
        print(f"{method:<12} {r['part_size_mib']:>8.0f} {r['wall_s']:>7.2f} {r['throughput_mb_s']:>7.1f} "
              f"{r['app_requests']:>8.0f} {r['app_requests_per_gib']:>8.1f} {r['client_cpu_s_per_gib']:>17.2f} "
              f"{r['app_cpu_s']:>9.2f} {r['s3_cpu_s_per_gib']:>13.2f} {r['machine_busy_cores']:>10.2f}")
    by_thread = rows["browser"]["client_cpu_s_per_gib_by_thread"]
    print("Chromium CPU s/GiB by process and thread: " + ", ".join(
        f"{thread} {cpu:.2f}" for thread, cpu in sorted(by_thread.items(), key=lambda kv: -kv[1]) if cpu >= 0.05))
    verdict = "" if args.s3 == "moto" else (" PASS" if ratios["throughput"] >= 0.8 else " FAIL")
    print(f"browser/CLI throughput {ratios['throughput']:.2f}x (target >= 0.8x on Ceph){verdict}")
    verdict = " PASS" if ratios["app_requests"] <= 2 else " FAIL"
    print(f"browser/CLI app requests per GiB {ratios['app_requests']:.2f}x (target <= 2x){verdict}")


if __name__ == "__main__":
    sys.exit(main())
