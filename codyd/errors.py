"""The codyd error families.

Every error that can reach a client is a :class:`CodydError` subclass carrying the
protocol ``code`` and whether a retry can help. They are raised anywhere and
turned into an error response in exactly one place (the RPC dispatcher), and an
error response becomes an exception again in exactly one place
(:func:`error_from_wire`). Every error that keeps the daemon from starting is a
:class:`StartupFailure`: ``codyd serve`` reports it and exits instead of
printing a traceback. This module imports nothing heavy: the ``codyctl`` client
shares it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class StartupFailure(Exception):
    """The daemon cannot start as configured; the message says why, and codyd exits."""


class StartupError(StartupFailure):
    """The server cannot start (socket path taken, group unknown, Redis URL unusable)."""


class CodydError(Exception):
    """An error with a protocol code, a message and optional structured data."""

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def to_wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.data:
            error["data"] = self.data
        return error

    @classmethod
    def from_wire(cls, message: str, data: dict[str, Any]) -> Self:
        """The error a response describes: its message is whole, whatever the constructor adds."""
        exc = cls.__new__(cls)
        CodydError.__init__(exc, message, **data)
        return exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, data={self.data!r})"


class BadRequest(CodydError):
    code = "bad_request"


class UnknownMethod(CodydError):
    code = "unknown_method"


class InvalidParams(CodydError):
    """A parameter is wrong; ``field`` is its dotted path."""

    code = "invalid_params"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field

    @classmethod
    def from_wire(cls, message: str, data: dict[str, Any]) -> Self:
        exc = super().from_wire(message, data)
        exc.field = str(data.get("field", ""))
        return exc


class NotFound(CodydError):
    code = "not_found"


class InvalidState(CodydError):
    code = "invalid_state"

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message, state=state)


class Conflict(CodydError):
    code = "conflict"


class Unauthorized(CodydError):
    code = "unauthorized"


class FrameTooLarge(CodydError):
    code = "frame_too_large"


class Trimmed(CodydError):
    code = "trimmed"

    def __init__(self, message: str, oldest_seq: int) -> None:
        super().__init__(message, oldest_seq=oldest_seq)


class ShuttingDown(CodydError):
    code = "shutting_down"
    retryable = True


class Overloaded(CodydError):
    code = "overloaded"
    retryable = True


class Internal(CodydError):
    code = "internal"
    retryable = True


ERROR_CLASSES: dict[str, type[CodydError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        UnknownMethod,
        InvalidParams,
        NotFound,
        InvalidState,
        Conflict,
        Unauthorized,
        FrameTooLarge,
        Trimmed,
        ShuttingDown,
        Overloaded,
        Internal,
    )
}


def error_from_wire(error: Any) -> CodydError:
    """Rebuild the exception an error response describes; unknown codes keep their code."""
    if not isinstance(error, dict):
        error = {"code": "internal", "message": f"malformed error response: {error!r}"}
    code = str(error.get("code", "internal"))
    message = str(error.get("message", ""))
    raw_data = error.get("data")
    data = (
        {str(key): value for key, value in raw_data.items()} if isinstance(raw_data, dict) else {}
    )
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        retryable = bool(error.get("retryable", False))
        cls = type("CodydError", (CodydError,), {"code": code, "retryable": retryable})
    return cls.from_wire(message, data)
