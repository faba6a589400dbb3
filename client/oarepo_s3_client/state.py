"""Local state for resuming: append-only JSON-lines journals.

A journal is a header line (what is being transferred: the upload id, the
file's size and modification time, ...) followed by one line per finished
part or range. Appending one short line per part keeps the cost constant
(10,000 parts do not rewrite a growing file 10,000 times); a line torn by
``kill -9`` is ignored when reading. Lines are written with one ``write``
each, unbuffered: a killed process loses at most the part it was on. (An
operating-system crash may lose more; the server's part list and the final
checksum still catch it.)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

STATE_VERSION = 1


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/oarepo-s3`` (``~/.local/state/oarepo-s3``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "oarepo-s3"


class Journal:
    """A header and the entries appended after it, on disk at ``path``."""

    def __init__(self, path: Path, header: dict, entries: list[dict] | None = None):
        self.path = path
        self.header = header
        self.entries = list(entries or [])
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, header: dict) -> Journal:
        """Start a journal (replacing any old one) with ``header``; written atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": STATE_VERSION, **header}, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return cls(path, header)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """Read a journal; ``None`` when missing, unreadable or of another version."""
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError:
            return None
        try:
            header = json.loads(lines[0])
        except ValueError:
            return None
        if not isinstance(header, dict) or header.pop("version", None) != STATE_VERSION:
            return None
        entries = []
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by kill -9, or the empty tail
            if isinstance(entry, dict):
                entries.append(entry)
        return cls(path, header, entries)

    def append(self, entry: dict) -> None:
        """Record a finished part/range: one unbuffered ``write`` of one line."""
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self.entries.append(entry)

    def remove(self) -> None:
        """Delete the journal (the transfer is finished or abandoned)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class StateStore:
    """Where upload journals live: one file per (draft URL, key) in ``directory``."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_state_dir()

    def upload_path(self, draft_url: str, key: str) -> Path:
        """The journal of uploading ``key`` into the draft at ``draft_url``."""
        digest = hashlib.sha256(f"{draft_url.rstrip('/')}\n{key}".encode()).hexdigest()[:32]
        return self.directory / f"upload-{digest}.jsonl"

    def load_upload(self, draft_url: str, key: str) -> Journal | None:
        """The journal of an earlier, unfinished upload of ``key``, if any."""
        return Journal.load(self.upload_path(draft_url, key))

    def new_upload(self, draft_url: str, key: str, header: dict) -> Journal:
        """Start the journal of a new upload."""
        return Journal.create(self.upload_path(draft_url, key), header)


def download_journal_path(part_path: Path) -> Path:
    """The journal next to a download's ``.part`` file."""
    return part_path.with_name(part_path.name + ".state")
