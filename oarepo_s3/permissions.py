"""Who may do what: the one place that decides.

- A draft, its files and its uploads: the draft's owners and administrators
  (users with invenio-access's ``superuser-access`` action), for every
  operation (read, start, sign, list parts, complete, abort, delete, publish).
- A published record and its files: anyone may read; nobody may change them.
- Anonymous callers of a draft operation get 401, other users 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_login import current_user
from invenio_access.permissions import Permission, superuser_access
from invenio_access.utils import get_identity

from .errors import NotAuthenticated, PermissionDenied

if TYPE_CHECKING:
    from .drafts import DraftRecord


def is_admin() -> bool:
    """True when the current user has ``superuser-access``.

    The identity is built from the user (not ``g.identity``), so the answer is
    the same for session and OAuth-token authentication.
    """
    if not current_user or not current_user.is_authenticated:
        return False
    return bool(Permission(superuser_access).allows(get_identity(current_user._get_current_object())))


def require_authenticated() -> int:
    """Return the current user's id. :raises NotAuthenticated: anonymous caller."""
    if not current_user or not current_user.is_authenticated:
        raise NotAuthenticated()
    user_id: int = current_user.id
    return user_id


def require_draft_owner(record: DraftRecord) -> int:
    """Allow owners and admins of ``record``; return the caller's user id.

    :raises NotAuthenticated: anonymous caller (401).
    :raises PermissionDenied: another user (403).
    """
    user_id = require_authenticated()
    if user_id not in record.owners and not is_admin():
        raise PermissionDenied()
    return user_id
