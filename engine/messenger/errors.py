"""Graph API error classification, per the table in messenger-platform.md."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient or rate limited: back off and try again, bounded
    POLICY_BLOCKED = "policy_blocked"  # sent outside the allowed window: the policy gate should have stopped it
    UNREACHABLE = "unreachable"  # the person blocked the page or is unavailable: stop messaging them
    NO_USER = "no_user"  # no matching user: do not retry
    BAD_TOKEN = "bad_token"  # invalid page access token: stop all sending, alert loudly
    PERMISSION = "permission"  # app review / permission missing: stop, alert
    # too frequent notifications to this user: not retried; the message is recorded failed (no per-user back-off)
    USER_THROTTLED = "user_throttled"
    FAILED = "failed"  # any other permanent error


@dataclass(frozen=True, kw_only=True)
class GraphError:
    status: int
    code: int | None
    subcode: int | None
    message: str
    fbtrace_id: str | None

    @classmethod
    def from_response(cls, status: int, body: Any) -> GraphError:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status=status, code=None, subcode=None, message=f"HTTP {status}", fbtrace_id=None)
        return cls(
            status=status,
            code=_int(error.get("code")),
            subcode=_int(error.get("error_subcode")),
            message=str(error.get("message", "")),
            fbtrace_id=error.get("fbtrace_id"),
        )

    def describe(self) -> str:
        return (
            f"HTTP {self.status} code={self.code} subcode={self.subcode} fbtrace_id={self.fbtrace_id}: {self.message}"
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def classify(error: GraphError) -> Outcome:
    code, sub = error.code, error.subcode
    if code == 190:
        return Outcome.BAD_TOKEN
    if code == 10 and sub == 2018278:
        return Outcome.POLICY_BLOCKED
    if (code == 10 and sub == 2018108) or code == 551 or sub == 1545041:
        return Outcome.UNREACHABLE
    if code == 100 and sub == 2018001:
        return Outcome.NO_USER
    if code == 200 or sub in (2018027, 2018028, 2018021):
        return Outcome.PERMISSION
    if (code == 4 and sub == 2018354) or (code == 9 and sub == 2018352):
        return Outcome.USER_THROTTLED
    if code in (613, 4, 32, 2, 1200) or error.status >= 500 or error.status == 429:
        return Outcome.RETRY
    return Outcome.FAILED
