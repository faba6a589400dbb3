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
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypedDict, TypeVar, cast

from .models import FileLinks

STATE_VERSION = 1


class UploadHeader(TypedDict):
    """The first line of an upload journal: which upload of which file, and its links."""

    draft_url: str
    key: str
    path: str
    size: int
    mtime_ns: int
    upload_id: str
    session_id: str | None
    chunk_size: int
    links: FileLinks


class _UploadEntryRequired(TypedDict):
    n: int
    etag: str


class UploadEntry(_UploadEntryRequired, total=False):
    """A part S3 took: its number, its ETag and the base64 MD5 we hashed (none when S3 verified a SHA-256)."""

    md5: str


class DownloadHeader(TypedDict):
    """The first line of a download journal: which object, cut how."""

    url: str
    size: int
    etag: str
    chunk_size: int


class DownloadEntry(TypedDict):
    """A range written to the ``.part`` file."""

    n: int


HeaderT = TypeVar("HeaderT", bound=Mapping[str, object])
EntryT = TypeVar("EntryT", bound=Mapping[str, object])


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/oarepo-s3`` (``~/.local/state/oarepo-s3``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "oarepo-s3"


class Journal(Generic[HeaderT, EntryT]):
    """A header and the entries appended after it, on disk at ``path``.

    The header and entry types are what the writer puts in (:class:`UploadHeader`
    and :class:`UploadEntry`, or :class:`DownloadHeader` and :class:`DownloadEntry`);
    reading checks only that each line is a JSON object.
    """

    def __init__(self, path: Path, header: HeaderT, entries: list[EntryT] | None = None):
        self.path = path
        self.header = header
        self.entries = list(entries or [])
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, header: HeaderT) -> Journal[HeaderT, EntryT]:
        """Start a journal (replacing any old one) with ``header``; written atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": STATE_VERSION, **header}, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return cls(path, header)

    @classmethod
    def load(cls, path: Path) -> Journal[HeaderT, EntryT] | None:
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
        entries: list[EntryT] = []
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by kill -9, or the empty tail
            if isinstance(entry, dict):
                entries.append(cast(EntryT, entry))  # our own writing: trusted to have the writer's shape
        return cls(path, cast(HeaderT, header), entries)

    def append(self, entry: EntryT) -> None:
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

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory is not None else default_state_dir()

    def upload_path(self, draft_url: str, key: str) -> Path:
        """The journal of uploading ``key`` into the draft at ``draft_url``."""
        digest = hashlib.sha256(f"{draft_url.rstrip('/')}\n{key}".encode()).hexdigest()[:32]
        return self.directory / f"upload-{digest}.jsonl"

    def load_upload(self, draft_url: str, key: str) -> Journal[UploadHeader, UploadEntry] | None:
        """The journal of an earlier, unfinished upload of ``key``, if any."""
        return Journal.load(self.upload_path(draft_url, key))

    def new_upload(self, draft_url: str, key: str, header: UploadHeader) -> Journal[UploadHeader, UploadEntry]:
        """Start the journal of a new upload."""
        return Journal.create(self.upload_path(draft_url, key), header)


def download_journal_path(part_path: Path) -> Path:
    """The journal next to a download's ``.part`` file."""
    return part_path.with_name(part_path.name + ".state")
