"""Errors of the client, each with the command-line exit code it maps to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTEGRITY = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    every file uploaded / downloaded (or already there, verified)
  1    some file failed (network, server or S3 error after all retries)
  2    usage error (bad option, missing file, no token)
  3    authentication or permission refused (401/403 from the API)
  4    integrity mismatch (the stored file's checksum or size differs from the local file)
  130  interrupted (Ctrl-C or SIGTERM); run the same command again to resume
"""


class ClientError(Exception):
    """Base of every error the client raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(ClientError):
    """Wrong arguments: a missing file, no token, an impossible option."""

    exit_code = EXIT_USAGE


class FieldError(TypedDict, total=False):
    """One of the API's field errors: which field, and what is wrong with it."""

    field: str
    message: str


class ApiError(ClientError):
    """The REST API answered an error (its JSON ``{status, message, errors}``).

    :param status: HTTP status (0 when the API could not be reached).
    :param message: the server's ``message``.
    :param errors: the server's field errors, ``[{"field", "message"}]``.
    """

    def __init__(self, status: int, message: str, errors: list[FieldError] | None = None, url: str = ""):
        self.status = status
        self.message = message
        self.errors = list(errors or [])
        self.url = url
        detail = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in self.errors)
        head = f"{status} {message}" if status else message
        super().__init__(head + (f" ({detail})" if detail else "") + (f" [{url}]" if url else ""))


class AuthError(ApiError):
    """401 or 403: the token is missing, wrong, or does not own the draft."""

    exit_code = EXIT_AUTH


class TransferError(ClientError):
    """A part or range could not be transferred after all retries, or S3 refused it for good."""


class UploadGone(ClientError):
    """The upload was aborted or expired on the server while we were sending parts."""


class S3Unreachable(Exception):
    """S3 could not be reached or dropped the connection (refused, reset, timed out): a retry may cure it."""


class FileChanged(ClientError):
    """The local file changed while it was being uploaded (size or modification time)."""


class IntegrityError(ClientError):
    """The stored file does not match the local one (checksum or size)."""

    exit_code = EXIT_INTEGRITY


class Interrupted(ClientError):
    """Ctrl-C or SIGTERM: transfers stopped, the state is kept for resuming."""

    exit_code = EXIT_INTERRUPTED


def combine_exit_codes(codes: Iterable[int]) -> int:
    """The exit code of a run from its files' codes (most severe first: 130, 2, 3, 4, 1, 0)."""
    codes = set(codes)
    for code in (EXIT_INTERRUPTED, EXIT_USAGE, EXIT_AUTH, EXIT_INTEGRITY, EXIT_FAILED):
        if code in codes:
            return code
    return EXIT_OK
