"""Keep the embedded S3's data across restarts of the demo.

moto keeps objects in memory (and in anonymous temporary files), so the
demo saves the state of its buckets into the data directory and loads it
at the next start: objects, and multipart uploads still in progress with
their parts, so an upload can be resumed after a restart too.

- Bytes go to content-addressed blob files (``s3/blobs/<md5>-<size>``),
  streamed from moto's buffers, never held in memory as a whole; a blob
  already on disk is not written again, so a snapshot after a small change
  is cheap however much data there is.
- Everything else (keys, ETags, metadata, upload ids, part lists) is one
  pickle of moto's own objects, written to a temporary file and renamed, so
  a snapshot is complete or absent. Blobs no snapshot refers to are deleted.
- A snapshot is taken every ``interval`` seconds when something changed, and
  at a clean stop (Ctrl-C). After ``kill -9`` the data of the last interval
  is lost: the database may then list files whose bytes are gone.

This works with moto's internals (``FakeKey``, the buckets' ``keys`` and
``multiparts``), which is fine for an embedded demo server: a real
deployment points the demo at a real S3 instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import threading
from pathlib import Path

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import FakeKey, s3_backends

log = logging.getLogger(__name__)

STATE_FILE = "state.pickle"
BLOBS = "blobs"
FORMAT = 1

_loading_from: Path | None = None
"""The blob directory of the snapshot being loaded (read by :func:`_restore_key`)."""


def _backend():
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def _blob_name(key: FakeKey) -> str:
    return f"{key.etag.strip(chr(34))}-{key.contentsize}"


def _restore_key(state: dict, blob: str) -> FakeKey:
    """Unpickle a FakeKey: its attributes, and its bytes copied from the blob file."""
    key = FakeKey.__new__(FakeKey)
    key.__dict__.update(state)
    key._value_buffer = tempfile.SpooledTemporaryFile(max_size=key._max_buffer_size)
    with open(_loading_from / blob, "rb") as source:
        shutil.copyfileobj(source, key._value_buffer, 16 * 1024 * 1024)
    key.lock = threading.Lock()
    return key


class _Pickler(pickle.Pickler):
    """Pickles FakeKeys as attributes plus a blob file it writes (when not there yet)."""

    def __init__(self, file, blobs: Path):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.blobs = blobs
        self.used: set[str] = set()

    def reducer_override(self, obj):
        if not isinstance(obj, FakeKey):
            return NotImplemented
        name = _blob_name(obj)
        target = self.blobs / name
        if name not in self.used and not target.exists():
            partial = target.with_suffix(".partial")
            with obj.lock, open(partial, "wb") as out:
                obj._value_buffer.seek(0)
                shutil.copyfileobj(obj._value_buffer, out, 16 * 1024 * 1024)
            os.replace(partial, target)
        self.used.add(name)
        state = {k: v for k, v in obj.__dict__.items() if k not in ("_value_buffer", "lock")}
        # A completed object keeps its parts in moto; they are not needed and would double the disk use.
        state["multipart"] = None
        return _restore_key, (state, name)


def signature() -> tuple:
    """A cheap summary that changes whenever an object or an uploaded part does."""
    items = []
    for name, bucket in list(_backend().buckets.items()):
        for key_name, key in list(bucket.keys.items()):
            items.append((name, key_name, key.etag, str(key.last_modified)))
        for upload_id, multipart in list(bucket.multiparts.items()):
            items.append((name, upload_id, tuple((n, p.etag) for n, p in list(multipart.parts.items()))))
    return tuple(items)


def save(directory: Path) -> None:
    """Write a snapshot of every bucket's objects and uploads in progress into ``directory``."""
    blobs = directory / BLOBS
    blobs.mkdir(parents=True, exist_ok=True)
    buckets = {name: (bucket.keys, bucket.multiparts) for name, bucket in list(_backend().buckets.items())}
    partial = directory / f"{STATE_FILE}.partial"
    with open(partial, "wb") as out:
        pickler = _Pickler(out, blobs)
        pickler.dump({"format": FORMAT, "buckets": buckets})
    os.replace(partial, directory / STATE_FILE)
    for blob in blobs.iterdir():
        if blob.name not in pickler.used:
            blob.unlink()


def load(directory: Path, create_bucket) -> list[str]:
    """Put a saved snapshot back into moto; return the bucket names (none when there is no snapshot).

    :param create_bucket: called with each bucket name; must create it in moto (through S3's API).
    """
    global _loading_from
    state_file = directory / STATE_FILE
    if not state_file.exists():
        return []
    _loading_from = directory / BLOBS
    try:
        with open(state_file, "rb") as source:
            state = pickle.load(source)  # our own file, in the user's data directory
    finally:
        _loading_from = None
    if state.get("format") != FORMAT:
        raise RuntimeError(f"{state_file} was written by another version of the demo; move it away")
    for name, (keys, multiparts) in state["buckets"].items():
        create_bucket(name)
        bucket = _backend().buckets[name]
        bucket.keys, bucket.multiparts = keys, multiparts
    return list(state["buckets"])


class Snapshotter:
    """Saves a snapshot every ``interval`` seconds when something changed, and at :meth:`stop`."""

    def __init__(self, directory: Path, interval: float):
        self.directory = directory
        self.interval = interval
        self._stop = threading.Event()
        self._last = signature()
        self._thread = threading.Thread(target=self._run, name="s3-snapshot", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _save_if_changed(self) -> None:
        current = signature()
        if current != self._last:
            save(self.directory)
            self._last = current

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._save_if_changed()
            except RuntimeError as e:  # a request changed a bucket while it was pickled
                log.info("S3 snapshot postponed (%s); retrying in %s s", e, self.interval)
            except Exception:
                log.warning("S3 snapshot failed; retrying in %s s", self.interval, exc_info=True)

    def stop(self) -> None:
        """Stop the thread and save a last snapshot (call after the S3 server stopped taking requests)."""
        self._stop.set()
        self._thread.join()
        save(self.directory)
