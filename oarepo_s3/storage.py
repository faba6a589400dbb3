"""Invenio file storage: invenio-s3's, plus direct multipart uploads and fast download URLs.

``FILES_REST_STORAGE_FACTORY = "oarepo_s3.storage.s3_storage_factory"``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, current_app
from invenio_files_rest.models import FileInstance, ObjectVersion
from invenio_files_rest.storage import PyFSFileStorage, pyfs_storage_factory
from invenio_s3.helpers import redirect_stream
from invenio_s3.storage import S3FSFileStorage

from . import service, transfer
from .api import EMPTY_FILE_CHECKSUM, EmptyFile, MultipartUpload
from .errors import InvalidUploadRequest, UploadPending
from .proxies import current_oarepo_s3
from .s3 import split_s3_url


class S3FileStorage(S3FSFileStorage):  # type: ignore[misc]  # invenio-s3 is untyped
    """invenio-s3's storage that also accepts a :class:`MultipartUpload` as the stream.

    ``save(MultipartUpload)`` starts the S3 multipart upload instead of
    receiving bytes and leaves the file pending (unreadable) until the
    upload is completed; everything else behaves as in invenio-s3, except
    that download URLs are signed by :mod:`oarepo_s3.presign`.
    """

    fileinstance: FileInstance | None = None
    """The FileInstance this storage serves (set by :func:`s3_storage_factory`)."""

    def save(
        self,
        incoming_stream: Any,
        size_limit: int | None = None,
        size: int | None = None,
        chunk_size: int | None = None,
        progress_callback: Any = None,
    ) -> tuple[Any, ...]:
        """Store a stream as invenio-s3 does, or hand a :class:`MultipartUpload` / :class:`EmptyFile` to the service.

        For a :class:`MultipartUpload` (the seed's ``record.files[key] = mu``)
        the service starts the upload in the caller's transaction and
        ``mu.session`` is set, as the seed API promises. The answer
        ``(uri, size, checksum, readable)`` makes files-rest's ``set_uri``
        leave the file unreadable (pending) until the upload is completed.

        :raises InvalidUploadRequest: the declared size exceeds ``size_limit``.
        """
        if isinstance(incoming_stream, MultipartUpload | EmptyFile):
            fileinstance, bucket_id = self._target()
            if isinstance(incoming_stream, EmptyFile):
                service.create_empty_file(bucket_id, incoming_stream, into=fileinstance, fileurl=self.fileurl)
                return self.fileurl, 0, EMPTY_FILE_CHECKSUM, True
            mu = incoming_stream
            if size_limit is not None and mu.size > size_limit:
                reason = getattr(size_limit, "reason", f"at most {size_limit} bytes")
                raise InvalidUploadRequest("size", f"exceeds the bucket's limit: {reason}")
            mu.session = service.start_upload(bucket_id, mu, into=fileinstance, fileurl=self.fileurl).session
            return self.fileurl, mu.size, None, False
        result: tuple[Any, ...] = super().save(
            incoming_stream,
            size_limit=size_limit,
            size=size,
            chunk_size=chunk_size,
            progress_callback=progress_callback,
        )
        return result

    def _target(self) -> tuple[FileInstance, uuid.UUID]:
        """The FileInstance this storage serves and the bucket of the version being created for it."""
        fileinstance, obj = self._target_version()
        return fileinstance, obj.bucket_id

    def _target_version(self) -> tuple[FileInstance, ObjectVersion]:
        fileinstance = self.fileinstance
        obj = next(iter(fileinstance.objects), None) if fileinstance is not None else None
        if fileinstance is None or obj is None:
            raise RuntimeError("a direct upload needs the storage of a new file version (ObjectVersion.create, "
                               "record.files[key] = ..., or records-resources' multipart transfer)")
        return fileinstance, obj

    # --- invenio-records-resources' multipart transfer ("M"); see oarepo_s3.transfer ---------------

    def multipart_initialize_upload(self, parts: int, size: int, part_size: int | None) -> dict[str, Any]:
        """Start the direct S3 upload of a records-resources file; its multipart metadata."""
        fileinstance, obj = self._target_version()
        return transfer.initialize_upload(fileinstance, obj.bucket_id, obj.key, self.fileurl, parts, size, part_size)

    def multipart_links(self, **multipart_metadata: Any) -> dict[str, Any]:
        """Presigned part URLs and ListParts pages (invenio-s3's for uploads begun under its storage)."""
        if not transfer.is_ours(multipart_metadata):
            links: dict[str, Any] = super().multipart_links(**multipart_metadata)
            return links
        return transfer.links(multipart_metadata)

    def multipart_commit_upload(self, **multipart_metadata: Any) -> str | None:
        """Verify the parts against the plan and complete; the multipart ETag ``<md5hex>-<N>``."""
        if not transfer.is_ours(multipart_metadata):
            etag: str | None = super().multipart_commit_upload(**multipart_metadata)
            return etag
        return transfer.commit_upload(multipart_metadata)

    def multipart_abort_upload(self, **multipart_metadata: Any) -> None:
        """Abort the S3 upload of a file being deleted; idempotent."""
        if not transfer.is_ours(multipart_metadata):
            super().multipart_abort_upload(**multipart_metadata)
            return
        transfer.abort_upload(multipart_metadata)

    def multipart_set_content(self, part: int, stream: Any, content_length: int, **multipart_metadata: Any) -> None:
        """Refused with a 400: parts go straight to S3, never through the server."""
        transfer.refuse_part_content()

    def delete(self) -> bool:
        """Delete the file's S3 object (through the one S3 boundary, with its tenant and error translation)."""
        bucket, key = split_s3_url(self.fileurl)
        current_oarepo_s3.s3.delete_object(bucket, key)
        return True

    def _ensure_completed(self) -> None:
        """Refuse to serve a file whose direct upload is unfinished (records-resources marks those readable)."""
        fileinstance = self.fileinstance
        if fileinstance is None:
            return
        if not getattr(fileinstance, "readable", True) or service.upload_in_progress(fileinstance.id):
            raise UploadPending()

    def open(self, mode: str = "rb") -> Any:
        """Open the object; refused while the file is a pending multipart upload."""
        if "r" in mode:
            self._ensure_completed()
        return super().open(mode=mode)

    def copy(self, src: Any, *args: Any, **kwargs: Any) -> tuple[str, int | None, str | None]:
        """Copy another file's data (server-side between S3 objects).

        invenio-s3 reports neither size nor checksum for a server-side copy,
        which leaves the new FileInstance without a size; take the source's.
        """
        uri, size, checksum = super().copy(src, *args, **kwargs)
        if size is None:
            size = src._size
            source = getattr(src, "fileinstance", None)
            checksum = checksum or (source.checksum if source is not None else None)
        return uri, size, checksum

    def send_file(
        self,
        filename: str,
        mimetype: str | None = None,
        restricted: bool = True,
        checksum: str | None = None,
        trusted: bool = False,
        chunk_size: int | None = None,
        as_attachment: bool = False,
    ) -> Response:
        """Answer 302 to a presigned GET (valid ``S3_URL_EXPIRATION`` seconds).

        The response-content-type and content-disposition are signed into
        the URL, so S3 serves the file under its Invenio name.
        """
        self._ensure_completed()
        bucket, key = split_s3_url(self.fileurl)
        presigner, s3_bucket = current_oarepo_s3.presigner, current_oarepo_s3.s3.bucket_name(bucket)

        def url_builder(ResponseContentType: str | None = None, ResponseContentDisposition: str | None = None) -> str:
            return presigner.get_object_url(
                s3_bucket,
                key,
                expires_in=current_app.config["S3_URL_EXPIRATION"],
                response_content_type=ResponseContentType,
                response_content_disposition=ResponseContentDisposition,
            )

        response: Response = redirect_stream(
            url_builder,
            filename,
            mimetype=mimetype,
            restricted=restricted,
            trusted=trusted,
            as_attachment=as_attachment,
        )
        return response


def s3_storage_factory(**kwargs: Any) -> S3FileStorage | PyFSFileStorage:
    """Files-rest storage factory: an :class:`S3FileStorage` bound to its FileInstance.

    A file outside S3 (a ``file://`` location beside the S3 one) gets
    files-rest's own storage instead: invenio-s3 cannot serve it, and
    records-resources' multipart transfer then takes its generic,
    through-the-server path (it looks the ``multipart_*`` methods up with ``hasattr``).
    """
    storage: S3FileStorage = pyfs_storage_factory(filestorage_class=S3FileStorage, **kwargs)
    if not storage.fileurl.startswith("s3://"):
        local: PyFSFileStorage = pyfs_storage_factory(**kwargs)
        return local
    storage.fileinstance = kwargs.get("fileinstance")
    return storage
