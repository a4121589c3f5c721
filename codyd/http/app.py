"""The HTTP routes (docs/http.md): health, readiness, metrics and ``/api/v1``.

Every ``/api/v1`` route calls a socket-protocol method through the
:class:`~codyd.http.adapter.Adapter`; what is HTTP's own here is only the
mapping of paths, query strings and bodies to params, and of answers to
statuses. Nothing a client sends ends up as a traceback: every failure is the
error body of docs/http.md.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from codyd.errors import (
    BadRequest,
    CodydError,
    FrameTooLarge,
    Internal,
    InvalidParams,
    NotFound,
    Unauthorized,
)
from codyd.http.adapter import (
    Adapter,
    Forbidden,
    MethodNotAllowed,
    error_body,
    error_headers,
    log,
    status_of,
    to_json,
)
from codyd.http.hub import SseHub
from codyd.http.metrics import CONTENT_TYPE, Metrics
from codyd.http.static import Dashboard
from codyd.http.streams import EventPage, EventStream, HubEventStream, LogBytes
from codyd.model.state import State

if TYPE_CHECKING:
    from codyd.http.view import HttpDaemon

API = "/api/v1"
MAX_PAGE = 1000
CONTROL_ACTIONS = frozenset({"pause", "resume", "cancel", "retry", "say", "update"})
_DIGITS = re.compile(r"[0-9]{1,19}")
Level = Literal["read", "control"]


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(value), status, headers, media_type="application/json")


def error_response(exc: CodydError) -> Response:
    error = exc.to_wire()
    return json_response(error_body(error), status_of(error), error_headers(error))


def _int_param(name: str, text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise InvalidParams(name, f"expected an integer >= 0, got {text!r}")
    return int(text)


def _matches(given: bytes, token: str | None) -> bool:
    """In constant time: the comparison takes as long whatever the tokens share."""
    return bool(given) and token is not None and hmac.compare_digest(given, token.encode())


def _query(request: Request, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    items = request.query_params.multi_items()
    for name, _ in items:
        if name not in allowed:
            raise InvalidParams(
                name, f"unknown query parameter; expected one of {', '.join(allowed) or 'none'}"
            )
    return items


STATE_NAMES = tuple(state.value for state in State)


class HttpApi:
    def __init__(
        self, daemon: HttpDaemon, adapter: Adapter, metrics: Metrics, hub: SseHub | None = None
    ) -> None:
        self.daemon = daemon
        self.adapter = adapter
        self.metrics = metrics
        self.hub = hub
        self.http = daemon.config.http
        self.max_body = daemon.config.max_frame_bytes
        self.dashboard = Dashboard()
        self._routes: list[Route] = []

    def app(self) -> Starlette:
        def route(
            path: str, endpoint: Callable[[Request], Awaitable[Response]], *methods: str
        ) -> Route:
            return Route(path, self._guarded(endpoint), methods=list(methods))

        routes = [
            route("/healthz", self.healthz, "GET"),
            route("/readyz", self.readyz, "GET"),
            route("/metrics", self.metrics_page, "GET"),
            route(f"{API}/info", self.info, "GET"),
            route(f"{API}/runs", self.list_runs, "GET"),
            route(f"{API}/runs", self.start_run, "POST"),
            route(f"{API}/runs/{{run_id}}", self.get_run, "GET"),
            route(f"{API}/runs/{{run_id}}", self.forget_run, "DELETE"),
            route(f"{API}/runs/{{run_id}}/logs", self.logs, "GET"),
            route(f"{API}/runs/{{run_id}}/events", self.run_events, "GET"),
            *(
                route(f"{API}/runs/{{run_id}}/{action}", self.control, "POST")
                for action in sorted(CONTROL_ACTIONS)
            ),
            route(f"{API}/events", self.all_events, "GET"),
            # The dashboard: static files, no token (its API calls carry one).
            route("/", self.dashboard.index, "GET"),
            route("/dashboard/{name}", self.dashboard.asset, "GET"),
        ]
        self._routes = routes
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_exception, Exception: self._crashed},
        )

    def _guarded(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except CodydError as exc:
                return error_response(exc)

        return guarded

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error: CodydError = MethodNotAllowed(f"{request.method} is not allowed on this path")
        elif exc.status_code == 404:
            error = NotFound(f"no such path {request.url.path!r}")
        elif exc.status_code == 413:
            error = FrameTooLarge(f"the body exceeds max_frame_bytes={self.max_body}")
        else:
            error = BadRequest(str(exc.detail))
        response = error_response(error)
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(self._allowed(request.url.path))
        elif exc.status_code not in (404, 413):
            response.status_code = exc.status_code
        return response

    def _allowed(self, path: str) -> list[str]:
        """Every method some route takes on ``path`` (a 405's ``Allow``; one route per method)."""
        methods: set[str] = set()
        for route in self._routes:
            if route.path_regex.match(path) and route.methods:
                methods |= route.methods
        return sorted(methods)

    async def _crashed(self, request: Request, exc: Exception) -> Response:
        log.error("HTTP request crashed", path=request.url.path, exc_info=exc)
        return error_response(Internal("internal error; see the daemon log"))

    # -- auth --------------------------------------------------------------------------------

    def _authorize(self, request: Request, level: Level) -> None:
        """Refuse the request unless its bearer token grants ``level`` (control implies read)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        granted: Level | None = None
        if _matches(given, self.http.control_token):
            granted = "control"
        elif _matches(given, self.http.read_token):
            granted = "read"
        if granted == "control" or (level == "read" and granted == "read"):
            return
        if granted == "read":
            raise Forbidden("the read token does not allow control; use the control token")
        if level == "read" and not given and self.http.anonymous_read:
            return
        if given:
            raise Unauthorized("the bearer token is not one codyd knows")
        raise Unauthorized("an Authorization: Bearer <token> header is required")

    # -- health ------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response({"ok": True})

    async def readyz(self, request: Request) -> Response:
        daemon = self.daemon
        reasons = []
        if not daemon.recovered:
            reasons.append("recovery is not done")
        health = daemon.store.health
        if not health.writable:
            reasons.append(f"the store cannot write: {health.last_error}")
        if daemon.stopping:
            reasons.append("codyd is shutting down")
        if reasons:
            return json_response({"ready": False, "reasons": reasons}, 503)
        return json_response({"ready": True})

    async def metrics_page(self, request: Request) -> Response:
        if self.http.metrics_auth:
            self._authorize(request, "read")
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    # -- /api/v1 -----------------------------------------------------------------------------

    async def _answer(
        self,
        method: str,
        params: dict[str, Any],
        status: int = 200,
        headers: Callable[[Any], dict[str, str]] | None = None,
    ) -> Response:
        response = await self.adapter.invoke(self.adapter.call(method, params))
        error = response.get("error")
        if error is not None:
            return json_response(error_body(error), status_of(error), error_headers(error))
        result = response["result"]
        return json_response(result, status, headers(result) if headers else None)

    async def _body(self, request: Request) -> dict[str, Any]:
        """The JSON object of the body ({} if empty), read up to max_frame_bytes."""
        too_large = FrameTooLarge(f"the body exceeds max_frame_bytes={self.max_body}")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise too_large
        if not body:
            return {}
        content_type = request.headers.get("content-type", "").partition(";")[0].strip()
        if content_type.lower() != "application/json":
            raise BadRequest(f"expected Content-Type: application/json, got {content_type!r}")
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest(f"the body must be a JSON object, got {type(value).__name__}")
        return value

    async def info(self, request: Request) -> Response:
        self._authorize(request, "read")
        _query(request, ())
        return await self._answer("daemon.info", {})

    async def list_runs(self, request: Request) -> Response:
        self._authorize(request, "read")
        params: dict[str, Any] = {}
        for name, value in _query(request, ("state", "label", "limit", "cursor")):
            if name == "state":
                if value not in STATE_NAMES:  # named as the query names it, not as states.N
                    raise InvalidParams(
                        "state", f"expected one of {', '.join(STATE_NAMES)}, got {value!r}"
                    )
                params.setdefault("states", []).append(value)
            elif name == "label":
                key, equals, label = value.partition("=")
                if not equals or not key:
                    raise InvalidParams("label", f"expected key=value, got {value!r}")
                params.setdefault("labels", {})[key] = label
            elif name == "limit":
                params["limit"] = _int_param("limit", value)
            else:
                params["cursor"] = value
        return await self._answer("run.list", params)

    async def start_run(self, request: Request) -> Response:
        self._authorize(request, "control")
        _query(request, ())
        params = await self._body(request)
        return await self._answer(
            "run.start",
            params,
            201,
            lambda snapshot: {"Location": f"{API}/runs/{snapshot['run_id']}"},
        )

    async def get_run(self, request: Request) -> Response:
        self._authorize(request, "read")
        _query(request, ())
        return await self._answer("run.status", {"run_id": request.path_params["run_id"]})

    async def forget_run(self, request: Request) -> Response:
        self._authorize(request, "control")
        _query(request, ())
        return await self._answer("run.forget", {"run_id": request.path_params["run_id"]})

    async def control(self, request: Request) -> Response:
        action = request.url.path.rpartition("/")[2]  # one route per action
        self._authorize(request, "control")
        _query(request, ())
        params = await self._body(request)
        params["run_id"] = request.path_params["run_id"]
        return await self._answer(f"run.{action}", params)

    async def logs(self, request: Request) -> Response:
        self._authorize(request, "read")
        params: dict[str, Any] = {"run_id": request.path_params["run_id"]}
        for name, value in _query(request, ("turn", "stream", "offset")):
            params[name] = value if name == "stream" else _int_param(name, value)
        return LogBytes(self.adapter, params)

    async def run_events(self, request: Request) -> Response:
        return await self._events(request, request.path_params["run_id"])

    async def all_events(self, request: Request) -> Response:
        return await self._events(request, None)

    async def _events(self, request: Request, run_id: str | None) -> Response:
        self._authorize(request, "read")
        params: dict[str, Any] = {} if run_id is None else {"run_id": run_id}
        streaming = "text/event-stream" in request.headers.get("accept", "")
        limit = MAX_PAGE
        for name, value in _query(request, ("after",) if streaming else ("after", "limit")):
            if name == "after":
                params["after"] = _int_param("after", value)
            else:
                limit = _int_param("limit", value)
                if not 1 <= limit <= MAX_PAGE:
                    raise InvalidParams("limit", f"expected an integer from 1 to {MAX_PAGE}")
        last_event_id = request.headers.get("last-event-id")
        if streaming and last_event_id is not None:
            params["after"] = _int_param("Last-Event-ID", last_event_id.strip())
        if streaming:
            params["follow"] = True
            if run_id is None and self.hub is not None:
                return HubEventStream(self.adapter, params, self.hub)
            return EventStream(self.adapter, params)
        return await EventPage(self.adapter, params, limit).answer()
