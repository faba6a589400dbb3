"""Invenio file storage: invenio-s3's, plus direct multipart uploads and fast download URLs.

``FILES_REST_STORAGE_FACTORY = "oarepo_s3.storage.s3_storage_factory"``.
"""

from __future__ import annotations

from flask import current_app
from invenio_files_rest.storage import pyfs_storage_factory
from invenio_s3.helpers import redirect_stream
from invenio_s3.storage import S3FSFileStorage

from .api import EMPTY_FILE_CHECKSUM, EmptyFile, MultipartUpload
from .errors import InvalidUploadRequest, UploadPending
from .proxies import current_oarepo_s3
from .s3 import split_s3_url


class S3FileStorage(S3FSFileStorage):
    """invenio-s3's storage that also accepts a :class:`MultipartUpload` as the stream.

    ``save(MultipartUpload)`` starts the S3 multipart upload instead of
    receiving bytes and leaves the file pending (unreadable) until the
    upload is completed; everything else behaves as in invenio-s3, except
    that download URLs are signed by :mod:`oarepo_s3.presign`.
    """

    fileinstance = None
    """The FileInstance this storage serves (set by :func:`s3_storage_factory`)."""

    def save(self, incoming_stream, size_limit=None, size=None, chunk_size=None, progress_callback=None):
        """Store a stream as invenio-s3 does, start a direct multipart upload, or write an empty file.

        For a :class:`MultipartUpload`, returns ``(uri, size, checksum, readable)``:
        ``FileInstance.set_contents`` passes it on to ``set_uri``, so the file
        stays unreadable (pending) instead of being marked readable.

        :raises InvalidUploadRequest: the declared size exceeds the bucket's limit.
        """
        if isinstance(incoming_stream, EmptyFile):
            bucket, key = split_s3_url(self.fileurl)
            current_oarepo_s3.s3.put_empty_object(bucket, key, incoming_stream.content_type)
            return self.fileurl, 0, EMPTY_FILE_CHECKSUM, True
        if not isinstance(incoming_stream, MultipartUpload):
            return super().save(
                incoming_stream,
                size_limit=size_limit,
                size=size,
                chunk_size=chunk_size,
                progress_callback=progress_callback,
            )
        mu = incoming_stream
        if size_limit is not None and mu.size > size_limit:
            reason = getattr(size_limit, "reason", f"at most {size_limit} bytes")
            raise InvalidUploadRequest("size", f"exceeds the bucket's limit: {reason}")
        if self.fileinstance is None:
            raise RuntimeError("S3FileStorage.save(MultipartUpload) needs the storage from s3_storage_factory")
        from .service import start_upload

        start_upload(mu, self.fileinstance, self.fileurl)
        return self.fileurl, mu.size, None, False

    def _ensure_completed(self) -> None:
        if self.fileinstance is not None and not self.fileinstance.readable:
            raise UploadPending()

    def open(self, mode="rb"):
        """Open the object; refused while the file is a pending multipart upload."""
        if "r" in mode:
            self._ensure_completed()
        return super().open(mode=mode)

    def copy(self, src, *args, **kwargs):
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
        filename,
        mimetype=None,
        restricted=True,
        checksum=None,
        trusted=False,
        chunk_size=None,
        as_attachment=False,
    ):
        """Answer 302 to a presigned GET (valid ``S3_URL_EXPIRATION`` seconds).

        The response-content-type and content-disposition are signed into
        the URL, so S3 serves the file under its Invenio name.
        """
        self._ensure_completed()
        bucket, key = split_s3_url(self.fileurl)
        state = current_oarepo_s3._get_current_object()

        def url_builder(ResponseContentType=None, ResponseContentDisposition=None):
            return state.presigner.get_object_url(
                state.s3.bucket_name(bucket),
                key,
                expires_in=current_app.config["S3_URL_EXPIRATION"],
                response_content_type=ResponseContentType,
                response_content_disposition=ResponseContentDisposition,
            )

        return redirect_stream(
            url_builder,
            filename,
            mimetype=mimetype,
            restricted=restricted,
            trusted=trusted,
            as_attachment=as_attachment,
        )


def s3_storage_factory(**kwargs):
    """Files-rest storage factory: an :class:`S3FileStorage` bound to its FileInstance."""
    storage = pyfs_storage_factory(filestorage_class=S3FileStorage, **kwargs)
    storage.fileinstance = kwargs.get("fileinstance")
    return storage
