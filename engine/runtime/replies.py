"""A flow's reply as an outbox row: the Send API message, and in `meta` what the policy gate needs to know. The
conversation step and the campaigns (the loop's re-requests) both make rows this way."""

from __future__ import annotations

from ..flow import Reply, payloads
from ..messenger import outbound
from ..policy import MessageKind
from ..store import OutboxItem, OutboxMeta


def reply_to_outbox(reply: Reply, key: str, user_id: str, responding: bool) -> OutboxItem:
    """A flow reply as a Send API `message`, with what the policy gate needs to know in `meta`."""
    quick = [(q.title, q.payload) for q in reply.quick_replies]
    meta = OutboxMeta(
        kind=MessageKind.MESSAGE, responding=responding, promotional=reply.promotional, tag=reply.message_tag or None
    )
    if reply.otn_topic is not None:
        payload = payloads.request(reply.otn_topic, reply.otn_state, key, dict(reply.otn_vars), reply.text)
        message = outbound.otn_request(reply.text, payload)
        meta.kind, meta.topic, meta.source_state = MessageKind.OTN_REQUEST, reply.otn_topic, reply.otn_state
    elif reply.buttons:
        message = outbound.button_message(reply.text, [(b.title, b.payload, b.url) for b in reply.buttons], quick)
    else:
        message = outbound.text_message(reply.text, quick)
    return OutboxItem(key=key, user_id=user_id, message=message, meta=meta)
