"""REST views: the seed's completion resources, the draft-records API, Uppy routes."""

from .drafts import create_drafts_blueprint, create_records_blueprint
from .multipart import MultipartUploadAbortResource, MultipartUploadCompleteResource, multipart_actions

__all__ = (
    "MultipartUploadAbortResource",
    "MultipartUploadCompleteResource",
    "create_drafts_blueprint",
    "create_records_blueprint",
    "multipart_actions",
)
