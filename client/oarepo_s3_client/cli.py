"""The ``oarepo-s3`` command: ``upload`` and ``download``."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import nullcontext
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .errors import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ClientError,
    Interrupted,
    UsageError,
    combine_exit_codes,
)
from .models import CHECKSUMS, MiB, TransferConfig, UploadResult
from .parts import MAX_PART_SIZE, MIN_PART_SIZE
from .progress import RichProgress
from .transfer import Uploader, expand_paths

if TYPE_CHECKING:
    from rich.console import Console

TOKEN_ENV = "OAREPO_S3_TOKEN"
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": MiB,
          "g": 1000**3, "gb": 1000**3, "gib": 1024 * MiB}


def parse_size(text: str) -> int:
    """``"16MiB"``, ``"5M"``, ``"5242880"`` -> bytes (argparse type)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or e.g. 16MiB, 64M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def part_size_arg(text: str) -> int:
    size = parse_size(text)
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise argparse.ArgumentTypeError(f"part size must be 5 MiB .. 5 GiB (S3's limits), not {size}")
    return size


def concurrency_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"concurrency must be 1..256, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oarepo-s3",
        description="Upload files into an oarepo-s3 draft record straight to S3 (parallel, resumable, "
                    "checked), and download them back.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--token", help=f"personal access token (default: ${TOKEN_ENV})")
        p.add_argument("--concurrency", type=concurrency_arg, default=8, metavar="N",
                       help="transfers in flight at once (default 8). Memory: about N x 1 MiB, whatever the part "
                            "size (files are read and written in 1 MiB slices)")
        p.add_argument("--json", action="store_true", help="print one JSON object per file; no progress bar")
        p.add_argument("--retries", type=_positive_int, default=6, metavar="N",
                       help="tries per part / range / API call before giving up (default 6)")

    up = commands.add_parser(
        "upload", help="upload files and directories into a draft",
        description="Upload files (directories recursively, keys relative to them with '/') into a draft. "
                    "Parts go straight to S3 with a signed checksum; an interrupted upload resumes when "
                    "the same command runs again; the stored checksum is compared with the local file.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    target = up.add_mutually_exclusive_group(required=True)
    target.add_argument("--draft", metavar="URL", help="an oarepo-s3 draft's API URL (…/draft/records/<id>)")
    target.add_argument("--files-url", metavar="URL",
                        help="an InvenioRDM draft's files URL (…/api/records/<id>/draft/files): uploads through "
                             "its multipart transfer (\"M\"), parts straight to its S3")
    common(up)
    up.add_argument("--part-size", type=part_size_arg, metavar="BYTES",
                    help="bytes per part, 5MiB..5GiB (default: the server's, 16 MiB)")
    up.add_argument("--checksum", choices=CHECKSUMS, default="auto",
                    help="what S3 verifies each part with: md5 (Content-MD5, every S3 server), sha256 (signed "
                         "payload hash, used only after a probe shows that the S3 server verifies it, else md5), "
                         "or auto (default: sha256 where this CPU hashes it faster than MD5, else md5)")
    up.add_argument("--no-zero-copy", dest="zero_copy", action="store_false",
                    help="send parts through requests even to plain-http:// S3 (default there: os.sendfile, from "
                         "the page cache into the socket)")
    up.add_argument("--key", help="key of the file in the draft (one file only; default: its name)")
    up.add_argument("--state-dir", metavar="DIR",
                    help="where resume state lives (default: $XDG_STATE_HOME/oarepo-s3 or ~/.local/state/oarepo-s3)")
    up.add_argument("--abort-on-failure", action="store_true",
                    help="abort a failed upload on the server instead of keeping it for resuming")

    down = commands.add_parser(
        "download", help="download a file with parallel ranged GETs",
        description="Download a file (its content URL, or its API URL) with parallel ranged GETs into "
                    "FILE.part; an interrupted download resumes when run again; the size is checked, and "
                    "the bytes are hashed as they arrive and compared with the file's checksum.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    down.add_argument("url", metavar="URL")
    down.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the file")
    down.add_argument("--no-verify", dest="verify", action="store_false",
                      help="do not hash the bytes (default: compare them with the file's checksum from the API, "
                           "else S3's ETag; a mismatch keeps nothing and exits with the integrity code)")
    common(down)
    down.add_argument("--chunk-size", type=parse_size, default=16 * MiB, metavar="BYTES",
                      help="bytes per ranged GET (default 16MiB)")
    return parser


class _Output:
    """Results to stdout (text or JSON lines), messages to stderr; safe from several threads."""

    def __init__(self, as_json: bool, console: Console | None = None):
        self.as_json = as_json
        self._lock = threading.Lock()
        self._console = console

    def result(self, data: Mapping[str, object], text: str) -> None:
        with self._lock:
            line = json.dumps(data, sort_keys=True) if self.as_json else text
            if self._console is not None and not self.as_json:
                self._console.print(line, highlight=False, markup=False, soft_wrap=True)
            else:
                print(line, flush=True)

    def error(self, message: str) -> None:
        with self._lock:
            print(f"oarepo-s3: {message}", file=sys.stderr, flush=True)


def _upload_text(r: UploadResult) -> str:
    if r.status == "failed":
        return f"failed     {r.key}: {r.error}"
    note = f" (resumed: {r.parts_reused} of {r.parts} parts were already there)" if r.resumed else ""
    return f"{r.status:<10} {r.key}  {r.size} bytes  {r.checksum}  {r.content_url or r.url}{note}"


def _run_upload(args: argparse.Namespace, token: str, output: _Output, progress: bool) -> int:
    entries = expand_paths(args.paths)
    if args.key and len(entries) != 1:
        raise UsageError("--key needs exactly one file")
    if args.key:
        entries = [(entries[0][0], args.key)]
    config = TransferConfig(concurrency=args.concurrency, part_size=args.part_size, max_attempts=args.retries,
                            checksum=args.checksum, zero_copy=args.zero_copy)
    total = sum(path.stat().st_size for path, _ in entries)
    codes: list[int] = []

    def report(result: UploadResult) -> None:
        codes.append(result.exit_code)
        output.result(result.to_json(), _upload_text(result))

    bar = RichProgress(total) if progress else None
    target, protocol = (args.files_url, "rdm") if args.files_url else (args.draft, "oarepo")
    with Uploader(target, token, config=config, state_dir=args.state_dir, subscribers=[bar] if bar else [],
                  abort_on_failure=args.abort_on_failure, protocol=protocol) as uploader, (bar or nullcontext()):
        uploader.upload_many(entries, on_result=report)
    return combine_exit_codes(codes)


def _run_download(args: argparse.Namespace, token: str | None, output: _Output, progress: bool) -> int:
    config = TransferConfig(concurrency=args.concurrency, max_attempts=args.retries,
                            download_chunk_size=args.chunk_size)
    bar = RichProgress() if progress else None
    with Uploader(None, token, config=config, subscribers=[bar] if bar else []) as client, (bar or nullcontext()):
        result = client.download(args.url, args.output, verify=args.verify)
    note = f" (resumed: {result.ranges - result.ranges_fetched} of {result.ranges} ranges were on disk)" \
        if result.resumed else ""
    checked = f"  {result.checksum} verified" if result.verified else ""
    output.result(result.to_json(), f"downloaded {result.path}  {result.size} bytes{checked}{note}")
    return EXIT_OK


def _raise_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (see ``--help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    output = _Output(args.json)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    progress = not args.json and sys.stderr.isatty()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # kill: stop like Ctrl-C, keep the state
    started = time.monotonic()
    try:
        if args.command == "upload":
            if not token:
                raise UsageError(f"a token is needed: --token or ${TOKEN_ENV}")
            return _run_upload(args, token, output, progress)
        return _run_download(args, token, output, progress)
    except (KeyboardInterrupt, Interrupted):
        output.error(f"interrupted after {time.monotonic() - started:.1f} s; run the same command again to resume")
        return EXIT_INTERRUPTED
    except OSError as e:  # e.g. the download's directory does not exist
        output.error(f"{e.filename or ''}: {e.strerror or e}")
        return EXIT_FAILED
    except ClientError as e:
        output.error(str(e))
        if args.json:
            output.result({"status": "failed", "error": str(e), "exit_code": e.exit_code}, "")
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
