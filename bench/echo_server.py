"""The ping floor: a bare trio + msgpack server on a Unix socket, framed like codyd.

It answers every request with ``{"id": n, "result": {"pong": true, "time": ...}}`` inline,
with no validation, dispatch, task per request or logging: the least any trio server
speaking codyd's framing could do. ``python -m bench.echo_server --socket PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket as stdsocket
import struct
import time
from pathlib import Path

import msgpack
import trio

HEADER = struct.Struct(">I")
RECEIVE_BYTES = 65536


async def answer(stream: trio.SocketStream) -> None:
    """Answer every framed request on one connection until the peer closes it."""
    buffer = bytearray()
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await stream.receive_some(RECEIVE_BYTES):
                buffer += data
                replies = bytearray()
                while len(buffer) >= HEADER.size:
                    (length,) = HEADER.unpack_from(buffer)
                    end = HEADER.size + length
                    if len(buffer) < end:
                        break
                    request = msgpack.unpackb(bytes(buffer[HEADER.size : end]))
                    del buffer[:end]
                    result = {"pong": True, "time": time.time()}
                    body = msgpack.packb({"id": request["id"], "result": result})
                    replies += HEADER.pack(len(body)) + body
                if replies:
                    await stream.send_all(bytes(replies))


async def serve(path: Path) -> None:
    """Listen on ``path`` until SIGTERM or SIGINT."""
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(128)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, answer, [trio.SocketListener(sock)])
                async for _signum in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket path to bind.")
    trio.run(serve, parser.parse_args().socket)


if __name__ == "__main__":
    main()
