"""otnflow: rule-based Messenger bots with declarative flows and a policy-safe One-Time Notification loop."""

__version__ = "0.1.0"
