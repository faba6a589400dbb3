"""Configuration: defaults, environment variables, and the README staying true."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from invenio_config import InvenioConfigEnvironment

from oarepo_s3 import OARepoS3, config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
OUR_KEYS = [k for k in dir(config) if k.startswith(("OAREPO_S3_", "S3_"))]


def test_every_setting_is_documented_in_the_readme():
    missing = [k for k in OUR_KEYS if f"`{k}`" not in README]
    assert missing == []


def test_defaults_do_not_override_the_app(monkeypatch):
    app = Flask("cfg")
    app.config["OAREPO_S3_DEFAULT_PART_SIZE"] = 8 * 1024**2
    OARepoS3(app)
    assert app.config["OAREPO_S3_DEFAULT_PART_SIZE"] == 8 * 1024**2
    assert app.config["OAREPO_S3_MAX_PARTS"] == 10_000
    assert "oarepo-s3" in app.extensions


def test_connection_settings_come_from_invenio_environment(monkeypatch):
    monkeypatch.setenv("INVENIO_S3_ENDPOINT_URL", "http://127.0.0.1:7480")
    monkeypatch.setenv("INVENIO_S3_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("INVENIO_S3_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("INVENIO_S3_TENANT", "tenant1")
    app = Flask("env")
    InvenioConfigEnvironment(app)
    OARepoS3(app)
    with app.app_context():
        from oarepo_s3.proxies import current_oarepo_s3

        s3 = current_oarepo_s3.s3
        assert s3.endpoint == "http://127.0.0.1:7480"
        assert s3.bucket_name("b") == "tenant1:b"
        url = current_oarepo_s3.presigner.get_object_url("b", "k", expires_in=60)
        assert url.startswith("http://127.0.0.1:7480/b/k?") and "env-key" in url


def test_our_rest_api_stays_out_of_an_invenio_rdm_app():
    """``OAREPO_S3_REST_API = False``: InvenioRDM's own API owns /records; our blueprints register no route."""
    from oarepo_s3.views import create_drafts_blueprint, create_records_blueprint

    def routes(enabled: bool) -> list[str]:
        app = Flask("rdm-like")
        app.config["OAREPO_S3_REST_API"] = enabled
        OARepoS3(app)
        app.register_blueprint(create_drafts_blueprint(app))
        app.register_blueprint(create_records_blueprint(app))
        return [r.rule for r in app.url_map.iter_rules() if r.rule.startswith(("/draft/records", "/records"))]

    assert routes(False) == []
    assert "/records/<pid_value>" in routes(True)
