"""The original README's recipe: the completion resources in an app's own blueprint (see conftest)."""

from __future__ import annotations

from oarepo_s3.views import MultipartUploadAbortResource, MultipartUploadCompleteResource, multipart_actions

from ..helpers import put_parts
from .conftest import start_upload


def test_view_names_are_the_seeds():
    assert MultipartUploadCompleteResource.view_name.format(endpoint="recid") == "recid_upload_complete"
    assert MultipartUploadAbortResource.view_name.format(endpoint="recid") == "recid_upload_abort"
    actions = multipart_actions("recid", None, None, None, True)
    assert {v.__name__ for v in actions.values()} == {"recid_upload_complete", "recid_upload_abort"}


def test_complete_and_abort_through_the_apps_own_urls(app, owner, draft, live_server):
    base = f"{live_server.url}/my/records/{draft['id']}/files"
    done = start_upload(owner, draft, key="a.txt", size=5)
    parts = put_parts(done["multipart_upload"], b"hello")
    r = owner.api().post(f"{base}/a.txt/complete-multipart", json={"parts": parts}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    pending = start_upload(owner, draft, key="b.txt", size=5)
    assert owner.api().post(f"{base}/b.txt/abort-multipart", timeout=30).status_code == 204
    assert owner.api().get(pending["links"]["self"], timeout=30).status_code == 404
    other = owner.api().post(f"{base}/a.txt/complete-multipart", json={}, timeout=30)
    assert other.status_code == 200  # idempotent
