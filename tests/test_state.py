"""The run state machine against the transition table of the contract."""

from __future__ import annotations

import itertools

import pytest

from codyd.model.state import TERMINAL, TRANSITIONS, State, can_transition

Q, R, PG, P = State.QUEUED, State.RUNNING, State.PAUSING, State.PAUSED
CG, CD, OK, F = State.CANCELLING, State.CANCELLED, State.COMPLETED, State.FAILED

# Every row of the contract's state table.
CONTRACT = {
    (Q, R),  # picked up
    (Q, P),  # pause
    (R, P),  # pause between turns
    (R, PG),  # pause during a turn
    (PG, P),  # the turn ended
    (PG, R),  # resume withdraws the pause
    (P, R),  # resume
    (Q, CG), (R, CG), (PG, CG), (P, CG),  # cancel
    (CG, CD),  # the turn is stopped
    (R, OK),  # completion condition
    (R, F),  # failures or an unrecoverable error
    (F, R),  # run.retry
}  # fmt: skip

# Transitions codyd takes beyond the table, each for a stated reason.
EXTRA = {
    (Q, CD),  # cancelling a run with no turn has nothing to stop
    (P, CD),  # likewise for a paused run
    (P, Q),  # a resume that finds every slot taken waits like a new run
    (PG, F),  # an unrecoverable error while the last turn winds down
    (F, Q),  # a retry that finds every slot taken waits like a new run
}

ALLOWED = CONTRACT | EXTRA


@pytest.mark.parametrize(("current", "target"), sorted(CONTRACT))
def test_contract_transition_allowed(current: State, target: State) -> None:
    """Each transition of the contract's table is allowed."""
    assert can_transition(current, target)


@pytest.mark.parametrize("current", sorted(TERMINAL - {F}))
def test_final_states_have_no_exit(current: State) -> None:
    """completed and cancelled never change again."""
    assert TRANSITIONS[current] == frozenset()
    for target in State:
        assert not can_transition(current, target)


def test_terminal_set() -> None:
    """completed, failed and cancelled are the terminal states."""
    assert frozenset({OK, F, CD}) == TERMINAL


def test_failed_leaves_only_by_retry() -> None:
    """A failed run goes nowhere but back to running (or queued for a slot)."""
    assert TRANSITIONS[F] == frozenset({R, Q})


def test_completed_to_running_refused() -> None:
    """A finished run cannot be restarted."""
    assert not can_transition(OK, R)


@pytest.mark.parametrize(
    ("current", "target"),
    sorted(pair for pair in itertools.product(State, State) if pair not in ALLOWED),
)
def test_other_transitions_refused(current: State, target: State) -> None:
    """Anything not in the table (or codyd's listed extras) is refused, self-loops included."""
    assert not can_transition(current, target)


def test_table_is_exactly_contract_plus_extras() -> None:
    """The whole table is the contract's rows plus the few documented extras."""
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(State)


def test_only_cancelling_reaches_cancelled_after_a_start() -> None:
    """A run that ever started reaches cancelled only through cancelling."""
    assert {a for a, b in ALLOWED if b is CD} == {Q, P, CG}
    assert TRANSITIONS[CG] == frozenset({CD})


def test_every_state_reachable_and_every_run_can_end() -> None:
    """From queued every state is reachable, and from every state a terminal one."""

    def reachable(start: State) -> set[State]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reachable(Q) == set(State)
    for state in State:
        assert reachable(state) & TERMINAL
