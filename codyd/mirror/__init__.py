"""The Redis Streams mirror of the store (SPEC 4): events, run meta, control and heartbeat."""

from codyd.mirror.mirror import DISABLED_STATUS, Mirror

__all__ = ["DISABLED_STATUS", "Mirror"]
