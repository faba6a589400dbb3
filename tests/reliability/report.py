"""Print the figures the reliability tests wrote (test-artifacts/reliability/*.json) as Markdown.

    .venv/bin/python -m tests.reliability.report            # after ./run-tests.sh tests/reliability

docs/reliability.md quotes this output; nothing in it is typed by hand.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def load(module: str) -> dict[str, dict]:
    """lane -> figures of one test module."""
    return {p.name.split(".")[1]: json.loads(p.read_text()) for p in sorted(ARTIFACTS.glob(f"{module}.*.json"))}


def fuzz() -> None:
    runs = load("test_fuzz_rest")
    if not runs:
        return
    print("### Fuzzing (schemathesis)\n")
    lanes = sorted(runs)
    print("| operation | " + " | ".join(f"{lane}: requests (statuses)" for lane in lanes) + " |")
    print("|---|" + "---|" * len(lanes))
    operations = sorted({op for run in runs.values() for op in run["cases"]})
    for op in operations:
        cells = []
        for lane in lanes:
            counts = runs[lane]["cases"].get(op, {})
            statuses = Counter()
            for kind, n in counts.items():
                if "n/a" not in kind:
                    statuses[kind.split()[-1]] += n
            cells.append(f"{sum(statuses.values())} ({', '.join(f'{s}: {n}' for s, n in sorted(statuses.items()))})")
        print(f"| `{op}` | " + " | ".join(cells) + " |")
    for lane in lanes:
        run = runs[lane]
        print(f"\n{lane}: {run['total_cases']} requests, {run['examples_setting']} examples per operation and kind, "
              f"{len(run['problems'])} problems.")
    print()


def _answer(result: dict) -> str:
    if "status" in result:
        return str(result["status"]) + (f" (Retry-After: {result['retry_after']})" if result.get("retry_after") else "")
    return f"expired {result['expired']}, failed {result['failures']}"


def faults() -> None:
    runs = load("test_fault_matrix")
    if not runs:
        return
    print("### S3 faults\n")
    for lane, run in runs.items():
        print(f"{lane}:\n")
        print("| operation | fault | first answer | database | S3 | retry without the fault | books = S3 after |")
        print("|---|---|---|---|---|---|---|")
        for op in ("init", "resume", "sign", "complete", "abort", "cleanup"):
            for fault, o in sorted(run["matrix"].get(op, {}).items()):
                s3 = "unchanged" if o["s3_unchanged"] else "changed"
                if o.get("orphans_swept"):
                    s3 += f" ({o['orphans_swept']} orphan upload(s), swept)"
                print(f"| {op} | {fault} | {_answer(o['first'])} | "
                      f"{'unchanged' if o['db_unchanged'] else 'changed'} | {s3} | "
                      f"{_answer(o['retry']) if 'retry' in o else '-'} | "
                      f"{'yes' if o['books_consistent_after'] else 'NO'} |")
        print()


def books() -> None:
    runs = load("test_books_under_concurrency")
    if not runs:
        return
    print("### Books under random concurrency\n")
    print("| lane | client threads x operations | upload sessions | answers (operation status: count) | audit problems "
          "| quota exceeded (seen) | 5xx |")
    print("|---|---|---|---|---|---|---|")
    for lane, run in runs.items():
        b = run["books"]
        answers = ", ".join(f"{k}: {n}" for k, n in b["answers"].items())
        print(f"| {lane} | {b['threads']} x {b['operations'] // b['threads']} | {b['sessions']} | {answers} | "
              f"{len(b['problems'])} | {b['over_quota_seen']} | {b['server_errors']} |")
    print()


def races() -> None:
    runs = load("test_races")
    if not runs:
        return
    print("### Races\n")
    print("| race | lane | outcomes (count) |")
    print("|---|---|---|")
    for lane, run in runs.items():
        for race, outcomes in sorted(run["outcomes"].items()):
            shown = "; ".join(f"{o} ({n})" for o, n in sorted(outcomes.items()))
            print(f"| {race} | {lane} | {shown} |")
    print()


def load_figures() -> None:
    runs = load("test_load")
    if not runs:
        return
    print("### Load\n")
    print("| lane | files x MiB | gunicorn workers | seconds | files/s | MiB/s "
          "| server CPU s | CPU s per GiB | CPU ms per file |")
    print("|---|---|---|---|---|---|---|---|---|")
    for lane, r in runs.items():
        print(f"| {lane} | {r['files']} x {r['mib_each']} | {r['gunicorn_workers']} | {r['seconds']} | "
              f"{r['files_per_second']} | {r['mib_per_second']} | {r['server_cpu_seconds']} | "
              f"{r['server_cpu_seconds_per_gib']} | {r.get('server_cpu_ms_per_file', '-')} |")
    print()


def main() -> int:
    if not ARTIFACTS.exists():
        print(f"no figures in {ARTIFACTS}: run ./run-tests.sh tests/reliability first", file=sys.stderr)
        return 1
    fuzz()
    faults()
    races()
    books()
    load_figures()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
