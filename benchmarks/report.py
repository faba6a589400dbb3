"""Render ``docs/performance.md`` and ``docs/img/perf-*.png`` from ``benchmarks/results/*.json``.

::

    .venv/bin/python benchmarks/report.py [--results DIR] [--output FILE] [--images DIR]

Every number in the report comes from the result files of one
``./run-benchmarks.sh`` run; the prose around them is this module's. Prints
the targets' ratio table at the end. A benchmark without a result file is
reported as not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import plots
from s3_tools import DOWNLOAD_CHECKS

GiB = common.GiB

MET_LABEL = {True: "yes", False: "**no**", None: "n/a (shown only)"}
"""A target's ``met``: ``None`` marks figures shown for context, not judged (the test emulator)."""


def load(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


class Report:
    """Markdown sections and the target rows, built from the results."""

    def __init__(self, data: dict[str, dict], images: Path, output: Path):
        self.data, self.images, self.output = data, images, output
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, bool | None, str]] = []  # (target, measured, met, why)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def image(self, path: Path, alt: str) -> None:
        self.add(f"![{alt}]({os.path.relpath(path, self.output.parent)})", "")

    def client_runs(self) -> dict[str, dict]:
        """The client results by S3, moto first."""
        runs = {k.removeprefix("client-"): v for k, v in self.data.items() if k.startswith("client-")}
        return dict(sorted(runs.items(), key=lambda kv: kv[0] != "moto"))

    # --- sections ----------------------------------------------------------------------------------

    def presign(self) -> None:
        d = self.data.get("presign")
        self.add("## Presigning UploadPart URLs", "")
        if not d:
            return self.add("Not run.", "")
        m = d["methods"]
        self.add(f"`benchmarks/bench_presign.py`: {d['parts']:,} URLs for one upload, median of {d['repeat']} "
                 "interleaved runs after a warm-up. The three real signers produce the same URL byte for byte at a "
                 "frozen instant (checked before timing).", "",
                 "| method | total ms | µs/URL | vs ours |", "|---|---:|---:|---:|")
        labels = {"ours batch": "ours, `SigV4Presigner.upload_part_urls` (one batch)",
                  "ours single": "ours, `upload_part_url` one by one",
                  "boto3": "boto3 `generate_presigned_url`", "invenio-s3": "invenio-s3 `multipart_links`",
                  "hmac floor": "HMAC floor: 4 HMAC-SHA256 + 1 SHA-256 per URL"}
        for name, row in m.items():
            self.add(f"| {labels.get(name, name)} | {row['median_ms']:.1f} | {row['us_per_url']:.2f} | "
                     f"{row['ratio_vs_ours']:.1f}x |")
        self.add("")
        self.image(plots.presign(d, self.images / "perf-presign.png"), "presign µs per URL")
        floor = m["hmac floor"]["us_per_url"] / m["ours batch"]["us_per_url"]
        self.add(f"Ours signs a URL in {floor:.1f}x less time than the \"floor\" of a signer that derives its key "
                 "for every URL: SigV4's signing key (`kDate -> kRegion -> kService -> kSigning`) depends only on "
                 "the day, region and secret, so it is derived once per UTC day and kept as pre-hashed HMAC states; "
                 "per URL only the canonical request's SHA-256 and one HMAC of the string to sign remain.", "")
        for label, ratio, threshold in (("boto3", m["boto3"]["ratio_vs_ours"], 50),
                                        ("invenio-s3 `multipart_links`", m["invenio-s3"]["ratio_vs_ours"], 100)):
            self.targets.append((f"presigning >= {threshold}x faster than {label}", f"{ratio:.0f}x",
                                 ratio >= threshold, ""))

    def scale(self) -> None:
        d = self.data.get("scale")
        self.add("## REST requests vs part count and file count", "")
        if not d:
            return self.add("Not run.", "")
        self.add(f"`benchmarks/bench_scale.py`: real HTTP to the API app under {d['server']}, PostgreSQL, moto "
                 f"(own process); parts of {d['part_size']} bytes (moto's and the app's minimum part size lowered so "
                 f"that 10,000 parts fit in memory). Client-side wall time with the body read; median of "
                 f"{d['repeat']} runs after a warm-up (complete at 10,000 parts: at most 3 runs). CPU columns: what "
                 "the app, PostgreSQL and moto spent during the request, from `/proc` (10 ms ticks, so small values "
                 "are coarse).", "",
                 "| request | parts / files | median ms | µs per part / file | app CPU ms | DB CPU ms "
                 "| S3 (moto) CPU ms | answer KB |", "|---|---:|---:|---:|---:|---:|---:|---:|")
        rows = [(op, int(n), r) for op, by in d["parts"].items() for n, r in by.items()]
        rows += [("list (`GET files/`)", int(n), r) for n, r in d["files"].items()]
        for op, n, r in rows:
            self.add(f"| {op} | {n:,} | {r['median_ms']:.1f} | {r['median_ms'] * 1e3 / n:.0f} | "
                     f"{r['app_cpu_ms']:.0f} | {r['db_cpu_ms']:.0f} | {r['s3_cpu_ms']:.0f} | "
                     f"{r['response_bytes'] / 1e3:,.1f} |")
        self.add("")
        self.image(plots.scale(d, self.images / "perf-scale.png"), "REST scale, log-log")
        comp = d["parts"].get("complete", {})
        big = max(comp, key=int) if comp else None
        if big:
            r = comp[big]
            self.add(f"Completing {int(big):,} parts took {r['median_ms']:.0f} ms, of which moto used "
                     f"{r['s3_cpu_ms']:.0f} ms of CPU (ListParts, 1,000 parts a page, and assembling the object) and "
                     f"the app {r['app_cpu_ms']:.0f} ms (botocore parsing the {int(big) // 1000 or 1} ListParts "
                     "pages, then comparing every part's number, ETag and size). "
                     "Init and re-sign answer one presigned URL per part, so they grow with the part count by "
                     "design; the time per part is the figure to watch.", "")
        files = d.get("files", {})
        if files:
            most = max(files, key=int)
            r = files[most]
            self.add(f"Listing {int(most):,} completed files took {r['median_ms']:.0f} ms, {r['app_cpu_ms']:.0f} ms "
                     "of it the app's CPU (each file's JSON with its links; the database did little).", "")

    def client(self) -> None:
        self.add("## Client: oarepo-s3 vs the fastest S3 tools", "")
        runs = self.client_runs()
        if not runs:
            return self.add("Not run.", "")
        self.add("`benchmarks/bench_client.py`: a file of random bytes uploaded, downloaded back (the bytes "
                 "compared) and deleted by every client with the same part size and parts in flight, each client a "
                 "subprocess with S3 keys and a bucket of its own; medians of the runs, in rotating order, after a "
                 "warm-up run of each. Client CPU is the subprocess's user + system time; S3 CPU is the server's "
                 "processes' (moto; Ceph's radosgw, OSD and monitor). `oarepo-s3` goes through the app (gunicorn, "
                 "PostgreSQL): it hashes every part (its digest signed into the part's URL, checked by S3) and "
                 "verifies the final checksum; its download hashes the bytes as they arrive and compares them with "
                 "the file's checksum. `oarepo-s3 via InvenioRDM` is the same client through records-resources' "
                 "multipart transfer (`--files-url`; the InvenioRDM stand-in of `benchmarks/rdm_app.py`, on our "
                 "storage, under gunicorn alike): Content-MD5 on every part, as records-resources' part links sign "
                 "no SHA-256. The S3 tools (`benchmarks/s3_tools.py`): aws-cli and boto3 (`when_required`: "
                 "no extra CRC32; on plain `http://` botocore signs each part's SHA-256, so they hash every byte "
                 "too), boto3's AWS CRT transfer manager (CRC32 of every part), s5cmd (Go's AWS SDK: each part's "
                 "SHA-256 signed on `http://`) and rclone (Content-MD5 of every part, the file's MD5 in its metadata, "
                 "checked after a download). The last two columns are oarepo-s3's ratio to "
                 "the row's client, in the same direction: speed above 1 and CPU below 1 are oarepo-s3's wins.", "")
        for s3, d in runs.items():
            cpus = d["machine"]["cpus"]
            self.add(f"### {d['s3']}: {d['size_mib']} MiB, parts of {d['part_size_mib']} MiB, {d['concurrency']} in "
                     f"flight, median of {d['repeat']}", "",
                     "| | wall s | MB/s | client CPU s/GiB | S3 server CPU s/GiB | machine busy, cores "
                     "| oarepo-s3's speed vs it | oarepo-s3's CPU vs it |",
                     "|---|---:|---:|---:|---:|---:|---:|---:|")
            for direction, by in d["results"].items():
                for method, r in by.items():
                    self.client_row(f"{direction} {method}", r, by["oarepo-s3"], cpus)
                if direction == "upload" and d.get("upload_without_sendfile"):
                    self.client_row("upload oarepo-s3 `--no-zero-copy`", d["upload_without_sendfile"],
                                    by["oarepo-s3"], cpus)
            for name, floor in self.hash_floors(d).items():
                self.add(f"| {dict(md5='MD5', sha256='SHA-256').get(name, name)} alone (hashlib) "
                         f"| | | {floor:.2f} | | | | |")
            self.add("", "`oarepo-s3` had S3 verify its parts with "
                     f"{', '.join(d.get('checksum_algorithms') or ['md5'])}"
                     " (its `--checksum` default) and sent them with `os.sendfile` (the `--no-zero-copy` row sends "
                     "them through requests instead); `--no-verify` is its download without the integrity check. "
                     "Versions: " + ", ".join(f"{k} {d['versions'][k]}" for k in ("awscli", "boto3", "awscrt",
                                                                                  "s5cmd", "rclone")
                                              if k in d.get("versions", {})) + ".", "")
            self.client_targets(s3, d)
        self.image(plots.client(runs, self.images / "perf-client.png"), "client throughput and CPU")

    def browser(self) -> None:
        self.add("## The web page vs the CLI", "")
        runs = {k.removeprefix("browser-"): v for k, v in self.data.items() if k.startswith("browser-")}
        runs = dict(sorted(runs.items(), key=lambda kv: kv[0] != "moto"))
        if not runs:
            return self.add("Not run.", "")
        any_run = next(iter(runs.values()))
        self.add(f"`benchmarks/bench_browser.py`: {any_run['size_mib']} MiB of random bytes uploaded by the demo's "
                 f"page in headless Chromium {any_run['chromium']} (Playwright; signed in through the page's form, "
                 "the file picked in the Dashboard, timed from the Upload click to Uppy's success) and by "
                 "`oarepo-s3 upload` (a subprocess, its interpreter's start included), through the same app "
                 "(gunicorn, one worker, 8 threads, PostgreSQL; it serves the page too) to the same S3; median of "
                 f"{any_run['repeat']} runs, the two in alternating order, after a warm-up. App requests are the app's "
                 "WSGI counters (the page's file list after the upload included). Client CPU: every Chromium "
                 "process, or the CLI's subprocess. After every upload S3's ETag, the object's size and the API's "
                 "checksum are checked against the file's bytes.", "")
        for s3, d in runs.items():
            self.add(f"### {d['s3']}", "",
                     "| | part MiB | wall s | MB/s | app requests | per GiB | client CPU s/GiB | app CPU s "
                     "| S3 server CPU s/GiB | machine busy, cores |",
                     "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for method, r in d["results"].items():
                self.add(f"| {'web page (Chromium)' if method == 'browser' else method} | {r['part_size_mib']:.0f} | "
                         f"{r['wall_s']:.2f} | {r['throughput_mb_s']:.0f} | {r['app_requests']:.0f} | "
                         f"{r['app_requests_per_gib']:.1f} | {r['client_cpu_s_per_gib']:.2f} | {r['app_cpu_s']:.2f} | "
                         f"{r['s3_cpu_s_per_gib']:.2f} | {fmt(r.get('machine_busy_cores'), 2)} of "
                         f"{d['machine']['cpus']} |")
            ratios = d["ratios"]
            self.add("", f"Browser / CLI: {ratios['throughput']:.2f}x the throughput, {ratios['app_requests']:.2f}x "
                     f"the app requests per GiB, {ratios['client_cpu']:.2f}x the client CPU per GiB.", "")
            judged = s3 != "moto"
            page, cli = d["results"]["browser"], d["results"]["oarepo-s3"]
            by_thread = page.get("client_cpu_s_per_gib_by_thread")
            if by_thread:
                shown = sorted(((t, v) for t, v in by_thread.items() if v >= 0.05), key=lambda tv: -tv[1])
                self.add("Chromium's CPU s/GiB by process and thread (`renderer DedicatedWorker`: the page's hashing "
                         "workers, reading each part and hashing it; `renderer chromium`: the page's main thread; "
                         "`Chrome_IOThread` and `ThreadPoolForeg`: IPC, file reads and socket writes): "
                         + ", ".join(f"{t} {v:.2f}" for t, v in shown) + ".", "")
            gib_s = page["throughput_mb_s"] * 1e6 / GiB
            size = d["size_mib"] * 2**20
            per_gib = {m: r["client_cpu_s_per_gib"] + r["s3_cpu_s_per_gib"] + r["app_cpu_s"] * GiB / size
                       for m, r in (("page", page), ("cli", cli))}
            why = (f"during the page's upload Chromium kept {page['client_cpu_s_per_gib'] * gib_s:.2f} cores busy "
                   f"({page['client_cpu_s_per_gib']:.2f} CPU s/GiB: reading every part twice, for its MD5 and to send "
                   f"it, hashing, the network stack, the page; the CLI {cli['client_cpu_s_per_gib']:.2f}), the S3 "
                   f"server {page['s3_cpu_s_per_gib'] * gib_s:.2f}; the whole machine was "
                   f"{fmt(page.get('machine_busy_cores'), 2)} of {d['machine']['cpus']} cores busy. In all the page's "
                   f"upload cost {per_gib['page']:.1f} CPU s/GiB (browser, S3, app), the CLI's {per_gib['cli']:.1f}: "
                   f"on a saturated machine that is {per_gib['cli'] / per_gib['page']:.2f}x the CLI's speed at best.")
            if not judged:
                why = ("moto is the test emulator: Python under one GIL, it caps every client's throughput; the "
                       f"page's target is judged on Ceph RGW. Here: {why}")
            self.targets.append((f"web page upload >= 0.8x `oarepo-s3 upload` throughput ({d['s3']})",
                                 f"{ratios['throughput']:.2f}x", ratios["throughput"] >= 0.8 if judged else None, why))
            self.targets.append((f"web page app requests per GiB <= 2x `oarepo-s3 upload`'s ({d['s3']})",
                                 f"{ratios['app_requests']:.2f}x", ratios["app_requests"] <= 2, ""))
        self.image(plots.browser(runs, self.images / "perf-browser.png"), "web page vs CLI upload throughput")

    @staticmethod
    def hash_floors(d: dict) -> dict[str, float]:
        return d.get("hash_cpu_s_per_gib") or {"md5": d.get("md5_cpu_s_per_gib", 0.0)}

    def client_row(self, label: str, r: dict, ours: dict, cpus: int) -> None:
        """One client's line of the table, with oarepo-s3's ratios to it."""
        self.add(f"| {label} | {r['wall_s']:.2f} | {r['throughput_mb_s']:.0f} | "
                 f"{r['cpu_s_per_gib']:.2f} | {r['s3_cpu_s_per_gib']:.2f} | "
                 f"{fmt(r.get('machine_busy_cores'), 2)} of {cpus} | "
                 f"{ours['throughput_mb_s'] / r['throughput_mb_s']:.2f}x | "
                 f"{ours['cpu_s_per_gib'] / r['cpu_s_per_gib']:.2f}x |")

    def client_targets(self, s3: str, d: dict) -> None:
        judged = s3 != "moto"
        emulator = (
            "moto is the test emulator, not an S3 server to be fast against: it checks no digest (neither "
            "Content-MD5 nor a signed SHA-256), so oarepo-s3 hashes MD5 to compare each part's ETag itself "
            f"({self.hash_floors(d).get('md5', 0.0):.2f} CPU s/GiB alone), and moto, Python under one GIL, caps "
            "every client's throughput. These targets are judged on the real S3 server (Ceph RGW).")
        for direction, by in d["results"].items():
            ours = by["oarepo-s3"]
            tools = {m: r for m, r in by.items() if not m.startswith("oarepo-s3")}
            fastest = max(tools, key=lambda m: tools[m]["throughput_mb_s"])
            leanest = min(tools, key=lambda m: tools[m]["cpu_s_per_gib"])
            speed = ours["throughput_mb_s"] / tools[fastest]["throughput_mb_s"]
            cpu = ours["cpu_s_per_gib"] / tools[leanest]["cpu_s_per_gib"]
            why_speed = "" if speed >= 1 else self.why_slower(s3, d, direction, ours)
            unchecked = by.get("oarepo-s3 --no-verify")
            if why_speed and direction == "download" and unchecked:
                why_speed += (f" Our download hashes every byte (MD5, {self.hash_floors(d).get('md5', 0.0):.2f} CPU "
                              f"s/GiB alone) to check it against the file's checksum; {fastest} "
                              f"{DOWNLOAD_CHECKS.get(fastest, 'checks nothing')}. "
                              f"Without the check (`--no-verify`, same run): {unchecked['throughput_mb_s']:.0f} MB/s, "
                              f"{unchecked['throughput_mb_s'] / tools[fastest]['throughput_mb_s']:.2f}x {fastest}'s, "
                              f"at {unchecked['cpu_s_per_gib'] / tools[leanest]['cpu_s_per_gib']:.2f}x "
                              f"{leanest}'s CPU per GiB.")
            why_cpu = "" if cpu <= 1 else self.why_more_cpu(d, direction, by, tools[leanest], leanest)
            self.targets.append((f"client {direction} throughput >= the fastest S3 tool's ({d['s3']}: {fastest})",
                                 f"{speed:.2f}x", speed >= 1 if judged else None,
                                 why_speed if judged else emulator + (f" Here: {why_speed}" if why_speed else "")))
            self.targets.append((f"client {direction} CPU per GiB <= the leanest S3 tool's ({d['s3']}: {leanest})",
                                 f"{cpu:.2f}x", cpu <= 1 if judged else None, why_cpu if judged else emulator))
        up = d["results"]["upload"]
        ours, aws = up["oarepo-s3"], up["aws-cli"]
        speed = ours["throughput_mb_s"] / aws["throughput_mb_s"]
        cpu = ours["cpu_s_per_gib"] / aws["cpu_s_per_gib"]
        if judged:
            self.targets.append((f"client upload >= 1.2x aws-cli throughput ({d['s3']})", f"{speed:.2f}x",
                                 speed >= 1.2, "" if speed >= 1.2 else self.why_slower(s3, d, "upload", ours)))
            self.targets.append((f"client upload <= 0.5x aws-cli CPU per GiB ({d['s3']})", f"{cpu:.2f}x",
                                 cpu <= 0.5, "" if cpu <= 0.5 else self.why_more_cpu(d, "upload", up, aws, "aws-cli")))
        else:  # the embedded S3 of the demo: no slower than aws-cli with the same settings
            self.targets.append((f"client upload >= aws-cli throughput on the demo's S3 ({d['s3']}, "
                                 f"{d['size_mib']} MiB, {d['part_size_mib']} MiB parts, {d['concurrency']} in flight)",
                                 f"{speed:.2f}x", speed >= 1, "" if speed >= 1 else self.why_slower(s3, d, "upload",
                                                                                                   ours)))
        for direction, p in d["payload"].items():
            payload = p["non_json_request_body_bytes"] + p["non_json_response_body_bytes"]
            self.targets.append((f"payload bytes through the app, {d['size_mib']} MiB {direction} ({d['s3']})",
                                 f"{payload} B", payload == 0, ""))

    def why_slower(self, s3: str, d: dict, direction: str, ours: dict) -> str:
        """Where the cores went during our transfer: what saturated, from the run's own meters."""
        cores = d["machine"]["cpus"]
        gib_s = ours["throughput_mb_s"] * 1e6 / GiB
        s3_busy, client_busy = ours["s3_cpu_s_per_gib"] * gib_s, ours["cpu_s_per_gib"] * gib_s
        app_busy = ours["app_cpu_s"] / ours["wall_s"]
        ours_busy = s3_busy + client_busy + app_busy
        busy = ours.get("machine_busy_cores") or ours_busy
        others = max(0.0, busy - ours_busy)
        why = (f"during our {direction} the S3 server kept {s3_busy:.2f} of the {cores} cores busy, the client "
               f"{client_busy:.2f}, the app {app_busy:.2f}; the whole machine was {busy:.2f} cores busy "
               f"(other processes: {others:.2f}). ")
        if busy >= 0.85 * cores:
            return why + (f"The {cores} cores were saturated"
                          + (", most of them by the S3 server" if s3_busy >= 0.5 * busy else "")
                          + ", so the client's own CPU per GiB decided the pace"
                          + (f"; other processes of the shared machine took {others:.2f} cores, in every "
                             "client's runs alike." if others >= 0.15 else "."))
        if s3_busy >= 0.8:
            return why + ("The S3 server is the bottleneck: moto serves requests in Python under one GIL, about "
                          "one core at most, whichever client sends them." if s3 == "moto"
                          else "The S3 server is the bottleneck.")
        return why + "Neither the S3 server nor the machine was saturated: the client itself is the limit."

    def why_more_cpu(self, d: dict, direction: str, by: dict, best: dict, best_name: str) -> str:
        """How much of our CPU per GiB is the hashing that the integrity checks need."""
        ours = by["oarepo-s3"]
        if direction == "download":
            unchecked = by.get("oarepo-s3 --no-verify")
            if unchecked is None:
                return ""
            return (f"our download hashes every byte (MD5) to compare it with the file's checksum: "
                    f"{ours['cpu_s_per_gib']:.2f} CPU s/GiB with it, {unchecked['cpu_s_per_gib']:.2f} without it "
                    f"(`--no-verify`), {unchecked['cpu_s_per_gib'] / best['cpu_s_per_gib']:.2f}x {best_name}'s "
                    f"({best_name} {DOWNLOAD_CHECKS.get(best_name, 'checks nothing')}).")
        algorithm = (d.get("checksum_algorithms") or ["md5"])[0]
        floor = self.hash_floors(d).get(algorithm, 0.0)
        label = {"md5": "MD5", "sha256": "SHA-256"}.get(algorithm, algorithm)
        return (f"of our {ours['cpu_s_per_gib']:.2f} CPU s/GiB, {floor:.2f} are {label} alone "
                f"(every part is hashed so that S3 can verify it); without it "
                f"{ours['cpu_s_per_gib'] - floor:.2f} s/GiB, "
                f"{(ours['cpu_s_per_gib'] - floor) / best['cpu_s_per_gib']:.2f}x {best_name}'s.")

    def payload(self) -> None:
        self.add("## Payload bytes through the app", "")
        runs = self.client_runs()
        if not runs:
            return self.add("Not run.", "")
        self.add("The app under gunicorn counts every request and response body byte at the WSGI level "
                 "(`benchmarks/wsgi.py`); these are the counts during one `oarepo-s3 upload` and one "
                 "`oarepo-s3 download` of the file above (the largest of the runs), through our API and through "
                 "records-resources' files API (the InvenioRDM stand-in, its own app). Control bytes are JSON (and "
                 "the short page of the 302 redirect); payload bytes are any other body bytes.", "",
                 "| S3 | transfer | file bytes | app requests | request bytes declared | bytes read | bytes sent | "
                 "payload bytes |",
                 "|---|---|---:|---:|---:|---:|---:|---:|")
        for _, d in runs.items():
            for direction, p in d["payload"].items():
                payload = p["non_json_request_body_bytes"] + p["non_json_response_body_bytes"]
                self.add(f"| {d['s3']} | {direction} | {d['size_mib'] * common.MiB:,} | {p['requests']} | "
                         f"{p.get('declared_request_body_bytes', 0):,} | {p['request_body_bytes']:,} | "
                         f"{p['response_body_bytes']:,} | **{payload}** |")
        self.add("")
        checks = [d["counter_check"] for d in runs.values() if d.get("counter_check")]
        if checks:
            c = checks[0]
            self.add(f"The counters do see payload: before these runs, {c['non_json_request_body_bytes']:,} bytes "
                     f"of octet-stream sent through the app's echo route counted {c['non_json_request_body_bytes']:,}"
                     f" payload bytes in and {c['non_json_response_body_bytes']:,} out.", "")

    def concurrency(self) -> None:
        d = self.data.get("concurrency")
        self.add("## REST throughput under concurrency", "")
        if not d:
            return self.add("Not run.", "")
        self.add(f"`benchmarks/bench_concurrency.py`: {d['clients']} users upload at once, each from its own thread "
                 f"with its own token and draft, {d['uploads_per_client']} uploads each after one untimed warm-up "
                 f"upload: {'one baseline request, ' if 'control_plane' in d else ''}init ({d['parts']} parts of "
                 f"{d['part_size']} bytes), re-sign all parts, PUT the parts "
                 f"straight to S3, complete. The app runs under gunicorn with {d['workers']} sync workers on "
                 "PostgreSQL; S3 is moto. The per-user signing rate limit is off (this measures capacity).", "",
                 f"**{d['app_requests_per_s']:.0f} app requests/s** ({d['app_requests']:,} requests in "
                 f"{d['wall_s']:.1f} s), {d['uploads_per_s']:.1f} completed uploads/s.", "",
                 "| endpoint | requests | per s | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|")
        for name, e in d["endpoints"].items():
            self.add(f"| {name} | {e['count']:,} | {e['per_second']:.1f} | {e['p50_ms']:.0f} | {e['p99_ms']:.0f} | "
                     f"{e['max_ms']:.0f} |")
        total = d["wall_s"] * d["machine"]["cpus"]
        busy = sum(d["cpu_s"].values())
        self.add("", "CPU seconds during the timed phase (" + f"{total:.0f} available on {d['machine']['cpus']} cores, "
                 f"{busy:.0f} used): " + ", ".join(f"{k} {v:.1f}" for k, v in d["cpu_s"].items()) + ".", "")
        alone = self.data.get("scale", {}).get("parts", {}).get("init", {}).get("10")
        others = d["cpu_s"].get("other processes on the machine", 0.0)
        if alone:
            self.add(f"Alone, an init of 10 parts takes {alone['median_ms']:.0f} ms (see the scale section); here its "
                     f"p50 is {d['endpoints']['init']['p50_ms']:.0f} ms: with {d['clients']} clients and "
                     f"{d['workers']} workers, most of a request's time is spent waiting for a free worker and for "
                     "the cores, which the app shares with PostgreSQL, moto and the clients"
                     + (f" and, during this run, other processes on the shared machine ({others:.0f} CPU s of "
                        f"{busy:.0f})." if others >= 0.1 * busy else "."), "")
        self.control_plane(d)
        self.control_plane_profile()
        self.image(plots.concurrency(d, self.images / "perf-concurrency.png"), "latency under concurrency")

    def control_plane(self, d: dict) -> None:
        """App CPU per request type, side by side with the baseline endpoint, and the 2x targets."""
        cp = d.get("control_plane")
        if not cp:
            return
        limit = d.get("target_vs_baseline", 2.0)
        labels = {"init": f"init ({d['parts']} parts)", "sign": f"sign ({d['parts']} parts)", "complete": "complete",
                  "baseline": "baseline: token auth, one ORM read, small JSON"}
        self.add("### The control plane: app CPU per request", "",
                 "Each gunicorn worker measures the CPU time of its own thread around every request (the WSGI call "
                 "and the response body: `benchmarks/wsgi.py`), summed by request type over the timed phase above. "
                 "The baseline is a benchmark-only endpoint of the same app: the same bearer-token login and "
                 "identity loading as the API, one ORM read (the draft's record row by its PID) and a small JSON "
                 "answer, the floor of any authenticated Invenio endpoint. "
                 f"In these requests: {d['control_plane_cpu_s']:.1f} CPU s of the app's "
                 f"{d['cpu_s']['app (gunicorn)']:.1f} (the rest is gunicorn's own, around the requests).", "",
                 "Each request's CPU is also split (each part outside the others): **auth** is invenio-oauth2server's "
                 "token check with flask-login's user and invenio-access's identity, their queries included "
                 "(Invenio's, the same in every request); **S3** the control calls through botocore; **SQL** the "
                 "database driver; the **rest** is Flask, SQLAlchemy's ORM, Invenio's models and our code.", "",
                 "| request type | requests | app CPU ms/request | vs baseline | auth | S3 | SQL | rest | GC |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, c in cp.items():
            self.add(f"| {labels.get(name, name)} | {c['count']:,} | {fmt(c['cpu_ms'], 2)} | "
                     f"{fmt(c['vs_baseline'], 2)}x | " + " | ".join(fmt(c.get(f"{k}_ms"), 2) for k in
                                                                   ("auth", "s3", "sql", "rest", "gc")) + " |")
        self.add("")
        base = cp["baseline"]
        for name in ("init", "sign", "complete"):
            c, ratio = cp[name], cp[name]["vs_baseline"]
            why = (f"of its {fmt(c['cpu_ms'], 2)} ms, {fmt(c.get('auth_ms'), 2)} are the token check (the "
                   f"baseline's: {fmt(base.get('auth_ms'), 2)}), {fmt(c.get('s3_ms'), 2)} the S3 control calls "
                   f"through botocore, {fmt(c.get('sql_ms'), 2)} the database driver and {fmt(c.get('rest_ms'), 2)} "
                   f"Flask, the ORM and our code (the baseline's: {fmt(base.get('rest_ms'), 2)})")
            profiled = self.data.get("profile_control_plane", {}).get("requests", {})
            profile = profiled.get(name)
            if profile:
                pkgs, base_sql = profile["by_package_ms"], profiled["baseline"]["by_package_ms"].get("sqlalchemy", 0)
                why += (f". By the profile (below: {fmt(profile['cpu_ms_median'], 2)} ms in one process), the code "
                        f"that runs is SQLAlchemy's for {fmt(pkgs.get('sqlalchemy', 0), 2)} ms (the baseline's: "
                        f"{fmt(base_sql, 2)}), "
                        f"botocore's and urllib3's for {fmt(pkgs.get('botocore', 0) + pkgs.get('urllib3', 0), 2)} "
                        f"and oarepo_s3's own for {fmt(pkgs.get('oarepo_s3', 0), 2)}")
            self.targets.append((f"{labels[name]}: app CPU per request <= {limit:g}x the baseline's",
                                 f"{fmt(ratio, 2)}x", None if ratio is None else ratio <= limit, why))

    def control_plane_profile(self) -> None:
        """Where each request type's CPU goes, by the package that spends it (``profile_control_plane.py``)."""
        d = self.data.get("profile_control_plane")
        if not d:
            return
        kinds = [k for k in ("baseline", "init", "sign", "complete") if k in d["requests"]]
        shown: dict[str, float] = {}
        for kind in kinds:
            for pkg, ms in d["requests"][kind]["by_package_ms"].items():
                shown[pkg] = max(shown.get(pkg, 0.0), ms)
        packages = [p for p, ms in sorted(shown.items(), key=lambda kv: -kv[1]) if ms >= 0.1]
        self.add("### Where the control plane's CPU goes, by package", "",
                 f"`benchmarks/profile_control_plane.py`: the same app in one process on PostgreSQL and moto, driven "
                 f"by Flask's test client, {d['uploads']} uploads of {d['parts']} parts timed, then {d['uploads']} "
                 "more under cProfile timed by thread CPU (waits for S3 and the database are not in it). Each "
                 "function's own CPU is credited to its package; the standard library's and built-ins' to the "
                 "package that called them (`json` under Flask is Flask's, `http.client` under urllib3 urllib3's). "
                 "The profile's shares are applied to the request's unprofiled CPU (median). Unlike the table "
                 "above, which charges work to whoever asked for it (the token check's queries are *auth*), this "
                 "one charges it to the code that ran: the token check's queries are SQLAlchemy's.", "",
                 "| package (ms per request) | " + " | ".join(kinds) + " |",
                 "|---|" + "---:|" * len(kinds))
        for pkg in packages:
            self.add(f"| {pkg} | " + " | ".join(fmt(d["requests"][k]["by_package_ms"].get(pkg), 2)
                                                if pkg in d["requests"][k]["by_package_ms"] else "-"
                                                for k in kinds) + " |")
        self.add("| **all (unprofiled median)** | " + " | ".join(f"**{fmt(d['requests'][k]['cpu_ms_median'], 2)}**"
                                                                for k in kinds) + " |", "")
        floor = d.get("s3_call_floor_ms")
        if floor and "complete" in d["requests"] and "baseline" in d["requests"]:
            saved = 3 * (floor["botocore_call"] - floor["presigned_call"])
            complete, baseline = d["requests"]["complete"]["cpu_ms_median"], d["requests"]["baseline"]["cpu_ms_median"]
            verdict = ("enough" if complete - saved <= 2 * baseline else "not enough")
            self.add(f"One S3 control call (ListParts of 10 parts against moto), CPU per call: "
                     f"{fmt(floor['botocore_call'], 2)} ms through boto3, {fmt(floor['presigned_call'], 2)} ms for the "
                     "same request presigned by `oarepo_s3.presign` and sent with urllib3: the floor of any S3 client "
                     "(HTTP and XML). At that floor the three calls of a completion (ListParts, "
                     f"CompleteMultipartUpload, HeadObject) would cost {fmt(saved, 2)} ms less: complete "
                     f"{fmt(complete - saved, 2)} ms against the baseline's {fmt(baseline, 2)}, "
                     f"{fmt((complete - saved) / baseline, 2)}x, {verdict} for the 2x target.", "")

    def cleanup(self) -> None:
        self.add("## Cleanup of expired uploads", "")
        runs = {k.removeprefix("cleanup-"): v for k, v in self.data.items() if k.startswith("cleanup-")}
        if not runs:
            return self.add("Not run.", "")
        self.add("`benchmarks/bench_cleanup.py`: that many expired sessions, each a real multipart upload in moto "
                 "(own process), ten to a bucket; one `run_cleanup` (the Celery task's body) expires them all; "
                 "afterwards every session is expired, S3 holds no upload and the buckets' sizes are back to 0. "
                 "Memory: the process's peak RSS during the run (the whole Invenio app included) and its growth "
                 "over the RSS at the start.", "",
                 "| database | sessions | time s | sessions/s | ms/session: S3 abort | SQL | commit | rest | "
                 "SQL statements/session | own CPU s | moto CPU s | DB CPU s | machine busy, cores | peak RSS MiB | "
                 "RSS growth MiB |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for db, d in runs.items():
            for r in d["rows"]:
                per = {k: r[k] / r["count"] * 1e3 for k in ("s3_abort_seconds", "sql_execute_seconds",
                                                            "sql_commit_seconds", "other_seconds")}
                self.add(f"| {db} | {r['count']:,} | {r['seconds']:.1f} | {r['per_second']:.0f} | "
                         f"{per['s3_abort_seconds']:.1f} | {per['sql_execute_seconds']:.1f} | "
                         f"{per['sql_commit_seconds']:.1f} | {per['other_seconds']:.1f} | "
                         f"{r['sql_statements_per_session']} | {r['process_cpu_seconds']:.1f} | "
                         f"{r['s3_server_cpu_seconds']:.1f} | {fmt(r.get('db_server_cpu_seconds'))} | "
                         f"{fmt(r['machine_cpu_seconds'] / r['seconds'] if 'machine_cpu_seconds' in r else None, 2)} | "
                         f"{fmt(r['peak_rss_bytes'] / common.MiB if 'peak_rss_bytes' in r else None)} | "
                         f"{r['rss_growth_bytes'] / common.MiB:.1f} |")
        self.add("")
        for db, d in runs.items():
            for r in d["rows"]:
                if r.get("sql_slowest"):
                    self.add(f"- {db}, {r['count']:,} sessions, the statements that took longest (per session): "
                             + "; ".join(f"`{x['statement']}` x{x['per_session']:g}, {x['ms_per_session']:.2f} ms"
                                         for x in r["sql_slowest"]))
        self.add("")
        self.image(plots.cleanup({db: d["rows"] for db, d in runs.items()}, self.images / "perf-cleanup.png"),
                   "cleanup time per session")
        statements = next(iter(runs.values()))["rows"][0]["sql_statements_per_session"]
        big = max((r for d in runs.values() for r in d["rows"]), key=lambda r: r["count"])
        self.add(f"At {big['count']:,} sessions, {big['process_cpu_seconds']:.0f} of the {big['seconds']:.0f} s were "
                 "the cleanup process's own CPU (Python), and the machine was "
                 f"{big.get('machine_cpu_seconds', 0) / big['seconds']:.2f} cores busy in all: one run expires one "
                 "session at a time, on about one core. Workers run side by side (`SKIP LOCKED`), so several divide "
                 "a backlog between them.", "")
        self.add("Each session is expired in its own short transaction (claim with `FOR UPDATE SKIP LOCKED`, abort "
                 "in S3, remove the pending ObjectVersion and FileInstance, give the bucket its size back, mark the "
                 f"session): one S3 call, {statements:g} SQL statements and one commit per session, so the time "
                 "per session should not grow with the backlog, and memory should stay flat (see the table). "
                 "\"rest\" is Python in the cleanup's process: "
                 "SQLAlchemy's ORM (lazy loads, flushes) and files-rest's model code around those statements, and "
                 "botocore. moto answers every request with `Connection: close`, so each abort also opens a new TCP "
                 "connection; a real S3 keeps connections alive.", "")

    def rdm(self) -> None:
        d = self.data.get("rdm")
        self.add("## InvenioRDM's multipart transfer: ours vs invenio-s3", "")
        if not d:
            return self.add("Not run.", "")
        self.add(f"`benchmarks/bench_rdm.py`: invenio-records-resources' own FileService and FileResource "
                 f"(the app of `tests/rdm`) under {d['server']}, PostgreSQL, moto (own process); parts of "
                 f"{d['part_size']} bytes. One pending \"M\" file per storage: `GET files/<key>`, whose answer "
                 "records-resources builds by asking the storage's `multipart_links` for every part's URL, and that "
                 f"call alone (in-process); medians of {d['repeat']} runs after a warm-up, the two storages in "
                 "alternating order. Then every part is PUT to S3 (untimed) and the file committed (one run each; "
                 "records-resources' checksum task is queued, not run).", "",
                 "| parts | GET file: ours ms | invenio-s3 ms | ratio | `multipart_links`: ours ms | invenio-s3 ms | "
                 "ratio | answer MB | commit: ours ms | invenio-s3 ms |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in map(str, d["parts"]):
            get = {s: d["links"][s][n]["median_ms"] for s in ("ours", "invenio-s3")}
            alone = {s: d["storage_links"][s][n]["median_ms"] for s in ("ours", "invenio-s3")}
            commit = {s: d["commit"][s][n]["ms"] for s in ("ours", "invenio-s3")}
            self.add(f"| {int(n):,} | {get['ours']:.1f} | {get['invenio-s3']:.0f} | "
                     f"{get['invenio-s3'] / get['ours']:.0f}x | {alone['ours']:.1f} | {alone['invenio-s3']:.0f} | "
                     f"{alone['invenio-s3'] / alone['ours']:.0f}x | "
                     f"{d['links']['ours'][n]['response_bytes'] / 1e6:.1f} | {commit['ours']:.0f} | "
                     f"{commit['invenio-s3']:.0f} |")
        self.add("")
        big = str(max(d["parts"]))
        get = {s: d["links"][s][big]["median_ms"] for s in ("ours", "invenio-s3")}
        alone = {s: d["storage_links"][s][big]["median_ms"] for s in ("ours", "invenio-s3")}
        rest = get["ours"] - alone["ours"]
        self.add(f"At {int(big):,} parts invenio-s3 signs each URL with botocore "
                 f"({alone['invenio-s3'] * 1e3 / int(big):.0f} µs per part); ours "
                 f"{alone['ours'] * 1e3 / int(big):.1f} µs per part, the session read included. "
                 f"The rest of our GET, {rest:.0f} ms, is the same for both storages: records-resources and "
                 f"flask-resources turning {d['links']['ours'][big]['response_bytes'] / 1e6:.1f} MB of part links into "
                 "JSON, and sending it. Our commit lists S3's parts (1,000 a page), checks every number and size and "
                 "the final object's size before completing; invenio-s3 completes with what S3 lists, unchecked.", "")
        ratio = alone["invenio-s3"] / alone["ours"]
        self.targets.append((f"InvenioRDM part links (`multipart_links`, {int(big):,} parts) >= 100x faster than "
                             "invenio-s3", f"{ratio:.0f}x", ratio >= 100, ""))
        whole = get["invenio-s3"] / get["ours"]
        answer_mb = d["links"]["ours"][big]["response_bytes"] / 1e6
        self.targets.append(("the whole `GET files/<key>` of that file vs invenio-s3", f"{whole:.0f}x", None,
                             f"{rest:.0f} of our {get['ours']:.0f} ms are records-resources' JSON of the answer "
                             f"({answer_mb:.1f} MB) and sending it, the same for both storages."))

    def render(self) -> str:
        run = self.data.get("run", {})
        machine = run.get("started_machine") or next((d["machine"] for d in self.data.values() if "machine" in d), {})
        self.presign()
        self.scale()
        self.client()
        self.browser()
        self.payload()
        self.concurrency()
        self.cleanup()
        self.rdm()
        body = self.lines
        self.lines = []
        versions = {}
        for d in self.data.values():
            versions.update(d.get("versions", {}))
        self.add("# Performance", "",
                 "<!-- Generated by ./run-benchmarks.sh (benchmarks/report.py) from benchmarks/results/*.json: "
                 "do not edit by hand. -->", "",
                 f"Measured side by side in one run of `./run-benchmarks.sh` on {machine.get('date', '?')}: "
                 f"{machine.get('cpus', '?')} cores ({machine.get('cpu_model', '?')}), "
                 f"{machine.get('memory_gib', '?')} GiB RAM, Linux {machine.get('kernel', '?')}, Python "
                 f"{machine.get('python', '?')}; load average at the start "
                 f"{', '.join(f'{x:.2f}' for x in machine.get('load_average', []))}. The machine is shared with "
                 "other work, so absolute numbers are noisy: every comparison is a ratio of medians measured in the "
                 "same run, in a rotating order, after a warm-up.", "")
        if run.get("seconds"):
            self.add("Benchmark durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in run["seconds"].items())
                     + (f"; **failed: {', '.join(run['failed'])}**" if run.get("failed") else "") + ".", "")
        self.add("## Targets", "", "| target | measured | met |", "|---|---:|:---:|")
        for target, measured, met, _ in self.targets:
            self.add(f"| {target} | {measured} | {MET_LABEL[met]} |")
        self.add("")
        for which, heading in ((False, "Where a target is missed, why (from the same run's measurements):"),
                               (None, "Shown, not judged:")):
            notes = [(t, why) for t, _, met, why in self.targets if met is which]
            if notes:
                self.add(heading, "")
                for target, why in notes:
                    self.add(f"- **{target}**: {why or 'see the section below.'}")
                self.add("")
        self.lines += body
        self.add("## Versions", "", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), "",
                 "## Reproduce", "",
                 "```bash",
                 "./run-benchmarks.sh                 # everything, ~20 min on 2 cores; rewrites this page",
                 "./run-benchmarks.sh --quick         # small sizes, a few minutes; "
                 "report in benchmarks/results/quick/",
                 "./run-benchmarks.sh --only presign,client",
                 "```", "",
                 "Each `benchmarks/bench_*.py` also runs alone (`--help`); raw numbers, every run included, are in "
                 "`benchmarks/results/*.json`. `benchmarks/bench_rest.py` breaks one in-process init / re-sign "
                 "request down into S3, SQL, ORM, signing and JSON time.", "")
        return "\n".join(self.lines)


def print_ratios(data: dict[str, dict]) -> None:
    """Every side-by-side ratio of the run, one line each."""
    rows = []
    if "presign" in data:
        for name, m in data["presign"]["methods"].items():
            if name != "ours batch":
                rows.append((f"presign {name} / ours batch (time)", m["ratio_vs_ours"]))
    for key in sorted(k for k in data if k.startswith("client-")):
        d = data[key]
        for direction, by in d["results"].items():
            ours = by["oarepo-s3"]
            for other in (m for m in by if not m.startswith("oarepo-s3")):
                rows.append((f"{d['s3']}: {direction} oarepo-s3 / {other} (throughput)",
                             ours["throughput_mb_s"] / by[other]["throughput_mb_s"]))
                rows.append((f"{d['s3']}: {direction} oarepo-s3 / {other} (client CPU per GiB)",
                             ours["cpu_s_per_gib"] / by[other]["cpu_s_per_gib"]))
    for key in sorted(k for k in data if k.startswith("browser-")):
        d = data[key]
        rows.append((f"{d['s3']}: upload web page / oarepo-s3 (throughput)", d["ratios"]["throughput"]))
        rows.append((f"{d['s3']}: upload web page / oarepo-s3 (app requests per GiB)", d["ratios"]["app_requests"]))
        rows.append((f"{d['s3']}: upload web page / oarepo-s3 (client CPU per GiB)", d["ratios"]["client_cpu"]))
    for name, c in data.get("concurrency", {}).get("control_plane", {}).items():
        if name != "baseline" and c.get("vs_baseline") is not None:
            rows.append((f"concurrency: {name} / baseline (app CPU per request, mean)", c["vs_baseline"]))
    if "rdm" in data:
        d = data["rdm"]
        for n in map(str, d["parts"]):
            rows.append((f"rdm {n} parts: GET file invenio-s3 / ours (time)",
                         d["links"]["invenio-s3"][n]["median_ms"] / d["links"]["ours"][n]["median_ms"]))
            rows.append((f"rdm {n} parts: multipart_links invenio-s3 / ours (time)",
                         d["storage_links"]["invenio-s3"][n]["median_ms"] / d["storage_links"]["ours"][n]["median_ms"]))
    if not rows:
        return
    width = max(len(label) for label, _ in rows)
    print(f"{'ratio (side by side, medians)':<{width}}  {'value':>8}")
    for label, value in rows:
        print(f"{label:<{width}}  {value:>7.2f}x")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--output", type=Path, default=common.ROOT / "docs" / "performance.md")
    parser.add_argument("--images", type=Path, default=common.ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    data = load(args.results)
    if not data:
        raise SystemExit(f"no results in {args.results}: run ./run-benchmarks.sh first")
    report = Report(data, args.images, args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.render())
    print(f"\nwrote {args.output} and its figures in {args.images}\n")
    print_ratios(data)
    width = max(len(t) for t, *_ in report.targets) if report.targets else 10
    print(f"{'target':<{width}}  {'measured':>10}  met")
    for target, measured, met, _ in report.targets:
        print(f"{target:<{width}}  {measured:>10}  {'n/a' if met is None else 'yes' if met else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
