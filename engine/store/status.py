"""The statuses a stored row moves through. StrEnums: stored and shown as the same plain strings as before."""

from __future__ import annotations

from enum import StrEnum


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be sent
    SENDING = "sending"  # recorded before the Send API call: a crash leaves it so, and it is never resent
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"  # was `sending` when its process died: maybe delivered, never resent
    SKIPPED = "skipped"  # the user became unreachable before it went
    REFUSED = "refused"  # the policy gate (or Meta's policy) said no


class TokenStatus(StrEnum):
    VALID = "valid"
    CLAIMED = "claimed"  # a campaign is preparing or making its send
    SPENT = "spent"
    INVALID = "invalid"  # Meta refused it: used or expired on its side
    REVOKED = "revoked"  # the user unsubscribed


class CampaignStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"


class ItemStatus(StrEnum):
    """A campaign item: one user's notification."""

    PENDING = "pending"
    SENDING = "sending"  # its token claimed, until the claim expires
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"
