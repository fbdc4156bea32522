"""Pure policy decisions: may this message go to this user now, and how. No I/O, `now` passed in."""

from .gate import Decision, Facts, MessageKind, Outgoing, PolicySettings, Refusal, Via, decide, window_open

__all__ = ["Decision", "Facts", "MessageKind", "Outgoing", "PolicySettings", "Refusal", "Via", "decide", "window_open"]
