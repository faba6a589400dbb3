"""Direct-to-S3 presigned multipart uploads and downloads for Invenio."""

from .ext import OARepoS3

__version__ = "1.0.0.dev0"

__all__ = ("OARepoS3", "__version__")
