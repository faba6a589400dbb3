"""The demo's web pages: sign in, list and create drafts, upload with Uppy's Dashboard, publish.

Server-rendered HTML with plain forms; the only script is the draft page's
bundle (``static/src/upload.js``: Uppy's Dashboard with the page's parallel
uploader, ``parallel-s3.js``, talking to the Companion-compatible routes; the
file list and the publish button, all through the REST API with the session
cookie). Forms that change something
pass the same cross-site check as the REST API.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_security.utils import login_user, logout_user, verify_and_update_password
from invenio_db import db
from invenio_pidstore.models import PersistentIdentifier
from invenio_records.models import RecordMetadata

from oarepo_s3 import drafts
from oarepo_s3.errors import OARepoS3Error
from oarepo_s3.permissions import is_admin
from oarepo_s3.views.security import check_cross_site_request

STATIC = Path(__file__).parent / "static"
MAX_LISTED_DRAFTS = 200

blueprint = Blueprint(
    "demo_web", __name__, template_folder="templates", static_folder="static", static_url_path="/demo-static"
)
blueprint.before_request(check_cross_site_request)


@blueprint.app_context_processor
def page_globals():
    """What every page needs: the user, the API prefixes."""
    return {
        "user": current_user if current_user and current_user.is_authenticated else None,
        "drafts_api": current_app.config["OAREPO_S3_DRAFTS_URL_PREFIX"],
        "records_api": current_app.config["OAREPO_S3_RECORDS_URL_PREFIX"],
    }


def _signed_in_or_redirect():
    if not current_user or not current_user.is_authenticated:
        return redirect(url_for("demo_web.sign_in", next=request.full_path.rstrip("?")))
    return None


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after signing in (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("demo_web.index")


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """A plain e-mail and password form; sets the session cookie the REST API accepts."""
    error = None
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        password = request.form.get("password", "")
        user = current_app.extensions["security"].datastore.find_user(email=email) if email else None
        if user is not None and user.active and verify_and_update_password(password, user):
            login_user(user)
            db.session.commit()
            return redirect(_safe_next(request.args.get("next")))
        error = "Wrong e-mail or password."
    status = 401 if error else 200
    return render_template("demo/sign_in.html", error=error, email=request.form.get("email", "")), status


@blueprint.route("/sign-out", methods=["POST"])
def sign_out():
    """End the session."""
    logout_user()
    return redirect(url_for("demo_web.sign_in"))


def _users_records(user_id: int) -> list[tuple[str, dict]]:
    """(pid, json) of the records the user owns (all of them for an admin), newest first.

    Filtered in Python: JSON containment differs between SQLite and
    PostgreSQL, and a demo has few records (the newest
    ``MAX_LISTED_DRAFTS`` are looked at).
    """
    rows = (
        db.session.query(PersistentIdentifier.pid_value, RecordMetadata.json)
        .join(RecordMetadata, RecordMetadata.id == PersistentIdentifier.object_uuid)
        .filter(PersistentIdentifier.pid_type == "recid")
        .order_by(RecordMetadata.created.desc())
        .limit(MAX_LISTED_DRAFTS)
        .all()
    )
    admin = is_admin()
    return [(pid, data) for pid, data in rows if data and (admin or user_id in data.get("owners", []))]


@blueprint.route("/", methods=["GET"])
def index():
    """The user's drafts and published records, and a form for a new draft."""
    if (to_sign_in := _signed_in_or_redirect()) is not None:
        return to_sign_in
    records = [
        {"id": pid, "title": (data.get("metadata") or {}).get("title") or "(untitled)",
         "status": data.get("status", drafts.DRAFT)}
        for pid, data in _users_records(current_user.id)
    ]
    return render_template("demo/index.html", records=records)


@blueprint.route("/drafts", methods=["POST"])
def create_draft():
    """Create a draft owned by the user and open it."""
    if (to_sign_in := _signed_in_or_redirect()) is not None:
        return to_sign_in
    title = request.form.get("title", "").strip()
    if not title:
        flash("A draft needs a title.", "error")
        return redirect(url_for("demo_web.index"))
    record = drafts.create_draft(current_user.id, {"title": title[:500]})
    return redirect(url_for("demo_web.record", pid_value=record.pid_value))


@blueprint.route("/drafts/<pid_value>", methods=["GET"])
def record(pid_value):
    """A draft (upload, files, publish) or a published record (files)."""
    if (to_sign_in := _signed_in_or_redirect()) is not None:
        return to_sign_in
    try:
        rec = drafts.resolve(pid_value)
    except OARepoS3Error:
        abort(404)
    published = rec.status == drafts.PUBLISHED
    if not published and current_user.id not in rec.owners and not is_admin():
        abort(403)
    if not (STATIC / "build" / "upload.js").exists():
        current_app.logger.error("demo/static/build is missing: run scripts/web-assets.sh")
    return render_template(
        "demo/record.html",
        pid=rec.pid_value,
        title=(rec.get("metadata") or {}).get("title") or "(untitled)",
        published=published,
        api=f"{current_app.config['OAREPO_S3_RECORDS_URL_PREFIX' if published else 'OAREPO_S3_DRAFTS_URL_PREFIX']}"
        f"/{rec.pid_value}",
    )
