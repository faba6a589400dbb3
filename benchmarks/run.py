"""Run the benchmarks side by side in one go, then write the report (``./run-benchmarks.sh``).

::

    ./run-benchmarks.sh [--quick] [--only presign,scale,concurrency,client,browser,cleanup,rdm] [--no-report]

Starts one PostgreSQL for every benchmark that needs a database (each gets a
fresh database on it); ``client`` starts moto and a Ceph RGW itself and
stops the run if Ceph does not come up. Each benchmark runs as a child
process, so that servers, imports and memory do not leak from one into the
next; its output goes to the terminal and to ``<results>/<name>.log``.

Full run (~25 minutes on 2 cores): results in ``benchmarks/results/``, the
report in ``docs/performance.md`` and ``docs/img/perf-*.png``. ``--quick``
runs small sizes (a few minutes) into ``benchmarks/results/quick/`` and
writes its report there, never over the committed one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("presign", "scale", "concurrency", "client", "browser", "cleanup", "rdm")

FULL = {
    "presign": [["bench_presign.py", "--parts", "10000", "--repeat", "7"]],
    "scale": [["bench_scale.py", "--parts", "10,1000,10000", "--files", "10,100,1000", "--repeat", "5"]],
    "concurrency": [["bench_concurrency.py", "--clients", "50", "--uploads", "6", "--workers", "8"],
                    ["profile_control_plane.py", "--uploads", "200"]],
    # moto (the demo's S3): the settings of issue 16's aws-cli comparison; Ceph RGW: 1 GiB, 16 MiB parts, 8 in flight.
    "client": [["bench_client.py", "--s3", "moto", "--size-mib", "256", "--part-size-mib", "8", "--concurrency", "10",
                "--repeat", "3"],
               ["bench_client.py", "--s3", "ceph", "--size-mib", "1024", "--repeat", "3"]],
    "browser": [["bench_browser.py", "--s3", s3, "--size-mib", "1024", "--repeat", "3"] for s3 in ("moto", "ceph")],
    "cleanup": [["bench_cleanup.py", "--db", "postgresql", "--counts", "1000,10000"],
                ["bench_cleanup.py", "--db", "sqlite", "--counts", "1000"]],
    "rdm": [["bench_rdm.py", "--parts", "1000,10000", "--repeat", "5"]],
}
QUICK = {
    "presign": [["bench_presign.py", "--parts", "2000", "--repeat", "3"]],
    "scale": [["bench_scale.py", "--parts", "10,100,1000", "--files", "10,100", "--repeat", "3"]],
    "concurrency": [["bench_concurrency.py", "--clients", "50", "--uploads", "2", "--workers", "8"],
                    ["profile_control_plane.py", "--uploads", "50"]],
    "client": [["bench_client.py", "--s3", s3, "--size-mib", "128", "--repeat", "1"] for s3 in ("moto", "ceph")],
    "browser": [["bench_browser.py", "--s3", s3, "--size-mib", "128", "--repeat", "1"] for s3 in ("moto", "ceph")],
    "cleanup": [["bench_cleanup.py", "--db", "postgresql", "--counts", "100,500"],
                ["bench_cleanup.py", "--db", "sqlite", "--counts", "100"]],
    "rdm": [["bench_rdm.py", "--parts", "100,1000", "--repeat", "3"]],
}
NEEDS_PG = {"scale", "concurrency", "client", "browser", "cleanup", "rdm"}


def result_name(cmd: list[str]) -> str:
    """The JSON file a benchmark command writes (without the directory)."""
    script = cmd[0].removeprefix("bench_").removesuffix(".py")
    if script in ("client", "browser"):
        return f"{script}-{cmd[cmd.index('--s3') + 1]}"
    if script == "cleanup":
        return f"cleanup-{cmd[cmd.index('--db') + 1]}"
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-benchmarks.sh", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes; report under results/quick/")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--no-report", action="store_true", help="measure only; do not write the report")
    args = parser.parse_args(argv)
    common.exit_on_sigterm()  # a stopped run still stops PostgreSQL and the running benchmark
    selected = [b.strip() for b in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = set(selected) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    plan = QUICK if args.quick else FULL
    results = common.RESULTS / "quick" if args.quick else common.RESULTS
    results.mkdir(parents=True, exist_ok=True)

    facts = common.machine_facts()
    print(f"==> {facts['date']}: {facts['cpus']} x {facts['cpu_model']}, {facts['memory_gib']} GiB, load "
          f"{' '.join(f'{x:.2f}' for x in facts['load_average'])}; {'quick' if args.quick else 'full'} run of "
          f"{', '.join(selected)}", flush=True)
    pg = common.start_postgres() if NEEDS_PG & set(selected) else None
    failed: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    process: subprocess.Popen | None = None
    try:
        for bench in selected:
            for cmd in plan[bench]:
                name = result_name(cmd)
                out = results / f"{name}.json"
                out.unlink(missing_ok=True)
                full = [sys.executable, str(HERE / cmd[0]), *cmd[1:], "--json", str(out)]
                if pg is not None and name != "presign" and not (name == "cleanup-sqlite"):
                    full += ["--pg", pg.uri]
                print(f"\n==> {name}: {' '.join(cmd)}", flush=True)
                t = time.perf_counter()
                with open(results / f"{name}.log", "w") as log:
                    process = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                               cwd=common.ROOT)
                    for line in process.stdout:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                        log.write(line)
                    process.wait()
                timings[name] = time.perf_counter() - t
                if process.returncode != 0 or not out.exists():
                    failed.append(name)
                    print(f"==> {name} FAILED (exit {process.returncode}); see {results / (name + '.log')}", flush=True)
                else:
                    print(f"==> {name}: {timings[name]:.0f} s", flush=True)
    finally:
        if process is not None and process.poll() is None:  # stopped mid-benchmark: it stops its own servers
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if pg is not None:
            pg.stop()
    print(f"\n==> measured in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), flush=True)

    common.write_result("run", {"quick": args.quick, "selected": selected, "seconds": timings, "failed": failed,
                                "started_machine": facts}, results / "run.json")
    if not args.no_report:
        report_args = ["--results", str(results)]
        if args.quick:
            report_args += ["--output", str(results / "performance.md"), "--images", str(results / "img")]
        done = subprocess.run([sys.executable, str(HERE / "report.py"), *report_args], cwd=common.ROOT)
        if done.returncode != 0:
            failed.append("report")
    if failed:
        print(f"\n==> FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
