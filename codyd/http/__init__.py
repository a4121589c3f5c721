"""The HTTP listener (docs/http.md): health, metrics, the JSON API and server-sent events."""

from codyd.http.listener import HttpListener

__all__ = ["HttpListener"]
