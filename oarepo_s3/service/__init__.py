"""The upload lifecycle: the one layer that changes uploads, files and their books.

Every door (REST and Uppy views, the seed's views, ``record.files[key] =
mu`` through the storage, InvenioRDM's transfer, the cleanup) calls these
functions; they own the transactions (:mod:`.transaction`), the lock order
(:mod:`.locks`) and the S3 calls that go with them. Nothing below the
service commits; nothing in it imports a door.

``in_progress -> complete | aborted | expired``; a terminal state never changes.
"""

from .books import SizeFix, counted_sizes, fix_bucket_sizes
from .complete import ReportedPart, complete_file_upload, complete_upload, multipart_etag
from .files import abort_file_upload, delete_file, freeze_bucket, get_file, list_files, send_file, upload_of
from .signing import (
    SessionRef,
    ensure_in_progress,
    get_session,
    list_uploaded_parts,
    session_of,
    sign_parts,
    upload_in_progress,
    url_lifetime,
)
from .start import create_empty_file, start_upload
from .terminate import abort_upload, expire_upload
from .transaction import atomic, in_callers_transaction

__all__ = (
    "ReportedPart",
    "SessionRef",
    "SizeFix",
    "abort_file_upload",
    "abort_upload",
    "atomic",
    "complete_file_upload",
    "complete_upload",
    "counted_sizes",
    "create_empty_file",
    "delete_file",
    "ensure_in_progress",
    "expire_upload",
    "fix_bucket_sizes",
    "freeze_bucket",
    "get_file",
    "get_session",
    "in_callers_transaction",
    "list_files",
    "list_uploaded_parts",
    "multipart_etag",
    "send_file",
    "session_of",
    "sign_parts",
    "start_upload",
    "upload_in_progress",
    "upload_of",
    "url_lifetime",
)
