"""Fixtures that put a fault-injecting proxy (:mod:`tests.fault_proxy`) between the app and S3.

Import both into a test module or conftest (``from ..proxied_s3 import app_config, module_proxy``):
the app then signs its URLs for the proxy and makes its own S3 calls through it, so every byte a
client sends to S3 passes the proxy, where a test can log, delay, damage or hold it.
"""

from __future__ import annotations

import pytest

from .fault_proxy import FaultProxy


@pytest.fixture(scope="module")
def module_proxy(s3_server):
    """The proxy in front of the backend's S3 (one per module, like the app)."""
    proxy = FaultProxy(s3_server).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def app_config(app_config, module_proxy, database_uri):
    """The app signs URLs for (and talks to S3 through) the proxy.

    (``database_uri`` is named so that pytest keeps parametrising over the
    databases through this override.)
    """
    return {**app_config, "S3_ENDPOINT_URL": module_proxy.url}
