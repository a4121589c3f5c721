"""Control written into Redis by others: ``{p}run:{id}:ctl`` entries applied as RPC calls.

The entries and their fields: docs/redis.md, "Control through Redis".

Each non-terminal run's ctl stream is read from a cursor kept in the store
(``ctl.<run_id>``, ``0-0`` for a run never read). A valid entry is applied through
the supervisor exactly as ``run.pause`` / ``run.resume`` / ``run.cancel`` would be,
with ``source="redis"``; an invalid one, or one the supervisor refuses, becomes a
``warning`` event on the run and is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from codyd.errors import CodydError
from codyd.mirror.keys import Keys
from codyd.mirror.redis_io import RedisLink
from codyd.model.record import RunRecord
from codyd.store import Store

log = structlog.get_logger("codyd.mirror")

ACTIONS = ("pause", "resume", "cancel")
# The optional fields each action accepts; an empty value counts as absent.
OPTIONAL = {"pause": ("reason", "now"), "resume": (), "cancel": ("reason",)}
NOW_VALUES = {"": False, "false": False, "0": False, "true": True, "1": True}
MAX_REASON_CHARS = 1000
# Entries read per run and poll: a flood of control cannot starve the event mirror.
ENTRIES_PER_POLL = 100


class InvalidControl(Exception):
    """A ctl entry that cannot be applied; the text names the field and what was expected."""


@dataclass(frozen=True, slots=True)
class ControlRequest:
    action: str
    reason: str | None = None
    now: bool = False


def _clipped_repr(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _decoded(fields: Mapping[Any, Any]) -> dict[str, str]:
    decoded: dict[str, str] = {}
    for name, value in fields.items():
        try:
            key = name.decode() if isinstance(name, bytes) else str(name)
            decoded[key] = value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidControl("field names and values must be UTF-8 text") from None
    return decoded


def parse_control(fields: Mapping[Any, Any]) -> ControlRequest:
    """Validate one ctl entry's fields (bytes or str) into a request."""
    given = _decoded(fields)
    action = given.get("action")
    if action is None:
        raise InvalidControl("action: missing; expected pause, resume or cancel")
    if action not in ACTIONS:
        raise InvalidControl(
            f"action: expected pause, resume or cancel, got {_clipped_repr(action)}"
        )
    for name, value in given.items():
        if name == "action":
            continue
        if name not in ("reason", "now"):
            raise InvalidControl(f"{name}: unknown field; expected action, reason or now")
        if value and name not in OPTIONAL[action]:
            raise InvalidControl(f"{name}: not accepted with action {action}")
    reason = given.get("reason") or None
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise InvalidControl(f"reason: expected at most {MAX_REASON_CHARS} characters")
    now = given.get("now", "")
    if now not in NOW_VALUES:
        raise InvalidControl(f"now: expected true, false, 1, 0 or empty, got {_clipped_repr(now)}")
    return ControlRequest(action, reason, NOW_VALUES[now])


class ControlTarget(Protocol):
    """What applies control: the supervisor."""

    shutting_down: bool

    async def pause(
        self, run_id: Any, reason: str | None, now: bool, source: str = ...
    ) -> dict[str, Any]: ...

    async def resume(self, run_id: Any, source: str = ...) -> dict[str, Any]: ...

    async def cancel(
        self, run_id: Any, reason: str | None, source: str = ...
    ) -> dict[str, Any]: ...


async def apply_control(target: ControlTarget, run_id: str, request: ControlRequest) -> None:
    if request.action == "pause":
        await target.pause(run_id, request.reason, request.now, source="redis")
    elif request.action == "resume":
        await target.resume(run_id, source="redis")
    else:
        await target.cancel(run_id, request.reason, source="redis")


def cursor_key(run_id: str) -> str:
    """The store kv key of a run's ctl read cursor."""
    return f"ctl.{run_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ControlReader:
    """Polls the ctl streams of every non-terminal run in one XREAD and applies what it finds."""

    def __init__(self, store: Store, link: RedisLink, keys: Keys, target: ControlTarget) -> None:
        self._store = store
        self._link = link
        self._keys = keys
        self._target = target
        self._cursors: dict[str, str] = {}

    async def poll(self) -> int:
        """One read of every live run's ctl stream; returns how many entries were handled."""
        runs = list(self._store.live)
        for run_id in runs:
            if run_id not in self._cursors:
                saved = await self._store.kv_get(cursor_key(run_id))
                self._cursors[run_id] = saved or "0-0"
        self._cursors = {run_id: self._cursors[run_id] for run_id in runs}
        if not runs:
            return 0
        owners = {self._keys.ctl(run_id): run_id for run_id in runs}
        streams = {key: self._cursors[run_id] for key, run_id in owners.items()}
        handled = 0
        for key, entries in await self._link.xread(streams, ENTRIES_PER_POLL):
            run_id = owners[_text(key)]
            for entry_id, fields in entries:
                if self._target.shutting_down:
                    return handled  # left unread: the next daemon applies it
                await self._handle(run_id, _text(entry_id), fields or {})
                handled += 1
        return handled

    async def _handle(self, run_id: str, entry_id: str, fields: Mapping[Any, Any]) -> None:
        record = self._store.runs[run_id]
        self._cursors[run_id] = entry_id
        # The cursor is queued before the supervisor queues the control's own changes,
        # with no checkpoint in between: both land in the same store commit, so a crash
        # neither loses a control nor applies it twice.
        self._store.kv_set(cursor_key(run_id), entry_id)
        try:
            await apply_control(self._target, run_id, parse_control(fields))
        except InvalidControl as exc:
            self._warn(record, entry_id, f"invalid redis control entry {entry_id}: {exc}")
        except CodydError as exc:
            self._warn(record, entry_id, f"redis control entry {entry_id} refused: {exc.message}")
        else:
            log.info("redis control applied", run_id=run_id, entry_id=entry_id)

    def _warn(self, record: RunRecord, entry_id: str, message: str) -> None:
        log.warning(
            "redis control entry skipped", run_id=record.run_id, entry_id=entry_id, reason=message
        )
        # A terminal run's last event stays its terminal event: the warning is logged only.
        if not record.terminal:
            turn = record.current_turn or None
            self._store.append(record, "warning", {"message": message}, turn=turn)
