"""X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the App Secret), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def sign(body: bytes, secret: str, algorithm: str = "sha256") -> str:
    """The header value Meta would send for `body`: `sha256=<hex>` (or `sha1=<hex>`)."""
    digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()
    return f"{algorithm}={digest}"


def verify(
    body: bytes, secret: str, sha256_header: str | None, sha1_header: str | None = None, allow_sha1: bool = False
) -> bool:
    """True when the raw body carries a valid signature. SHA-1 counts only when allowed and no SHA-256 is sent."""
    if sha256_header:
        return _same(sign(body, secret, "sha256"), sha256_header)
    if allow_sha1 and sha1_header:
        return _same(sign(body, secret, "sha1"), sha1_header)
    return False


def _same(expected: str, header: str) -> bool:
    """Constant time, on bytes: `compare_digest` refuses non-ASCII `str`, and a header may carry anything."""
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "surrogateescape"))


def appsecret_proof(page_token: str, app_secret: str) -> str:
    """Graph's optional `appsecret_proof`: HMAC-SHA256 of the page token with the app secret, hex."""
    return hmac.new(app_secret.encode(), page_token.encode(), hashlib.sha256).hexdigest()
