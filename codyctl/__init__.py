"""codyctl: the client library and command line for the codyd socket protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codyctl.client import Client, ConnectError

__all__ = ["Client", "ConnectError"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package for the command line costs nothing extra.
    if name in __all__:
        from codyctl import client

        return getattr(client, name)
    raise AttributeError(f"module 'codyctl' has no attribute {name!r}")
