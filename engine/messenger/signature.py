"""X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the App Secret), and every secret a request presents
(the signature, the webhook verify token, the admin bearer token, the playground's page token) compared in constant
time by one function."""

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
        return same_secret(sha256_header.strip(), sign(body, secret, "sha256"))
    if allow_sha1 and sha1_header:
        return same_secret(sha1_header.strip(), sign(body, secret, "sha1"))
    return False


def same_secret(given: str, expected: str) -> bool:
    """True when `given` equals a non-empty `expected`, in time that does not depend on where they differ. On
    bytes: `compare_digest` refuses non-ASCII `str`, and aiohttp hands over header bytes that are not UTF-8 as lone
    surrogates, which compare as the raw bytes."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def appsecret_proof(page_token: str, app_secret: str) -> str:
    """Graph's optional `appsecret_proof`: HMAC-SHA256 of the page token with the app secret, hex."""
    return hmac.new(app_secret.encode(), page_token.encode(), hashlib.sha256).hexdigest()
