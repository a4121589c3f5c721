"""What stopped a claude turn, from its structured fields first and its words second.

The rules, in order, with the recorded line each comes from: docs/agents.md §4.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from codyd.agents.base import AgentReport
from codyd.agents.jsonline import str_or_none
from codyd.agents.reports import outcome_of_status, read_message, shorten
from codyd.model.state import Outcome

# assistant.error values and what each means (docs/agents.md §4.1).
ASSISTANT_ERRORS: Final = {
    "authentication_failed": Outcome.AUTH_FAILED,
    "billing_error": Outcome.AUTH_FAILED,
    "rate_limit": Outcome.RATE_LIMITED,
    "server_error": Outcome.UNAVAILABLE,
}

# result.terminal_reason values that name the outcome (others: completed, api_error, ...).
_TERMINAL_REASONS: Final = {
    "prompt_too_long": Outcome.CONTEXT_EXHAUSTED,
    "context_window_exceeded": Outcome.CONTEXT_EXHAUSTED,
    "rate_limited": Outcome.RATE_LIMITED,
}


@dataclass(slots=True)
class Trouble:
    """What went wrong in the turn so far, read from the structured fields."""

    assistant_error: str | None = None  # assistant.error
    assistant_text: str = ""
    assistant_status: int | None = None
    rejected_until: float | None = None  # a rate_limit_event rejected the turn
    rejected: bool = False
    retry: dict[str, Any] | None = None  # the last api_retry, while nothing else followed
    denied_ids: set[str] = field(default_factory=set)


def result_text(content: Any) -> str:
    """The text of a ``tool_result`` content: a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str_or_none(block.get("text")) for block in content if isinstance(block, dict)]
        return "\n".join(part for part in parts if part is not None)
    return ""


def api_status(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 100 <= int(value) <= 599:
        return int(value)
    return None


def _result_text_of(event: dict[str, Any]) -> str:
    """``<subtype>: <errors joined by "; ">``, else the result text, else the subtype."""
    subtype = str_or_none(event.get("subtype"))
    errors = event.get("errors")
    messages = (
        [error for error in errors if isinstance(error, str)] if isinstance(errors, list) else []
    )
    if messages:
        joined = "; ".join(messages)
        return f"{subtype}: {joined}" if subtype else joined
    return str_or_none(event.get("result")) or subtype or "claude reported an error"


def result_report(event: dict[str, Any], trouble: Trouble) -> AgentReport:
    """A failed result: its status, then the assistant's error, then its words decide."""
    text = shorten(_result_text_of(event))
    subtype = str_or_none(event.get("subtype"))
    status = api_status(event.get("api_error_status")) or trouble.assistant_status
    code = str(status) if status is not None else None
    if subtype is not None and subtype.startswith("error_"):
        code = subtype  # error_max_turns, error_max_budget_usd, error_during_execution
    terminal = str_or_none(event.get("terminal_reason"))
    code = code or str_or_none(event.get("api_error")) or trouble.assistant_error
    code = code or (terminal if terminal not in (None, "completed", "api_error") else None)
    if trouble.rejected:
        return AgentReport(
            Outcome.RATE_LIMITED, text, code or "rate_limit_rejected", trouble.rejected_until
        )
    outcome = outcome_of_status(status)
    if outcome is None and trouble.assistant_error in ASSISTANT_ERRORS:
        outcome = ASSISTANT_ERRORS[trouble.assistant_error]
    if outcome is None and str_or_none(event.get("api_error")) == "connection_failed":
        outcome = Outcome.UNAVAILABLE
    if outcome is None and terminal is not None:
        outcome = _TERMINAL_REASONS.get(terminal)
    reading = read_message(text) if subtype in (None, "success", "error_during_execution") else None
    if outcome is None and reading is not None:
        outcome = reading.outcome
    resets_at = reading.resets_at if reading is not None else None
    return AgentReport(outcome or Outcome.ERROR, text, code, resets_at)


def assistant_report(trouble: Trouble) -> AgentReport:
    """No result came, but the assistant line said what went wrong."""
    error = trouble.assistant_error or "error"
    text = shorten(trouble.assistant_text or error)
    outcome = outcome_of_status(trouble.assistant_status) or ASSISTANT_ERRORS.get(error)
    reading = read_message(text)
    if outcome is None and reading is not None:
        outcome = reading.outcome
    resets_at = reading.resets_at if reading is not None else None
    return AgentReport(outcome or Outcome.ERROR, text, error, resets_at)


def retry_report(retry: dict[str, Any]) -> AgentReport:
    """The turn ended while claude was still retrying its API: what it was retrying decides."""
    status = retry["error_status"]
    error = retry["error"] or "unknown"
    outcome = outcome_of_status(status) or ASSISTANT_ERRORS.get(error) or Outcome.UNAVAILABLE
    message = f"claude was still retrying its API (attempt {retry['attempt']}, error {error}"
    message += f", status {status})" if status is not None else ")"
    return AgentReport(outcome, message, str(status) if status is not None else error)
