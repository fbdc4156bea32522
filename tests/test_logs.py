from __future__ import annotations

import io
import json
import logging

from engine.logs import JsonFormatter, Redactor


def test_secrets_and_tokens_in_urls_never_reach_the_log() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redactor(["EAAB-secret-page-token", "app-secret-value"]))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("otnflow.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s and secret %s", "EAAB-secret-page-token", "app-secret-value")
        logger.warning("GET https://graph/v21.0/me?access_token=EAXYZ123&appsecret_proof=abcdef")
        try:
            raise RuntimeError("boom with EAAB-secret-page-token")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "EAAB-secret-page-token" not in out and "app-secret-value" not in out
    assert "EAXYZ123" not in out and "abcdef" not in out
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert lines[0]["msg"] == "token [redacted] and secret [redacted]"
    assert "boom with [redacted]" in lines[2]["exc"]
