"""The report's figures (matplotlib, PNG), one function per benchmark; each returns the file it wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

PLAIN = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 100 else f"{value:.3g}")

COLORS = {"oarepo-s3": "#1f77b4", "aws-cli": "#ff7f0e", "boto3": "#2ca02c", "boto3-crt": "#98df8a",
          "s5cmd": "#d62728", "rclone": "#9467bd", "oarepo-s3 via InvenioRDM": "#6baed6",
          "oarepo-s3 --no-verify": "#aec7e8"}
DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plain_log_axes(ax) -> None:
    """Log axes labelled 10, 100, 1,000 rather than 10^1, 10^2, 10^3."""
    for axis, subs in ((ax.xaxis, (1.0,)), (ax.yaxis, (1.0, 2.0, 5.0))):
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(PLAIN)
        axis.set_minor_formatter(NullFormatter())


def presign(data: dict, path: Path) -> Path:
    """Microseconds per URL of each signer, log scale."""
    methods = data["methods"]
    names = sorted(methods, key=lambda n: methods[n]["us_per_url"])
    values = [methods[n]["us_per_url"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh(names, values, color=["#1f77b4" if n.startswith("ours") else "#999999" for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("µs per UploadPart URL (log scale, lower is better)")
    ax.set_title(f"Presigning {data['parts']:,} part URLs (median of {data['repeat']})")
    for bar, value, name in zip(bars, values, names, strict=True):
        ax.text(value * 1.1, bar.get_y() + bar.get_height() / 2,
                f"{value:.2f} µs ({methods[name]['ratio_vs_ours']:.0f}x)", va="center", fontsize=8)
    ax.set_xlim(right=max(values) * 12)
    ax.invert_yaxis()
    return _save(fig, path)


def scale(data: dict, path: Path) -> Path:
    """ms per request vs part count (init, re-sign, complete) and vs file count (list), log-log."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for op, by in data["parts"].items():
        xs = sorted(by, key=int)
        left.plot([int(x) for x in xs], [by[x]["median_ms"] for x in xs], marker="o", label=op)
    left.set_xscale("log")
    left.set_yscale("log")
    _plain_log_axes(left)
    left.set_xlabel("parts in the upload")
    left.set_ylabel("ms per request (median)")
    left.set_title("Upload requests vs part count")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    xs = sorted(data["files"], key=int)
    right.plot([int(x) for x in xs], [data["files"][x]["median_ms"] for x in xs], marker="o", color="#9467bd",
               label="GET files/ (list)")
    right.set_xscale("log")
    right.set_yscale("log")
    _plain_log_axes(right)
    right.set_xlabel("completed files in the draft")
    right.set_title("File list vs file count")
    right.grid(True, which="both", alpha=0.3)
    right.legend()
    return _save(fig, path)


def client(data_by_s3: dict[str, dict], path: Path) -> Path:
    """Throughput and client CPU per GiB for each S3 and direction, grouped by method."""
    s3s = list(data_by_s3)
    fig, axes = plt.subplots(2, len(s3s), figsize=(6.4 * len(s3s), 6.4), squeeze=False)
    for col, s3 in enumerate(s3s):
        data = data_by_s3[s3]
        for row, (field, label) in enumerate((("throughput_mb_s", "MB/s (higher is better)"),
                                              ("cpu_s_per_gib", "client CPU s per GiB (lower is better)"))):
            ax = axes[row][col]
            directions = list(data["results"])
            methods = list(data["results"][directions[0]])
            width = 0.8 / len(methods)
            for i, method in enumerate(methods):
                values = [data["results"][d][method][field] for d in directions]
                xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(directions))]
                bars = ax.bar(xs, values, width, label=method, color=COLORS.get(method))
                for bar, value in zip(bars, values, strict=True):
                    ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.0f}" if value >= 10 else f"{value:.2f}",
                            ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(directions)), directions)
            ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(f"{data['s3']}: {data['size_mib']} MiB", fontsize=9)
                ax.legend(fontsize=7)
    return _save(fig, path)


def concurrency(data: dict, path: Path) -> Path:
    """p50 and p99 latency per endpoint under concurrency."""
    names = list(data["endpoints"])
    fig, ax = plt.subplots(figsize=(7, 3.4))
    xs = range(len(names))
    p50 = [data["endpoints"][n]["p50_ms"] for n in names]
    p99 = [data["endpoints"][n]["p99_ms"] for n in names]
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("ms")
    ax.set_title(f"{data['clients']} concurrent clients, gunicorn {data['workers']} workers: "
                 f"{data['app_requests_per_s']:.0f} app req/s", fontsize=9)
    ax.legend()
    return _save(fig, path)


def cleanup(rows_by_db: dict[str, list[dict]], path: Path) -> Path:
    """Where each expired session's time goes, per database and backlog size (stacked ms per session)."""
    labels, parts = [], {"S3 abort (moto)": [], "SQL execute": [], "commit": [], "rest (ORM, files-rest, botocore)": []}
    fields = ("s3_abort_seconds", "sql_execute_seconds", "sql_commit_seconds", "other_seconds")
    for db, rows in rows_by_db.items():
        for r in rows:
            labels.append(f"{db}\n{r['count']:,}")
            for (_, values), field in zip(parts.items(), fields, strict=True):
                values.append(r[field] / r["count"] * 1e3)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bottom = [0.0] * len(labels)
    for name, values in parts.items():
        ax.bar(labels, values, 0.6, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("ms per expired session")
    ax.set_title("Expiry cleanup: time per session", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def browser(data_by_s3: dict[str, dict], path: Path) -> Path:
    """MB/s of the demo's page in Chromium vs ``oarepo-s3 upload``, per S3 server (same file, same app)."""
    names = list(data_by_s3)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.38
    for i, (method, color) in enumerate((("browser", "#9467bd"), ("oarepo-s3", COLORS["oarepo-s3"]))):
        values = [data_by_s3[s3]["results"][method]["throughput_mb_s"] for s3 in names]
        xs = [x + (i - 0.5) * width for x in range(len(names))]
        bars = ax.bar(xs, values, width, color=color, label="web page (Chromium)" if method == "browser" else method)
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), [data_by_s3[s3]["s3"] for s3 in names])
    ax.set_ylabel("MB/s (higher is better)")
    any_run = next(iter(data_by_s3.values()))
    ax.set_title(f"Upload of {any_run['size_mib']} MiB: the demo's page vs the CLI")
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return _save(fig, path)
