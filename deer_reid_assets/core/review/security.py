"""The review app's safety rules: loopback by default, a token when bound elsewhere, CSRF tokens, and
crop files resolved only inside the crop store."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import uuid
from pathlib import Path


class UnsafeConfig(ValueError):
    """A configuration the app refuses to start with; one line meant for a person."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_token(host: str, token: str | None) -> str | None:
    """The token requests must carry: None on a loopback address without one; an error when bound
    elsewhere without one (or with one shorter than 16 characters)."""
    token = (token or "").strip() or None
    if token is None and not is_loopback(host):
        raise UnsafeConfig(f"binding the review app to {host} needs --token (or DEER_REID_REVIEW_TOKEN); "
                           "without one it only binds to 127.0.0.1")
    if token is not None and len(token) < 16:
        raise UnsafeConfig("the review app's token must be at least 16 characters")
    return token


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets; False when either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def valid_id(value: str) -> str | None:
    """``value`` as a canonical UUID string, None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def crop_inside(store_root: Path, stored_path: str | None) -> Path | None:
    """The crop file a detection's row names, only when it is a file inside ``<store>/crops``."""
    if not stored_path:
        return None
    root = (store_root / "crops").resolve()
    path = Path(stored_path).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None
