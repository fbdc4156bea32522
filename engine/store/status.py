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


class OtnLogged(StrEnum):
    """What the OTN log records for a user's topic (`otnflow stats` counts them). A request the gate refused is
    logged as `request_refused:<its Refusal>` (`refused_request`)."""

    OPTIN = "optin"  # a Notify Me tap brought a token
    REQUEST = "request"  # a Notify Me request went out
    RE_REQUEST = "re_request"  # the loop's request after a delivery went out
    DELIVERY = "delivery"  # a notification went out on a token
    REQUEST_REFUSED = "request_refused"


def refused_request(reason: str) -> str:
    """The OTN log's entry for a request the gate refused, with the refusal's reason."""
    return f"{OtnLogged.REQUEST_REFUSED}:{reason}"
