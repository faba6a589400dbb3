"""How to read a part for hashing: ``pread`` into a part-sized buffer, ``pread`` in 1 MiB slices, or ``mmap``.

Run::

    .venv/bin/python benchmarks/bench_part_io.py [--size-mib 1024] [--part-size-mib 16] [--threads 2] [--repeat 3]

The client hashes each part before it is signed (then sends it with
``os.sendfile`` or requests). This measures the CPU seconds per GiB of the
hash pass alone, SHA-256 and MD5, for the three ways of getting the bytes,
side by side in one process (``getrusage(RUSAGE_SELF)``, user + system; the
file is in the page cache). It backs one design choice of
``client/oarepo_s3_client/localfile.py``: 1 MiB ``pread`` slices, not a
part-sized buffer (slower: the copy misses the CPU cache) and not ``mmap``
(fastest, but a file truncated while mapped kills the process with SIGBUS).
Not a target: no thresholds, the ratios are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import resource
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GiB, MiB, write_random_file

from oarepo_s3_client.localfile import FileReader


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(task, parts: int, threads: int) -> float:
    started = cpu_seconds()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(task, range(parts)))
    return cpu_seconds() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-size-mib", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="hashing threads (the client's: 2)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    size, part = args.size_mib * MiB, args.part_size_mib * MiB
    parts = size // part
    with tempfile.TemporaryDirectory(prefix="bench-part-io-") as work:
        path = Path(work) / "data.bin"
        write_random_file(path, size)
        path.read_bytes()  # into the page cache
        reader = FileReader(path)
        mapped = mmap.mmap(reader.fileno, 0, access=mmap.ACCESS_READ)
        local = threading.local()

        def whole_buffer(algorithm):
            def task(i):
                buffer = getattr(local, "buffer", None)
                if buffer is None:
                    buffer = local.buffer = memoryview(bytearray(part))
                reader.read_into(buffer, i * part)
                hashlib.new(algorithm, buffer).digest()
            return task

        def slices(algorithm):
            return lambda i: reader.digest(i * part, part, algorithm)

        def mapped_view(algorithm):
            def task(i):
                with memoryview(mapped)[i * part : (i + 1) * part] as view:
                    hashlib.new(algorithm, view).digest()
            return task

        ways = {"pread, part-sized buffer": whole_buffer, "pread, 1 MiB slices (client)": slices,
                "mmap": mapped_view}
        results: dict[tuple[str, str], float] = {}
        for algorithm in ("sha256", "md5"):
            for _ in range(args.repeat):
                for name, make in ways.items():
                    seconds = measure(make(algorithm), parts, args.threads) * GiB / size
                    key = (algorithm, name)
                    results[key] = min(results.get(key, float("inf")), seconds)
        mapped.close()
        reader.close()
    print(f"{args.size_mib} MiB in {args.part_size_mib} MiB parts, {args.threads} threads, best of {args.repeat}; "
          "CPU s/GiB of the hash pass")
    for algorithm in ("sha256", "md5"):
        base = results[(algorithm, "pread, 1 MiB slices (client)")]
        for name in ways:
            value = results[(algorithm, name)]
            print(f"  {algorithm:<7} {name:<30} {value:6.3f}  {value / base:5.2f}x the client's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
