"""What the part senders and the range downloader share with their Uploader."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import requests

from .api import Api
from .models import TransferConfig
from .progress import AggregatedProgress
from .s3http import PartTransport


@dataclass(frozen=True)
class TransferContext:
    """The Uploader's collaborators, handed on as one (tests inject any of them into the Uploader).

    :param api: the REST API client (bearer token).
    :param s3: the credential-free session for presigned S3 URLs (downloads, probes).
    :param transport: how part bytes travel (``os.sendfile`` or requests).
    :param executor: the bounded pool that runs part and range tasks.
    :param config: every transfer setting.
    :param progress: where byte counts go.
    :param clock: monotonic seconds (URL lifetimes).
    :param sleep: the retry wait (interruptible by :attr:`cancelled`).
    :param cancelled: set by ``Uploader.cancel``: every transfer stops soon.
    """

    api: Api
    s3: requests.Session
    transport: PartTransport
    executor: Executor
    config: TransferConfig
    progress: AggregatedProgress
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    cancelled: threading.Event
