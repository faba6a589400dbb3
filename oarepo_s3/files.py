"""How upload sessions show through invenio-records-files (the seed's ``record.files[key]``).

files-rest and records-files know nothing of upload sessions; two small
additions make them visible:

- ``ObjectVersion.multipart_upload``: the file's
  :class:`~oarepo_s3.results.UploadSession` (a read-only mapping), or None.
  records-files' ``FileObject`` hands unknown keys to the version, so
  ``record.files[key]["multipart_upload"]`` and
  ``record.files[key].get("multipart_upload")`` return it. Installed by
  :class:`oarepo_s3.ext.OARepoS3` on every app.
- :class:`S3FileObject`: a ``FileObject`` whose ``dumps()`` also carries the
  session. :class:`~oarepo_s3.drafts.DraftRecord` uses it; set
  ``file_cls = S3FileObject`` on your own records-files ``Record`` class
  for the same.
"""

from __future__ import annotations

from typing import Any

from invenio_files_rest.models import ObjectVersion
from invenio_records_files.api import FileObject

from . import service
from .results import UploadSession


def _multipart_upload(obj: ObjectVersion) -> UploadSession | None:
    """The version's upload session, read when asked for (its part URLs signed on first read)."""
    return service.session_of(obj)


def install_session_attribute() -> None:
    """Give ``ObjectVersion`` its ``multipart_upload`` attribute (once per process; idempotent)."""
    if getattr(ObjectVersion, "multipart_upload", None) is not _MULTIPART_UPLOAD:
        ObjectVersion.multipart_upload = _MULTIPART_UPLOAD


_MULTIPART_UPLOAD = property(_multipart_upload, doc=_multipart_upload.__doc__)


class S3FileObject(FileObject):  # type: ignore[misc]  # invenio-records-files is untyped
    """records-files' file wrapper, whose dump carries the upload session too.

    The dump is stored in the record's JSON (``_files``), so it holds the
    session without ``parts_url``: part URLs are bearer credentials, up to
    10,000 of them, signed when read and never stored.
    """

    def dumps(self) -> dict[str, Any]:
        """records-files' dump, plus ``multipart_upload`` for a directly uploaded file."""
        data: dict[str, Any] = super().dumps()
        session = service.session_of(self.obj)
        if session is not None:
            data["multipart_upload"] = session.to_json()
        return data
