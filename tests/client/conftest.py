"""The upload client against the REST app, with a fault-injecting proxy in front of S3.

Reuses the REST fixtures (``app``, ``users``/``owner``, ``draft``,
``live_server``, ``state``); the app's S3 endpoint is the proxy, so every
presigned URL the client gets goes through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..proxied_s3 import app_config, module_proxy  # noqa: F401 (fixtures: the app talks to S3 through the proxy)
from ..rest.conftest import *  # noqa: F403  (app, users, owner, api_url, draft, state)

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
CLIENT_SRC = ROOT / "client"

try:  # installed (scripts/bootstrap.sh: pip install -e client)
    import oarepo_s3_client  # noqa: F401
except ImportError:  # not installed: test the source tree all the same
    sys.path.insert(0, str(CLIENT_SRC))


@pytest.fixture(autouse=True)
def _fresh_proxy(request):
    """Reset the proxy before each test that goes through it (unit tests start no server).

    It checks Content-MD5 itself where the backend does not (moto).
    """
    if "module_proxy" in request.fixturenames:
        proxy = request.getfixturevalue("module_proxy")
        proxy.reset()
        proxy.check_content_md5 = request.getfixturevalue("s3_backend").name == "moto"


@pytest.fixture()
def proxy(module_proxy):  # noqa: F811 (the imported fixture)
    """The proxy in front of S3, fresh for this test."""
    return module_proxy


@pytest.fixture()
def draft_url(draft) -> str:
    return draft["links"]["self"]


@pytest.fixture()
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture()
def make_file(tmp_path):
    """``make_file(name, size)`` -> a file of fresh random bytes (never repeating: no hidden aliasing)."""

    def make(name: str, size: int, directory: Path | None = None) -> Path:
        path = (directory or tmp_path / "files") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fp:
            left = size
            while left:
                block = os.urandom(min(left, 8 * MiB))
                fp.write(block)
                left -= len(block)
        return path

    return make


@pytest.fixture()
def make_uploader(owner, draft_url, state_dir):
    """``make_uploader(**kwargs)`` -> an Uploader for the draft: 5 MiB parts, 4 workers, fast retries, MD5.

    MD5 (not the default ``auto``) keeps these tests about the same checks on
    every machine and S3; tests/client/test_checksum_sha256.py covers the others.
    """
    from oarepo_s3_client import TransferConfig, Uploader

    made = []

    def make(token: str | None = None, **kwargs):
        config = kwargs.pop("config", None) or TransferConfig(
            concurrency=kwargs.pop("concurrency", 4), part_size=kwargs.pop("part_size", 5 * MiB),
            backoff_initial=0.01, backoff_max=0.05, checksum="md5", **kwargs.pop("config_kwargs", {}),
        )
        uploader = Uploader(draft_url, token or owner.token, config=config, state_dir=state_dir, **kwargs)
        made.append(uploader)
        return uploader

    yield make
    for uploader in made:
        uploader.close()


def run_cli(*args: str, token: str | None = None, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """``python -m oarepo_s3_client ARGS`` in a subprocess (not a TTY: no progress bar)."""
    env = {k: v for k, v in os.environ.items() if k != "OAREPO_S3_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_SRC), env.get("PYTHONPATH")]))
    if token:
        env["OAREPO_S3_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "oarepo_s3_client", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **popen)


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "oarepo_s3_client", *args]


class OnFirstBytes:
    """A progress subscriber that calls ``action()`` once, when the first bytes of a transfer went out."""

    def __init__(self, action):
        self.action, self.done = action, False

    def on_progress(self, bytes_transferred, **kwargs):
        if not self.done and not kwargs.get("initial") and bytes_transferred > 0:
            self.done = True
            self.action()


def flip_byte(path, offset) -> None:
    """Invert the byte at ``offset`` of the file in place."""
    with open(path, "r+b") as fp:
        fp.seek(offset)
        byte = fp.read(1)
        fp.seek(offset)
        fp.write(bytes([byte[0] ^ 0xFF]))
