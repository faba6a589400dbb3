"""An InvenioRDM that does not offer the multipart transfer: the client says so, and sends nothing."""

from __future__ import annotations

import celery._state
import pytest

from oarepo_s3_client import Uploader

from ..helpers import fresh_random_bytes
from .app import create_rdm_app
from .conftest import MiB, _eager_celery


@pytest.fixture(scope="module")
def app(app_config, database_uri):
    """The RDM app with local transfers only (``RECORDS_RESOURCES_TRANSFERS`` without ``MultipartTransfer``)."""
    app = create_rdm_app(app_config, name="oarepo_s3_rdm_without_m",
                         transfers=["invenio_records_resources.services.files.transfer.LocalTransfer"])
    previous = celery._state.default_app
    celery._state.set_default_app(_eager_celery())
    yield app
    celery._state.set_default_app(previous)


def test_a_server_without_transfer_m_is_a_clear_error(rdm, record, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(fresh_random_bytes(6 * MiB))
    with Uploader(rdm.files_url(record.pid), None, protocol="rdm", state_dir=tmp_path / "state") as uploader:
        (result,) = uploader.upload_many([path])
    assert result.status == "failed" and result.exit_code != 0
    assert 'the server refused the multipart ("M") upload' in result.error, result.error
    assert "MultipartTransfer" in result.error, result.error
    assert rdm.list(record.pid).json()["entries"] == []
