"""Outbound Send API bodies, shaped exactly as messenger-platform.md documents them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]


def text_message(text: str, quick_replies: Sequence[tuple[str, str]] = ()) -> Json:
    """`quick_replies` are (title, payload) pairs."""
    message: Json = {"text": text}
    if quick_replies:
        message["quick_replies"] = [
            {"content_type": "text", "title": title, "payload": payload} for title, payload in quick_replies
        ]
    return message


def button_message(
    text: str, buttons: Sequence[tuple[str, str | None, str | None]], quick_replies: Sequence[tuple[str, str]] = ()
) -> Json:
    """`buttons` are (title, payload, url): a postback button when payload is set, else a web_url button."""
    rendered = [
        {"type": "postback", "title": title, "payload": payload}
        if payload is not None
        else {"type": "web_url", "title": title, "url": url}
        for title, payload, url in buttons
    ]
    message: Json = {
        "attachment": {"type": "template", "payload": {"template_type": "button", "text": text, "buttons": rendered}}
    }
    if quick_replies:
        message["quick_replies"] = text_message("", quick_replies)["quick_replies"]
    return message


def otn_request(title: str, payload: str) -> Json:
    """The One-Time Notification request: only title and payload can be customised."""
    return {
        "attachment": {
            "type": "template",
            "payload": {"template_type": "one_time_notif_req", "title": title, "payload": payload},
        }
    }


def send_body(
    recipient_id: str | None,
    message: Json,
    messaging_type: str = "RESPONSE",
    tag: str | None = None,
    otn_token: str | None = None,
) -> Json:
    """The full POST body. With `otn_token` the recipient is the token, as OTN delivery requires."""
    recipient = {"one_time_notif_token": otn_token} if otn_token else {"id": recipient_id}
    body: Json = {"recipient": recipient, "message": message}
    if not otn_token:
        body["messaging_type"] = messaging_type
        if tag:
            body["tag"] = tag
    return body
