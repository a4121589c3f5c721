"""The Claude Code adapter: ``claude -p --output-format stream-json --verbose``.

What each stdout line becomes (docs/agents.md §3.3 and §4.1, docs/events.md §11.2):

* ``system`` / ``init`` reports the session id; ``api_retry`` → ``agent_retry`` (idle: the
  CLI waits for its service); ``compact_boundary`` → ``context_compacted``;
  ``permission_denied`` → ``permission_denied``; ``session_writes_lost`` → ``warning``;
  ``conversation_reset`` reports the new session id. Other subtypes are consumed.
* ``assistant`` lines (one per content block): a ``text`` block → ``message``; a
  ``tool_use`` block → ``tool_call`` (and ``test_run_started`` for a Bash test command). Its
  ``file_read`` (Read, and Grep on a path that names a file) or ``file_written`` (Write,
  Edit, MultiEdit, NotebookEdit) waits for the tool's result. An ``error`` on the line
  (``authentication_failed``, ``rate_limit``) is remembered for the turn's outcome. The
  per-frame ``usage`` is never counted: every frame of one API message repeats it.
* ``user`` lines: a ``tool_result`` that succeeded releases the tool's file events; one
  that failed is ``permission_denied`` when the tool was refused, else ``tool_failed``
  (Bash: ``command`` with its exit code in either case, and for a test command one
  ``test_run_completed`` per summary in its output).
* ``rate_limit_event``: ``status: "rejected"`` makes the turn ``rate_limited`` (reset at
  ``resetsAt``) unless it still succeeds; any other status → ``quota``.
* ``result`` → ``token_usage`` (from ``modelUsage``, every model and sub-agent of the
  session; without it ``usage``), ``cost`` (``total_cost_usd``, older builds ``cost_usd``),
  ``permission_denied`` per ``permission_denials`` entry not reported yet; it also reports
  the session id, and ``is_error: true`` makes the turn's error (see ``finish``).
* ``stream_event``, control messages and unknown types are consumed; lines that are not
  JSON objects (``[SandboxDebug] ...``) are output.

Assistant text of a sub-agent (``parent_tool_use_id`` set) is a ``message`` but is not
matched against ``completion.pattern``.

Unknown session: a ``result`` with ``is_error: true`` whose errors (or result text) say
``No conversation found`` marks the turn as a failed resume, and its session id, which
names no conversation, is not reported; the same words on stderr do too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from codyd.agents.base import AgentReport, Parsed
from codyd.agents.claude_outcomes import (
    Trouble,
    api_status,
    assistant_report,
    result_report,
    result_text,
    retry_report,
)
from codyd.agents.jsonline import MAX_INT, count, load_object, plain, str_or_none
from codyd.agents.reports import shorten
from codyd.agents.shell import is_test_command, looks_like_file, summaries_in
from codyd.config import AgentConfig
from codyd.model.state import Outcome
from codyd.spec import RunSpec

NO_RESULT: Final = "claude exited without a result"
BUDGET_FLAG: Final = "--max-budget-usd"
UNKNOWN_SESSION_RE = re.compile(r"(?i)\bno conversation found\b")
_EXIT_CODE_RE = re.compile(r"Exit code (-?\d{1,9})[ \t]*(?:\n|$)")
# How claude words a tool it was not allowed to use (the result is is_error: true).
_DENIED_RE = re.compile(
    r"(?i)requested permissions? to|haven't granted|permission (?:to [^\n]{0,80})?(?:was )?denied"
    r"|denied by|not allowed to|blocked by (?:the )?(?:sandbox|permission)"
)
_WRITERS: Final = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})


@dataclass(slots=True)
class _ToolCall:
    name: str
    path: str | None = None  # the file it reads or writes
    writes: bool = False
    command: str | None = None  # Bash only
    is_test: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class ClaudeAdapter:
    """Reads one ``claude -p --output-format stream-json`` turn."""

    name = "claude"
    resumes_sessions = True

    def __init__(self) -> None:
        self._tool_uses: set[str] = set()  # tool_use ids already reported
        self._calls: dict[str, _ToolCall] = {}  # tool_use id -> the call, until its result
        self._result_seen = False
        self._succeeded = False  # the last result was not an error
        self._error: AgentReport | None = None
        self._trouble = Trouble()

    def argv(
        self,
        spec: RunSpec,
        agent: AgentConfig | None,
        session_id: str | None,
        *,
        max_budget_usd: float | None = None,
    ) -> list[str]:
        argv = [agent.bin if agent else "claude", "-p", "--output-format", "stream-json"]
        argv.append("--verbose")
        if spec.model:
            argv += ["--model", spec.model]
        argv += agent.args if agent else ()
        if max_budget_usd is not None:
            argv += [BUDGET_FLAG, f"{max(0.0, max_budget_usd):.6f}".rstrip("0").rstrip(".")]
        if session_id:
            argv.append(f"--resume={session_id}")  # `=`: an id starting with `-` is no flag
        return argv

    def parse_stdout(self, line: str) -> Parsed:
        event = load_object(line)
        if event is None:
            return Parsed()
        parsed = Parsed(consumed=True)
        kind = str_or_none(event.get("type"))
        message = event.get("message")
        if kind == "system":
            self._system(event, parsed)
            if parsed.idle:
                return parsed
        elif kind == "assistant" and isinstance(message, dict):
            main_agent = event.get("parent_tool_use_id") is None
            self._assistant(message.get("content"), main_agent, parsed)
            self._assistant_error(event, message)
        elif kind == "user" and isinstance(message, dict):
            self._user(message.get("content"), event, parsed)
        elif kind == "result":
            self._result(event, parsed)
        elif kind == "rate_limit_event":
            self._rate_limit(event, parsed)
        elif kind == "conversation_reset":
            parsed.session_id = _new_session(event)
        if kind not in (None, "stream_event", "rate_limit_event"):
            self._trouble.retry = None  # the CLI got through
        return parsed

    def parse_stderr(self, line: str) -> Parsed:
        return Parsed(resume_failed=UNKNOWN_SESSION_RE.search(line) is not None)

    def finish(self, exit_code: int | None) -> AgentReport | None:
        if self._error is not None:
            return self._error
        if self._succeeded:
            return None
        trouble = self._trouble
        if trouble.rejected:
            return AgentReport(
                Outcome.RATE_LIMITED,
                "claude's rate limit rejected the turn",
                code="rate_limit_rejected",
                resets_at=trouble.rejected_until,
            )
        if trouble.assistant_error is not None:
            return assistant_report(trouble)
        if trouble.retry is not None:
            return retry_report(trouble.retry)
        if not self._result_seen and exit_code == 0:
            return AgentReport(Outcome.ERROR, NO_RESULT)
        return None

    # -- system ---------------------------------------------------------------------------------

    def _system(self, event: dict[str, Any], parsed: Parsed) -> None:
        subtype = str_or_none(event.get("subtype"))
        if subtype == "init":
            parsed.session_id = str_or_none(event.get("session_id")) or None
        elif subtype == "api_retry":
            retry = {
                "attempt": count(event.get("attempt")),
                "delay_ms": count(event.get("retry_delay_ms")),
                "error_status": api_status(event.get("error_status")),
                "error": str_or_none(event.get("error")),
            }
            parsed.events.append(("agent_retry", retry))
            parsed.idle = True
            self._trouble.retry = retry
        elif subtype == "compact_boundary":
            metadata = event.get("compact_metadata")
            parsed.events.append(
                ("context_compacted", plain(metadata) if isinstance(metadata, dict) else {})
            )
        elif subtype == "permission_denied":
            tool = str_or_none(event.get("tool_name")) or str_or_none(event.get("tool")) or ""
            tool_input = event.get("tool_input")
            path = _input_path(tool_input) if isinstance(tool_input, dict) else None
            path = path or str_or_none(event.get("path"))
            text = str_or_none(event.get("message")) or str_or_none(event.get("reason"))
            self._deny(str_or_none(event.get("tool_use_id")), tool, path, text, parsed)
        elif subtype == "session_writes_lost":
            text = str_or_none(event.get("message")) or (
                "claude could not write its session file: a resumed turn may miss this one"
            )
            parsed.events.append(("warning", {"message": text, "code": "session_writes_lost"}))
        elif subtype == "conversation_reset":
            parsed.session_id = _new_session(event)

    def _rate_limit(self, event: dict[str, Any], parsed: Parsed) -> None:
        info = event.get("rate_limit_info")
        if not isinstance(info, dict):
            return
        status = str_or_none(info.get("status"))
        resets_at = _number(info.get("resetsAt"))
        if status == "rejected":
            self._trouble.rejected = True
            self._trouble.rejected_until = resets_at
            return
        quota = {
            "status": status,
            "resets_at": resets_at,
            "utilization": _number(info.get("utilization")),
            "kind": str_or_none(info.get("rateLimitType")),
        }
        parsed.events.append(("quota", quota))

    # -- assistant ------------------------------------------------------------------------------

    def _assistant(self, content: Any, main_agent: bool, parsed: Parsed) -> None:
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        texts: list[str] = []
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                parsed.events.append(("message", {"role": "assistant", "text": block["text"]}))
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                self._tool_use(block, parsed)
        if texts and main_agent:
            parsed.message_text = "\n".join(texts)

    def _assistant_error(self, event: dict[str, Any], message: dict[str, Any]) -> None:
        error = str_or_none(event.get("error"))
        if error is None:
            return
        trouble = self._trouble
        trouble.assistant_error = error
        trouble.assistant_text = result_text(message.get("content"))
        trouble.assistant_status = api_status(event.get("api_error_status"))

    def _tool_use(self, block: dict[str, Any], parsed: Parsed) -> None:
        tool_id = str_or_none(block.get("id"))
        if tool_id is not None and tool_id in self._tool_uses:
            return
        if tool_id is not None:
            self._tool_uses.add(tool_id)
        name = str_or_none(block.get("name")) or ""
        tool_input = block.get("input")
        if not isinstance(tool_input, dict):
            tool_input = {}
        parsed.events.append(("tool_call", {"name": name, "input": plain(tool_input)}))
        call = _ToolCall(name)
        path = _input_path(tool_input)
        if name == "Read" and path:
            call.path = path
        elif name == "Grep" and looks_like_file(str_or_none(tool_input.get("path")) or ""):
            call.path = tool_input["path"]
        elif name in _WRITERS and path:
            call.path, call.writes = path, True
        elif name == "Bash":
            call.command = str_or_none(tool_input.get("command")) or ""
            call.is_test = is_test_command(call.command)
            if call.is_test:
                parsed.events.append(("test_run_started", {"command": call.command}))
        if tool_id is not None:
            self._calls[tool_id] = call

    # -- user -----------------------------------------------------------------------------------

    def _user(self, content: Any, event: dict[str, Any], parsed: Parsed) -> None:
        denied = _denied_by_meta(event)
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            tool_id = str_or_none(block.get("tool_use_id")) or ""
            call = self._calls.pop(tool_id, None)
            if call is not None:
                self._tool_result(tool_id, call, block, tool_id in denied, parsed)

    def _tool_result(
        self, tool_id: str, call: _ToolCall, block: dict[str, Any], denied: bool, parsed: Parsed
    ) -> None:
        output = result_text(block.get("content"))
        failed = block.get("is_error") is True
        if call.command is not None:
            self._bash_result(call, output, failed, parsed)
        if not failed:
            if call.path is not None:
                kind = "file_written" if call.writes else "file_read"
                parsed.events.append((kind, {"path": call.path}))
        elif denied or _DENIED_RE.search(output):
            self._deny(tool_id, call.name, call.path, output, parsed)
        elif call.command is None:
            parsed.events.append(("tool_failed", {"tool": call.name, "message": shorten(output)}))

    def _deny(
        self,
        tool_id: str | None,
        tool: str,
        path: str | None,
        text: str | None,
        parsed: Parsed,
    ) -> None:
        if tool_id is not None:
            if tool_id in self._trouble.denied_ids:
                return
            self._trouble.denied_ids.add(tool_id)
        message = shorten(text or f"claude was not allowed to use {tool or 'a tool'}")
        parsed.events.append(
            ("permission_denied", {"tool": tool, "path": path, "message": message})
        )

    @staticmethod
    def _bash_result(call: _ToolCall, output: str, failed: bool, parsed: Parsed) -> None:
        exit_code: int | None = None if failed else 0
        if match := _EXIT_CODE_RE.match(output):
            exit_code = int(match[1])
            output = output[match.end() :]
        status = "failed" if failed or exit_code else "completed"
        command = call.command or ""
        parsed.events.append(
            ("command", {"command": command, "exit_code": exit_code, "status": status})
        )
        if call.is_test:
            parsed.events += [("test_run_completed", data) for data in summaries_in(output)]

    # -- result ---------------------------------------------------------------------------------

    def _result(self, event: dict[str, Any], parsed: Parsed) -> None:
        self._result_seen = True
        tokens = _tokens(event)
        if tokens is not None:
            parsed.events.append(("token_usage", tokens))
        cost = _number(event.get("total_cost_usd", event.get("cost_usd")))
        if cost is not None and cost >= 0:
            parsed.events.append(("cost", {"usd": cost}))
        self._denials(event.get("permission_denials"), parsed)
        failed = event.get("is_error") is True
        self._succeeded = not failed
        self._error = result_report(event, self._trouble) if failed else None
        if self._error is not None and UNKNOWN_SESSION_RE.search(self._error.message):
            parsed.resume_failed = True
        else:
            parsed.session_id = str_or_none(event.get("session_id")) or None

    def _denials(self, denials: Any, parsed: Parsed) -> None:
        for denial in denials if isinstance(denials, list) else ():
            if not isinstance(denial, dict):
                continue
            tool = str_or_none(denial.get("tool_name")) or ""
            tool_input = denial.get("tool_input")
            path = _input_path(tool_input) if isinstance(tool_input, dict) else None
            self._deny(str_or_none(denial.get("tool_use_id")), tool, path, None, parsed)


def _input_path(tool_input: dict[str, Any]) -> str | None:
    return str_or_none(tool_input.get("file_path")) or str_or_none(tool_input.get("notebook_path"))


def _new_session(event: dict[str, Any]) -> str | None:
    for key in ("new_session_id", "session_id"):
        if value := str_or_none(event.get(key)):
            return value
    return None


def _denied_by_meta(event: dict[str, Any]) -> set[str]:
    """Tool use ids whose ``tool_result_meta`` permission decision refused them."""
    denied: set[str] = set()
    meta = event.get("tool_result_meta")
    for entry in meta if isinstance(meta, list) else ():
        decision = entry.get("permission_decision") if isinstance(entry, dict) else None
        verdict = decision.get("decision") if isinstance(decision, dict) else None
        tool_id = str_or_none(entry.get("id")) if isinstance(entry, dict) else None
        if verdict in ("deny", "reject", "denied", "rejected") and tool_id:
            denied.add(tool_id)
    return denied


def _tokens(event: dict[str, Any]) -> dict[str, int] | None:
    """The result's tokens: ``modelUsage`` summed over models when given, else ``usage``.

    ``modelUsage`` counts every model and sub-agent of the session (``usage`` only the main
    model's calls of this result); an empty one reports no tokens at all.
    """
    models = event.get("modelUsage")
    if isinstance(models, dict):
        totals = [0, 0, 0, 0]
        keys = ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens", "outputTokens")
        for usage in models.values():
            if isinstance(usage, dict):
                for index, key in enumerate(keys):
                    totals[index] += count(usage.get(key))
        if not any(isinstance(usage, dict) for usage in models.values()):
            return None
        fresh, created, cached, output = totals
        return {
            "input": min(fresh + created + cached, MAX_INT),
            "output": min(output, MAX_INT),
            "cached": min(cached, MAX_INT),
        }
    usage = event.get("usage")
    if not isinstance(usage, dict):
        return None
    cached = count(usage.get("cache_read_input_tokens"))
    fresh = count(usage.get("input_tokens"))
    created = count(usage.get("cache_creation_input_tokens"))
    total = min(fresh + created + cached, MAX_INT)
    return {"input": total, "output": count(usage.get("output_tokens")), "cached": cached}
