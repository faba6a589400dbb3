"""Record how invenio-records-resources calls the files-rest storage factory and the storages it returns.

:class:`StorageTrace` replaces ``current_files_rest.storage_factory`` (the
configured ``oarepo_s3.storage.s3_storage_factory``) by a wrapper that
still calls it, and logs:

- ``factory``: every call, with the type of ``fileinstance=`` (files-rest's
  ``FileInstance`` model or records-resources' ``File`` wrapper) and the
  other keyword arguments;
- ``attr``: every attribute read of that ``fileinstance`` (by the factory
  or, later, by the storage that keeps it);
- ``call``: every call of a storage method in :data:`TRACED_METHODS`, with
  its arguments, what it returned (or raised) and, with a ``probe``, what
  the probe saw just before.

Entries are appended from the live server's threads; ``mark()`` separates
the steps of a test.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

TRACED_METHODS = frozenset(
    {
        "multipart_initialize_upload",
        "multipart_set_content",
        "multipart_commit_upload",
        "multipart_abort_upload",
        "multipart_links",
        "initialize",
        "save",
        "update",
        "open",
        "send_file",
        "delete",
        "copy",
        "checksum",
    }
)


@dataclass
class Entry:
    kind: str  # "mark" | "factory" | "attr" | "call"
    name: str
    detail: dict[str, Any] = field(default_factory=dict)


class _Spy:
    """Forwards attribute reads to the wrapped ``fileinstance`` and logs their names."""

    def __init__(self, target: Any, trace: StorageTrace, label: str):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_trace", trace)
        object.__setattr__(self, "_label", label)

    def __getattr__(self, name: str) -> Any:
        try:
            value = getattr(self._target, name)
        except AttributeError:
            self._trace.add("attr", f"{self._label}.{name}", {"raised": "AttributeError"})
            raise
        self._trace.add("attr", f"{self._label}.{name}", {"value": _short(value)})
        return value


class _TracedStorage:
    """Forwards everything to the storage; logs calls of :data:`TRACED_METHODS`.

    ``hasattr(traced, name)`` answers as for the storage: records-resources'
    ``MultipartStorageExt`` asks it before delegating ``multipart_*`` calls.
    """

    def __init__(self, storage: Any, trace: StorageTrace):
        object.__setattr__(self, "_storage", storage)
        object.__setattr__(self, "_trace", trace)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._storage, name)
        if name in TRACED_METHODS and callable(value):
            trace = self._trace

            def traced(*args: Any, **kwargs: Any) -> Any:
                entry = trace.add("call", name, {"args": [_short(a) for a in args], "kwargs": _short(kwargs)})
                if trace.probe is not None:
                    entry.detail["probe"] = trace.probe()
                try:
                    result = value(*args, **kwargs)
                except Exception as e:
                    entry.detail["raised"] = repr(e)
                    raise
                entry.detail["returned"] = _short(result)
                return result

            return traced
        return value


def _short(value: Any) -> Any:
    """A loggable form of a value (streams and responses by type name)."""
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_short(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) or len(value) < 300 else value[:300] + "..."
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


class StorageTrace:
    """The log, and the wrapper factory to install as ``current_files_rest.storage_factory``."""

    def __init__(self, factory: Any, probe: Any = None):
        self._factory = factory
        self.probe = probe
        """Optional ``probe()`` run (in the caller's thread) just before each traced call: what was true then."""
        self._lock = threading.Lock()
        self.entries: list[Entry] = []
        self._factory_calls = 0

    def add(self, kind: str, name: str, detail: dict[str, Any] | None = None) -> Entry:
        entry = Entry(kind, name, detail or {})
        with self._lock:
            self.entries.append(entry)
        return entry

    def mark(self, step: str) -> None:
        self.add("mark", step)

    def __call__(self, **kwargs: Any) -> Any:
        with self._lock:
            self._factory_calls += 1
            n = self._factory_calls
        fileinstance = kwargs.get("fileinstance")
        label = f"fileinstance#{n}"
        self.add(
            "factory",
            type(fileinstance).__module__ + "." + type(fileinstance).__qualname__,
            {"n": n, "kwargs": {k: _short(v) for k, v in kwargs.items() if k != "fileinstance"}},
        )
        if fileinstance is not None:
            kwargs["fileinstance"] = _Spy(fileinstance, self, label)
        return _TracedStorage(self._factory(**kwargs), self)

    def steps(self) -> dict[str, list[Entry]]:
        """The entries grouped by the ``mark`` before them."""
        out: dict[str, list[Entry]] = {}
        current = "(start)"
        for entry in self.entries:
            if entry.kind == "mark":
                current = entry.name
                out.setdefault(current, [])
            else:
                out.setdefault(current, []).append(entry)
        return out

    def calls(self, step: str) -> list[str]:
        """``factory:<type>`` and storage method names of one step, in order."""
        return [
            f"factory:{e.name.rsplit('.', 1)[-1]}" if e.kind == "factory" else e.name
            for e in self.steps().get(step, [])
            if e.kind in ("factory", "call")
        ]

    def only(self, step: str, kind: str, name: str | None = None) -> Entry:
        """The one entry of ``kind`` (and ``name``, for calls) in ``step``."""
        (entry,) = [e for e in self.steps().get(step, []) if e.kind == kind and (name is None or e.name == name)]
        return entry

    def read_attributes(self, step: str) -> list[str]:
        """The ``fileinstance`` attributes read in ``step``, in order (``fileinstance#N.`` stripped)."""
        return [e.name.split(".", 1)[1] for e in self.steps().get(step, []) if e.kind == "attr"]

    def dump(self) -> str:
        lines = []
        for entry in self.entries:
            if entry.kind == "mark":
                lines.append(f"== {entry.name}")
            else:
                lines.append(f"   {entry.kind:7} {entry.name} {entry.detail}")
        return "\n".join(lines)
