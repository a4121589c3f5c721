"""The HTTP listener (SPEC 10): health, metrics, the JSON API and server-sent events."""

from codyd.http.listener import HttpListener

__all__ = ["HttpListener"]
