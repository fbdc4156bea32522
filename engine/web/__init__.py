"""HTTP: the app factory, webhook routes, health and metrics."""

from .app import create_app

__all__ = ["create_app"]
