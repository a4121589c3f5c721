"""The Claude Code adapter: ``claude -p --output-format stream-json --verbose``.

What each stdout line becomes (docs/agents.md §3.3, docs/events.md §11.2):

* ``system`` / ``init`` reports the session id; other system subtypes are consumed.
* ``assistant`` lines (one per content block): a ``text`` block → ``message``; a
  ``tool_use`` block → ``tool_call``, then ``file_read`` for Read (and for Grep on a path
  that names a file), ``file_written`` for Write, Edit, MultiEdit and NotebookEdit, and
  ``test_run_started`` for a Bash test command. The per-frame ``usage`` is never counted:
  every frame of one API message repeats it.
* ``user`` lines: a Bash ``tool_result`` → ``command`` (exit code from its ``Exit code N``
  first line, else 0, or null for an error without one) and, for a test command, one
  ``test_run_completed`` per summary in its output. String content is consumed.
* ``result`` → ``token_usage`` (input = input + cache creation + cache read tokens, cached =
  cache read tokens) and ``cost`` (``total_cost_usd``, older builds ``cost_usd``); it also
  reports the session id, and ``is_error: true`` makes the turn's error (see
  :meth:`ClaudeAdapter.finish`) whatever the subtype.
* ``stream_event``, ``rate_limit_event``, control messages and unknown types are consumed;
  lines that are not JSON objects (``[SandboxDebug] ...``) are output.

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
from codyd.agents.jsonline import MAX_INT, count, load_object, plain, str_or_none
from codyd.agents.shell import is_test_command, looks_like_file, summaries_in
from codyd.config import AgentConfig
from codyd.model.state import Outcome
from codyd.spec import RunSpec

NO_RESULT: Final = "claude exited without a result"
UNKNOWN_SESSION_RE = re.compile(r"(?i)\bno conversation found\b")
_EXIT_CODE_RE = re.compile(r"Exit code (-?\d{1,9})[ \t]*(?:\n|$)")
_WRITERS: Final = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})


@dataclass(frozen=True, slots=True)
class _BashCall:
    command: str
    is_test: bool


def _result_text(content: Any) -> str:
    """The text of a ``tool_result`` content: a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str_or_none(block.get("text")) for block in content if isinstance(block, dict)]
        return "\n".join(part for part in parts if part is not None)
    return ""


class ClaudeAdapter:
    """Reads one ``claude -p --output-format stream-json`` turn."""

    name = "claude"
    resumes_sessions = True

    def __init__(self) -> None:
        self._tool_uses: set[str] = set()  # tool_use ids already reported
        self._bash: dict[str, _BashCall] = {}  # Bash tool_use id -> its command, until its result
        self._result_seen = False
        self._error: str | None = None

    def argv(self, spec: RunSpec, agent: AgentConfig | None, session_id: str | None) -> list[str]:
        argv = [agent.bin if agent else "claude", "-p", "--output-format", "stream-json"]
        argv.append("--verbose")
        if spec.model:
            argv += ["--model", spec.model]
        argv += agent.args if agent else ()
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
        if kind == "system" and event.get("subtype") == "init":
            parsed.session_id = str_or_none(event.get("session_id")) or None
        elif kind == "assistant" and isinstance(message, dict):
            main_agent = event.get("parent_tool_use_id") is None
            self._assistant(message.get("content"), main_agent, parsed)
        elif kind == "user" and isinstance(message, dict):
            self._user(message.get("content"), parsed)
        elif kind == "result":
            self._result(event, parsed)
        return parsed

    def parse_stderr(self, line: str) -> Parsed:
        return Parsed(resume_failed=UNKNOWN_SESSION_RE.search(line) is not None)

    def finish(self, exit_code: int | None) -> AgentReport | None:
        if self._error is not None:
            return AgentReport(Outcome.ERROR, self._error)
        if not self._result_seen and exit_code == 0:
            return AgentReport(Outcome.ERROR, NO_RESULT)
        return None

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
        path = str_or_none(tool_input.get("file_path"))
        path = path or str_or_none(tool_input.get("notebook_path"))
        if name == "Read" and path:
            parsed.events.append(("file_read", {"path": path}))
        elif name == "Grep" and looks_like_file(str_or_none(tool_input.get("path")) or ""):
            parsed.events.append(("file_read", {"path": tool_input["path"]}))
        elif name in _WRITERS and path:
            parsed.events.append(("file_written", {"path": path}))
        elif name == "Bash":
            command = str_or_none(tool_input.get("command")) or ""
            call = _BashCall(command, is_test_command(command))
            if call.is_test:
                parsed.events.append(("test_run_started", {"command": command}))
            if tool_id is not None:
                self._bash[tool_id] = call

    # -- user -----------------------------------------------------------------------------------

    def _user(self, content: Any, parsed: Parsed) -> None:
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            call = self._bash.pop(str_or_none(block.get("tool_use_id")) or "", None)
            if call is not None:
                self._bash_result(call, block, parsed)

    @staticmethod
    def _bash_result(call: _BashCall, block: dict[str, Any], parsed: Parsed) -> None:
        output = _result_text(block.get("content"))
        failed = block.get("is_error") is True
        exit_code: int | None = None if failed else 0
        if match := _EXIT_CODE_RE.match(output):
            exit_code = int(match[1])
            output = output[match.end() :]
        status = "failed" if failed or exit_code else "completed"
        parsed.events.append(
            ("command", {"command": call.command, "exit_code": exit_code, "status": status})
        )
        if call.is_test:
            parsed.events += [("test_run_completed", data) for data in summaries_in(output)]

    # -- result ---------------------------------------------------------------------------------

    def _result(self, event: dict[str, Any], parsed: Parsed) -> None:
        self._result_seen = True
        usage = event.get("usage")
        if isinstance(usage, dict):
            cached = count(usage.get("cache_read_input_tokens"))
            fresh = count(usage.get("input_tokens"))
            created = count(usage.get("cache_creation_input_tokens"))
            total = min(fresh + created + cached, MAX_INT)
            output = count(usage.get("output_tokens"))
            parsed.events.append(
                ("token_usage", {"input": total, "output": output, "cached": cached})
            )
        cost = event.get("total_cost_usd", event.get("cost_usd"))
        if isinstance(cost, int | float) and not isinstance(cost, bool) and 0 <= cost < math.inf:
            parsed.events.append(("cost", {"usd": float(cost)}))
        self._error = _result_error(event) if event.get("is_error") is True else None
        if self._error is not None and UNKNOWN_SESSION_RE.search(self._error):
            parsed.resume_failed = True
        else:
            parsed.session_id = str_or_none(event.get("session_id")) or None


def _result_error(event: dict[str, Any]) -> str:
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
