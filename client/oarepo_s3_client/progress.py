"""Progress reporting: a subscriber protocol, aggregation, and a rich progress bar.

Subscribers receive ``on_progress(bytes_transferred, **kwargs)`` with the
keyword arguments ``key`` (the file's key or download path), ``total`` (its
size) and ``initial`` (True once per file, for bytes already done by an
earlier run). ``bytes_transferred`` is negative when a part failed half-way
and is sent again (the bytes already counted are taken back), as s3transfer
does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # rich is imported when a bar is made, not with the package
    from rich.console import Console
    from rich.progress import TaskID


@runtime_checkable
class ProgressSubscriber(Protocol):
    """Anything with ``on_progress(bytes_transferred, **kwargs)``."""

    def on_progress(
        self, bytes_transferred: int, *, key: str, total: int | None, initial: bool, **kwargs: object
    ) -> None:
        """Called with the number of bytes transferred since the last call (and the keywords above)."""


class AggregatedProgress:
    """Batches byte counts per key and calls the subscribers with at least ``threshold`` bytes.

    Thread-safe: every worker reports here. :meth:`flush` sends what is left
    (called at the end of each part, so totals are exact).
    """

    def __init__(self, subscribers: Iterable[ProgressSubscriber], threshold: int = 256 * 1024):
        self.subscribers = list(subscribers)
        self.threshold = threshold
        self._pending: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def start(self, key: str, total: int, done: int = 0) -> None:
        """A file begins: ``done`` bytes were transferred by an earlier run."""
        with self._lock:
            self._totals[key] = total
            self._pending[key] = 0
        self._emit(done, key, initial=True)

    def add(self, key: str, amount: int) -> None:
        """Count ``amount`` bytes (negative: taken back); emits once the batch reaches the threshold."""
        if not self.subscribers:
            return
        with self._lock:
            pending = self._pending.get(key, 0) + amount
            if amount >= 0 and pending < self.threshold:
                self._pending[key] = pending
                return
            self._pending[key] = 0
        if pending:
            self._emit(pending, key)

    def flush(self, key: str) -> None:
        """Send the bytes batched for ``key`` so far."""
        with self._lock:
            pending, self._pending[key] = self._pending.get(key, 0), 0
        if pending:
            self._emit(pending, key)

    def _emit(self, amount: int, key: str, initial: bool = False) -> None:
        total = self._totals.get(key)
        for subscriber in self.subscribers:
            subscriber.on_progress(amount, key=key, total=total, initial=initial)


class RichProgress:
    """A progress bar on stderr (rich): one line per active file and an overall line.

    Shows bytes done, throughput and ETA. Use as a context manager; pass it
    to the uploader as a subscriber.

    :param total: bytes of the whole run (all files), for the overall line.
    """

    def __init__(self, total: int | None = None, description: str = "total", console: Console | None = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
            refresh_per_second=5,
        )
        self._lock = threading.Lock()
        self._lines: dict[str, _Line] = {}
        self._remaining = total or 0
        self._overall = self._progress.add_task(description, total=total) if total else None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_progress(self, bytes_transferred: int, key: str = "", total: int | None = None, initial: bool = False,
                    **kwargs: object) -> None:
        """Advance the file's line and the overall line; a finished file's line goes away.

        Bytes done by an earlier run (``initial``) start the bars there without
        counting as throughput.
        """
        with self._lock:
            line = self._lines.get(key)
            if line is None:
                name = key if len(key) <= 40 else "…" + key[-39:]
                done = bytes_transferred if initial else 0
                line = self._lines[key] = _Line(self._progress.add_task(name, total=total, completed=done), done, total)
                if self._overall is not None and done:
                    # Resumed bytes leave the overall line's total (adding them as progress
                    # would show a burst of throughput that never happened).
                    self._remaining -= done
                    self._progress.update(self._overall, total=self._remaining)
                if initial:
                    return
            line.done += bytes_transferred
            self._progress.advance(line.task, bytes_transferred)
            if self._overall is not None:
                self._progress.advance(self._overall, bytes_transferred)
                if line.total and line.done >= line.total and not line.removed:
                    line.removed = True
                    self._progress.remove_task(line.task)


@dataclass
class _Line:
    task: TaskID
    done: int
    total: int | None
    removed: bool = False
