"""Our app plus invenio-records-resources' FileService and FileResource: what an InvenioRDM API app adds.

Used by the tests in this package and by ``benchmarks/bench_rdm.py``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_principal import AnonymousIdentity, Principal
from invenio_access import InvenioAccess, any_user
from invenio_base.urls import create_invenio_apps_urls_builder_factory
from invenio_records_resources import InvenioRecordsResources
from invenio_records_resources.resources import FileResource
from invenio_records_resources.services import FileService
from invenio_stats import InvenioStats

from oarepo_s3.app import create_app

from .records import TRANSFERS, RdmFileResourceConfig, RdmFileServiceConfig


def anonymous_identity() -> AnonymousIdentity:
    """Every request's identity: anonymous, with the ``any_user`` need (what invenio-access gives everyone)."""
    identity = AnonymousIdentity()
    identity.provides.add(any_user)
    return identity


def create_rdm_app(config: dict[str, Any], *, name: str, transfers: list[str] = TRANSFERS,
                   **create_app_kwargs: Any) -> Flask:
    """:func:`oarepo_s3.app.create_app` plus records-resources' file service and resource.

    The FileResource is mounted at ``/rdm/records/<pid_value>/files``; ``transfers`` are the
    app's transfer types (``RECORDS_RESOURCES_TRANSFERS``). What each addition is for:

    - ``Principal`` with :func:`anonymous_identity` as its identity loader:
      the resource passes ``g.identity`` to the service. invenio-access's
      own loader (``ACCESS_LOAD_SYSTEM_ROLE_NEEDS``) is off: it reads
      flask-login's ``current_user``, and this app has no accounts.
    - ``InvenioAccess``: the policy's permission checks use its (action) cache.
    - ``InvenioRecordsResources``: the transfer registry
      (``RECORDS_RESOURCES_TRANSFERS``) and the service registry (the
      commit's file-processor component looks its service up there).
    - ``InvenioStats``: the content view asks it for a ``file-download``
      event emitter (none is configured, so nothing is emitted).
    - ``app._urls_builder``: ``invenio_url_for`` (the links) needs one;
      invenio-base's own, prefixing paths with ``SITE_API_URL`` (set it to
      the live server's URL), as in an InvenioRDM API app.
    """
    config = {
        **config,
        "RECORDS_RESOURCES_TRANSFERS": transfers,
        "RECORDS_RESOURCES_DEFAULT_TRANSFER_TYPE": "L",
        "SITE_API_URL": "http://127.0.0.1",
        "SITE_UI_URL": "http://127.0.0.1",
        "ACCESS_LOAD_SYSTEM_ROLE_NEEDS": False,
    }
    app = create_app(config, name=name, rest_api=False, **create_app_kwargs)
    InvenioAccess(app)
    Principal(app, use_sessions=False).identity_loader(anonymous_identity)
    InvenioRecordsResources(app)
    InvenioStats(app)

    service = FileService(RdmFileServiceConfig)
    app.extensions["invenio-records-resources"].registry.register(service)
    app.register_blueprint(FileResource(RdmFileResourceConfig, service).as_blueprint())
    app._urls_builder = create_invenio_apps_urls_builder_factory(  # type: ignore[attr-defined]
        "SITE_API_URL", "SITE_UI_URL", {"blueprints": [], "converters": []}
    )(app)
    return app
