"""The Redis Streams mirror of the store: events, run meta, control and heartbeat.

What it writes and reads: docs/redis.md.
"""

from codyd.mirror.mirror import DISABLED_STATUS, Mirror

__all__ = ["DISABLED_STATUS", "Mirror"]
