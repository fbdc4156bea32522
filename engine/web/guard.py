"""Secrets a request presents (the admin bearer token, the webhook verify token, the playground's page token),
compared in constant time and without tripping over bytes that are not UTF-8."""

from __future__ import annotations

import hmac


def same_secret(given: str, expected: str) -> bool:
    """True when `given` equals a non-empty `expected`, in time that does not depend on where they differ.
    aiohttp hands over header bytes that are not UTF-8 as lone surrogates: they compare as the raw bytes."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))
