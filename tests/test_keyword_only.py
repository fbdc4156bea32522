"""Records with many fields, and what the policy gate reads and returns, are built by keyword only: a field
reordered in a dataclass then breaks loudly instead of silently changing what a record or a decision says."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from engine.config import Settings
from engine.flow import StepResult
from engine.flow.diagnostics import Diagnostic
from engine.flow.spec import Choice
from engine.local.fake_graph import ThreadCall
from engine.messenger.client import SendResult
from engine.messenger.errors import GraphError
from engine.messenger.events import Handover, InboundEvent
from engine.policy import Decision, Facts, Outgoing
from engine.runtime.assembly import Runtime
from engine.runtime.campaigns import CampaignReport
from engine.store import (
    Campaign,
    DeliveryResult,
    OutboxItem,
    OutboxMeta,
    RejectedEvent,
    StepWrite,
    StoredEvent,
    Token,
    UserRecord,
)

KEYWORD_ONLY = [
    UserRecord, Token, OutboxItem, OutboxMeta, Campaign, StoredEvent, RejectedEvent, StepWrite, DeliveryResult,
    Facts, Outgoing, Decision, StepResult, Settings, InboundEvent, Handover, SendResult, GraphError, Diagnostic,
    Choice, ThreadCall, CampaignReport, Runtime,
]  # fmt: skip


@pytest.mark.parametrize("record", KEYWORD_ONLY, ids=lambda c: c.__name__)
def test_built_by_keyword_only(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    positional = [
        p.name
        for p in inspect.signature(record).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert positional == [], f"{record.__name__} takes {positional} by position"


def test_a_positional_construction_fails_loudly() -> None:
    with pytest.raises(TypeError):
        UserRecord("u1")  # type: ignore[misc]
