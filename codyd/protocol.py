"""Wire codec of the codyd socket protocol, shared by the daemon and ``codyctl``.

A frame is a 4-byte unsigned big-endian length N followed by N bytes holding one
msgpack map with string keys. This module is pure: it never touches a socket, so
malformed input is testable without a daemon, and it must not import trio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from codyd.errors import BadRequest, FrameTooLarge

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
HEADER = struct.Struct(">I")
MAX_REQUEST_ID = 2**63 - 1
# Values of the contract that clients check before sending (codyctl does).
AGENTS = ("codex", "claude", "command")  # run.start `agent`
MAX_LIST_LIMIT = 1000  # run.list `limit`


class Encoded:
    """A value already encoded as msgpack, spliced into a frame byte for byte.

    ``run.list`` answers with hundreds of run summaries; each run keeps its own
    encoded summary until it changes, so a list costs a join, not an encoding.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def map(cls, items: dict[str, Any]) -> Encoded:
        """A map whose values may themselves be :class:`Encoded`."""
        parts = [_PACKER.pack_map_header(len(items))]
        for key, value in items.items():
            parts.append(_PACKER.pack(key))
            parts.append(value.data if isinstance(value, Encoded) else _PACKER.pack(value))
        return cls(b"".join(parts))

    @classmethod
    def array(cls, encoded_items: list[bytes]) -> Encoded:
        """An array of items each already encoded."""
        return cls(_PACKER.pack_array_header(len(encoded_items)) + b"".join(encoded_items))


_PACKER = msgpack.Packer(use_bin_type=True)


def pack(message: dict[str, Any]) -> bytes:
    """Encode one message as a complete frame (header and body)."""
    if isinstance(message.get("result"), Encoded):
        body = Encoded.map(message).data
    else:
        body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack_body(body: bytes) -> dict[str, Any]:
    """Decode one frame body; anything but a msgpack map with str keys is a bad request."""
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types for corrupt input
        raise BadRequest(f"frame is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise BadRequest(f"frame must be a msgpack map, got {type(message).__name__}")
    if not all(isinstance(key, str) for key in message):
        raise BadRequest("frame map keys must be strings")
    return message


class FrameDecoder:
    """Incremental frame splitter: feed bytes, take whole messages out.

    Raises :class:`FrameTooLarge` as soon as a header announces more than
    ``max_frame_bytes``, and :class:`BadRequest` for a body that is not a map.
    After an error the stream is unusable: the caller closes the connection.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds max_frame_bytes={self.max_frame_bytes}"
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            messages.append(unpack_body(body))
        return messages

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    params: dict[str, Any]


def echo_id(message: dict[str, Any]) -> int | None:
    """The request's id as an error answer echoes it: an integer >= 0, else None (null)."""
    request_id = message.get("id")
    if isinstance(request_id, int) and not isinstance(request_id, bool) and request_id >= 0:
        return request_id
    return None


def parse_request(message: dict[str, Any]) -> Request:
    """Validate the envelope of a request (not its params)."""
    request_id = echo_id(message)
    if request_id is None or request_id > MAX_REQUEST_ID:
        raise BadRequest("id: expected an integer >= 0")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise BadRequest("method: expected a non-empty string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params: expected a map")
    unknown = set(message) - {"id", "method", "params"}
    if unknown:
        raise BadRequest(f"unknown request keys: {sorted(unknown)}")
    return Request(request_id, method, params)


def error_response(request_id: int | None, error: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "error": error}


def result_response(request_id: int, result: Any) -> dict[str, Any]:
    return {"id": request_id, "result": result}
