"""``codyctl logs -f``: one turn until it has really ended, or turn after turn until the run has.

codyd may end a followed ``run.logs`` with ``turn_finished`` while the turn is still being
spawned (its phase is not yet ``in_turn``), so a turn counts as over only once a later turn
began, it has a ``turn_completed`` event, or the run is terminal.
"""

from __future__ import annotations

import time

from codyctl.follow import EventCursor, Item, ItemHandler, LogCursor, Settings, run_stream
from codyd.model.state import TERMINAL

# How often to look again at a turn that codyd is still spawning.
SPAWN_POLL_S = 0.05


def follow(
    settings: Settings, run_id: str, stream: str, turn: int | None, writer: ItemHandler
) -> None:
    """``logs -f``: with ``turn``, that turn; without, the newest and each next one."""
    if turn is not None:
        follow_turn(settings, run_id, stream, turn, writer)
        return
    with settings.open() as client:
        current = client.call("run.status", {"run_id": run_id}).get("current_turn") or None
    done = 0
    while True:
        if current is None:
            current = next_turn(settings, run_id, done)
            if current is None:
                return
        follow_turn(settings, run_id, stream, current, writer)
        done, current = current, None


class NextTurn(Exception):
    def __init__(self, turn: int) -> None:
        self.turn = turn


def next_turn(settings: Settings, run_id: str, after_turn: int) -> int | None:
    """Block until a turn after ``after_turn`` starts; None once the run is terminal."""

    def check(event: Item) -> None:
        turn = event.get("turn")
        if isinstance(turn, int) and turn > after_turn:
            raise NextTurn(turn)

    try:
        run_stream(settings, EventCursor(run_id, ["turn_started"], 0), check, follow=True)
    except NextTurn as found:
        return found.turn
    return None


def follow_turn(
    settings: Settings, run_id: str, stream: str, turn: int, writer: ItemHandler
) -> None:
    """Follow one turn's log until that turn has really ended."""
    cursor = LogCursor(run_id, stream, turn)
    while True:
        run_stream(settings, cursor, writer, follow=True)
        if turn_over(settings, run_id, turn):
            return
        time.sleep(SPAWN_POLL_S)


def turn_over(settings: Settings, run_id: str, turn: int) -> bool:
    with settings.open() as client:
        snapshot = client.call("run.status", {"run_id": run_id})
        if snapshot.get("state") in TERMINAL or snapshot.get("current_turn", 0) > turn:
            return True
        params = {"run_id": run_id, "after": 0, "types": ["turn_completed"]}
        return any(event.get("turn") == turn for event in client.stream("run.events", params))
