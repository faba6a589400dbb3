"""Cross-site request protection that stock Uppy passes.

invenio-rest's CSRF token needs a header that stock Uppy never sends, so
cookie-authenticated, state-changing requests are checked instead with
what every browser sends by itself:

1. an ``Origin`` header must be this site's own origin (or one of
   ``OAREPO_S3_TRUSTED_ORIGINS``);
2. without ``Origin``, ``Sec-Fetch-Site`` must be ``same-origin`` or ``none``;
3. with neither (not a current browser), a request with a body must be
   JSON, which a cross-site HTML form cannot send without CORS consent.

Token-authenticated requests (``Authorization: Bearer``) carry no ambient
credentials and are not checked; anonymous ones get their 401 elsewhere.
"""

from __future__ import annotations

from flask import current_app, request
from flask_login import current_user

from ..errors import RequestRejected

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def check_cross_site_request() -> None:
    """``before_request`` hook of the oarepo-s3 blueprints.

    :raises RequestRejected: a cookie-authenticated request that looks cross-site.
    """
    if request.method in SAFE_METHODS or getattr(request, "oauth", None):
        return
    if not current_user or not current_user.is_authenticated:
        return
    origin = request.headers.get("Origin")
    if origin is not None:
        own = request.host_url.rstrip("/")
        if origin == own or origin in current_app.config["OAREPO_S3_TRUSTED_ORIGINS"]:
            return
        raise RequestRejected(f"Cross-site request refused: Origin {origin!r} is not {own!r}.")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return
        raise RequestRejected(f"Cross-site request refused (Sec-Fetch-Site: {fetch_site}).")
    if request.content_length and request.mimetype != "application/json":
        raise RequestRejected("Cookie-authenticated requests must send JSON (application/json).")
