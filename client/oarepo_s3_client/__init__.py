"""oarepo-s3-client: resumable, parallel uploads into oarepo-s3 draft records, straight to S3.

::

    from oarepo_s3_client import Uploader

    with Uploader("https://repo.example.org/draft/records/77cjt-pzn05", token, concurrency=8) as up:
        result = up.upload("data.bin")          # UploadResult(status="completed", checksum=..., url=...)
        up.download(result.content_url, "copy.bin")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    ApiError,
    AuthError,
    ClientError,
    FileChanged,
    IntegrityError,
    Interrupted,
    TransferError,
    UploadGone,
    UsageError,
)
from .models import DownloadResult, TransferConfig, UploadResult
from .progress import AggregatedProgress, ProgressSubscriber, RichProgress
from .transfer import Uploader, expand_paths

__all__ = [
    "__version__",
    "AggregatedProgress",
    "ApiError",
    "AuthError",
    "ClientError",
    "DownloadResult",
    "FileChanged",
    "IntegrityError",
    "Interrupted",
    "ProgressSubscriber",
    "RichProgress",
    "TransferConfig",
    "TransferError",
    "UploadGone",
    "UploadResult",
    "Uploader",
    "UsageError",
    "expand_paths",
]
