"""Schemathesis fuzzes the admin API from its own OpenAPI document, against a real server on loopback (local mode,
a fresh SQLite file): every phase (examples, coverage, fuzzing, stateful via the document's links) and every
check but one must pass: no 500, each status code, content type, header and body as documented, bad bodies
rejected, requests without the bearer token refused, unsupported methods answered 405.

Left out: `positive_data_acceptance` (a schema-valid body may still name an unknown topic, a segment that does not
parse or miss the topic's variables: those are 400s no schema can express).

Bounded for CI (576 cases, about 11 s); OTNFLOW_FUZZ=long runs many more with a random seed (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from engine.config import LOCAL_SECRET, load_settings
from engine.web import create_app
from tests.conftest import serve_on_loopback

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "st"
LONG = os.environ.get("OTNFLOW_FUZZ") == "long"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is in the dev extra: pip install -e '.[dev]'")
async def test_schemathesis_finds_no_server_error_and_every_answer_matches_the_document(tmp_path: Path) -> None:
    settings = load_settings(
        ROOT / "config.toml",
        {"OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'fuzz.sqlite3'}", "OTNFLOW_LOG_LEVEL": "CRITICAL"},
    )
    served = await serve_on_loopback(create_app(settings))
    try:
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--no-color",
            "run",
            f"{served.url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {LOCAL_SECRET}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "1000" if LONG else "60",
            *([] if LONG else ["--seed", "20261127"]),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=3000 if LONG else 120)
    finally:
        await served.runner.cleanup()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases is not None and int(cases.group(1)) >= 200 and cases.group(1) == cases.group(2), report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report  # every phase ran, none was skipped
    assert "API Links:    2 covered" in report  # notify's 202 led to its campaign's status
