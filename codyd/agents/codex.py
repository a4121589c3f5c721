"""The OpenAI Codex CLI adapter: ``codex exec --json``, one JSON event per stdout line.

What each line becomes (docs/agents.md §3.2, docs/events.md §11.1):

* ``thread.started`` reports the session id (``thread_id``).
* ``item.completed`` items, each acted on once per item id: ``agent_message`` (older builds:
  ``assistant_message``; the item kind may be ``item_type``) → ``message``;
  ``command_execution`` → ``command`` with the script unwrapped from ``<shell> -lc``, then a
  ``file_read`` per file the script obviously reads and, for a test run, one
  ``test_run_completed`` per test summary in its ``aggregated_output``; ``file_change`` with
  status ``completed`` → ``file_written`` per change (``file_deleted`` for kind ``delete``);
  ``mcp_tool_call`` and ``web_search`` → ``tool_call``; ``error`` items → ``warning``.
  A test run's ``test_run_started`` comes at its ``item.started`` (or with its completion
  when no start was seen). Reasoning, plans, todo lists and unknown kinds are consumed.
  A failed ``mcp_tool_call`` → ``tool_failed``; a ``declined`` command → ``permission_denied``.
* ``turn.completed`` → ``token_usage`` (``input_tokens`` already counts the cached part).
* ``turn.failed`` → the turn's error, read for a limit, a login, the context or the service
  (see :meth:`CodexAdapter.finish`); a top-level ``error`` line is only a ``warning``
  (a rate-limit retry also a ``quota``). ``Reconnecting...`` errors, the WebSocket fallback
  item and the ``failed to connect`` lines on stderr are idle: no activity for the stall
  watchdog, and a turn that ends while they are all it prints is ``unavailable`` (or
  ``auth_failed`` / ``rate_limited`` when that is what it was retrying).
* stderr: a sandbox rejection (``patch rejected: writing is blocked by read-only sandbox``)
  → ``permission_denied``.

Unknown session: before any ``thread.started``, a line on stderr, or an ``error`` /
``turn.failed`` message, saying that no rollout, thread, session or conversation was found
(``no rollout found for thread id <id>``, ``No saved session found with ID <id>``,
``thread/session <id> not found``) marks the turn as a failed resume.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Any, Final

from codyd.agents.base import AgentReport, Parsed
from codyd.agents.jsonline import count, exit_status, load_object, plain, str_or_none
from codyd.agents.reports import Reading, read_message, shorten, status_in
from codyd.agents.shell import files_read, is_test_command, summaries_in, unwrap_shell
from codyd.config import AgentConfig
from codyd.model.state import Outcome
from codyd.spec import RunSpec
from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.session import find_session_id

NO_TURN_COMPLETED: Final = "codex exited without turn.completed"
UNKNOWN_SESSION_RE = re.compile(
    r"(?i)\bno (?:saved )?(?:rollout|thread|session|conversation)s? found"
    r"|\b(?:rollout|thread|session|conversation)\b[^\n]{0,160}?\bnot found\b"
)
_ITEM_EVENTS: Final = frozenset({"item.started", "item.updated", "item.completed"})
# Codex waiting for its service: retries, the transport fallback, its connect failures.
_RECONNECT_RE = re.compile(
    r"^(?:Reconnecting\.\.\.|Falling back from WebSockets)|failed to connect to Responses"
    r"|\bstream disconnected before completion\b"
)
_SANDBOX_RE = re.compile(
    r"(?i)\b(?:rejected|blocked|denied|not permitted)\b[^\n]{0,120}\bsandbox\b"
    r"|\bsandbox\b[^\n]{0,120}\b(?:rejected|blocked|denied|not permitted)\b"
)
_TIMESTAMP_RE = re.compile(r"^\S+Z\s+(?:ERROR|WARN|INFO)\s+\S+:\s*")


def _script(item: dict[str, Any]) -> str:
    """The command an item ran, unwrapped from ``<shell> -lc`` (older builds: an argv list)."""
    command = item.get("command")
    if isinstance(command, list) and all(isinstance(word, str) for word in command):
        command = shlex.join(command)
    return unwrap_shell(command) if isinstance(command, str) else ""


def _change_kind(change: dict[str, Any]) -> str | None:
    kind = change.get("kind")
    if isinstance(kind, dict):  # app-server builds: {"type": "update", "move_path": ...}
        kind = kind.get("type")
    return str_or_none(kind)


class CodexAdapter:
    """Reads one ``codex exec --json`` turn."""

    name = "codex"
    resumes_sessions = True

    def __init__(self) -> None:
        self._done: set[str] = set()  # ids of items already acted on
        self._tests_started: set[str] = set()  # ids of test commands already announced
        self._thread_started = False
        self._turn_completed = False
        self._turn_failed: AgentReport | None = None
        self._reconnecting: str | None = None  # the last retry message, while nothing else came

    def argv(
        self,
        spec: RunSpec,
        agent: AgentConfig | None,
        session_id: str | None,
        *,
        max_budget_usd: float | None = None,  # codex takes no budget
    ) -> list[str]:
        argv = [agent.bin if agent else "codex", "exec", "--json", "--cd", spec.workspace]
        argv.append("--skip-git-repo-check")
        if spec.model:
            argv += ["-m", spec.model]
        argv += agent.args if agent else ()
        if session_id:
            argv += ["resume", session_id]
        return [*argv, "-"]

    def parse_stdout(self, line: str) -> Parsed:
        event = load_object(line)
        if event is None:
            return Parsed()
        parsed = Parsed(consumed=True)
        kind = str_or_none(event.get("type"))
        if kind == "thread.started":
            thread_id = str_or_none(event.get("thread_id"))
            if thread_id:
                self._thread_started = True
                parsed.session_id = thread_id
        elif kind in _ITEM_EVENTS and isinstance(event.get("item"), dict):
            self._item(kind, event["item"], parsed)
        elif kind == "turn.completed":
            self._turn_completed = True
            usage = event.get("usage")
            if isinstance(usage, dict):
                parsed.events.append(("token_usage", self._usage(usage)))
        elif kind == "turn.failed":
            error = event.get("error")
            self._turn_failed = _failure(error if isinstance(error, dict) else {}, event)
            parsed.resume_failed = self._resume_failed(self._turn_failed.message)
        elif kind == "error":
            self._error(event, parsed)
        if not parsed.idle and kind not in ("thread.started", "turn.started"):
            self._reconnecting = None
        return parsed

    def parse_stderr(self, line: str) -> Parsed:
        plain_line = strip_ansi(line)
        parsed = Parsed(
            session_id=find_session_id(plain_line),
            resume_failed=self._resume_failed(plain_line),
            idle=_RECONNECT_RE.search(plain_line) is not None,
        )
        if _SANDBOX_RE.search(plain_line):
            message = _TIMESTAMP_RE.sub("", plain_line.strip())
            tool = "apply_patch" if "patch" in message.lower() else "shell"
            denied = {"tool": tool, "path": None, "message": shorten(message)}
            parsed.events.append(("permission_denied", denied))
        return parsed

    def finish(self, exit_code: int | None) -> AgentReport | None:
        if self._turn_failed is not None:
            return self._turn_failed
        if self._turn_completed:
            return None
        if self._reconnecting is not None:
            # It ended (or was stopped) while only retrying: its service was out of reach.
            reading = read_message(self._reconnecting)
            outcome = Outcome.UNAVAILABLE
            if reading is not None and reading.outcome != Outcome.CONTEXT_EXHAUSTED:
                outcome = reading.outcome
            message = f"codex could not reach its service: {self._reconnecting}"
            code = status_in(self._reconnecting) or "reconnecting"
            return AgentReport(outcome, shorten(message), code)
        if exit_code == 0:
            return AgentReport(Outcome.ERROR, NO_TURN_COMPLETED)
        return None

    def _error(self, event: dict[str, Any], parsed: Parsed) -> None:
        message = str_or_none(event.get("message")) or "codex reported an error"
        parsed.events.append(("warning", {"message": message}))
        parsed.resume_failed = self._resume_failed(message)
        if _RECONNECT_RE.search(message):
            parsed.idle = True
            self._reconnecting = message
            reading = read_message(message)
            if reading is not None and reading.outcome == Outcome.RATE_LIMITED:
                quota = {"status": "retrying", "resets_at": reading.resets_at}
                parsed.events.append(("quota", {**quota, "utilization": None, "kind": None}))

    def _resume_failed(self, message: str) -> bool:
        return not self._thread_started and UNKNOWN_SESSION_RE.search(message) is not None

    @staticmethod
    def _usage(usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "input": count(usage.get("input_tokens")),
            "output": count(usage.get("output_tokens")),
            "cached": count(usage.get("cached_input_tokens")),
        }

    def _item(self, kind: str, item: dict[str, Any], parsed: Parsed) -> None:
        item_id = str_or_none(item.get("id"))
        item_type = str_or_none(item.get("type")) or str_or_none(item.get("item_type"))
        if item_type == "command_execution" and kind != "item.completed":
            self._announce_test(item_id, _script(item), parsed)
        if kind != "item.completed" or (item_id is not None and item_id in self._done):
            return
        if item_type == "file_change" and item.get("status", "completed") != "completed":
            return  # a failed patch wrote nothing; a later completion may still come
        if item_id is not None:
            self._done.add(item_id)
        if item_type in ("agent_message", "assistant_message"):
            message = str_or_none(item.get("text"))
            if message is not None:
                parsed.events.append(("message", {"role": "assistant", "text": message}))
                parsed.message_text = message
        elif item_type == "command_execution":
            self._command(item_id, item, parsed)
        elif item_type == "file_change":
            self._file_change(item, parsed)
        elif item_type == "mcp_tool_call":
            self._mcp_tool_call(item, parsed)
        elif item_type == "web_search":
            query = {"query": str_or_none(item.get("query")) or ""}
            parsed.events.append(("tool_call", {"name": "web_search", "input": query}))
        elif item_type == "error":
            self._error_item(item, parsed)

    @staticmethod
    def _mcp_tool_call(item: dict[str, Any], parsed: Parsed) -> None:
        server, tool = str_or_none(item.get("server")), str_or_none(item.get("tool"))
        name = f"mcp__{server or ''}__{tool or ''}"
        tool_input = plain(item.get("arguments"))
        parsed.events.append(("tool_call", {"name": name, "input": tool_input}))
        if item.get("status") == "failed":
            error = item.get("error")
            text = str_or_none(error.get("message")) if isinstance(error, dict) else None
            text = shorten(text or f"{name} failed")
            parsed.events.append(("tool_failed", {"tool": name, "message": text}))

    def _error_item(self, item: dict[str, Any], parsed: Parsed) -> None:
        """A warning; the WebSocket fallback after failed connects is reconnect noise."""
        message = str_or_none(item.get("message")) or "codex reported an error"
        parsed.events.append(("warning", {"message": message}))
        if _RECONNECT_RE.search(message):
            parsed.idle = True
            self._reconnecting = message

    def _announce_test(self, item_id: str | None, script: str, parsed: Parsed) -> bool:
        """Emit ``test_run_started`` once per test command; True if it is one."""
        if not is_test_command(script):
            return False
        if item_id is None or item_id not in self._tests_started:
            parsed.events.append(("test_run_started", {"command": script}))
            if item_id is not None:
                self._tests_started.add(item_id)
        return True

    def _command(self, item_id: str | None, item: dict[str, Any], parsed: Parsed) -> None:
        script = _script(item)
        is_test = self._announce_test(item_id, script, parsed)
        exit_code = exit_status(item.get("exit_code"))
        status = str_or_none(item.get("status")) or ("completed" if exit_code == 0 else "failed")
        parsed.events.append(
            ("command", {"command": script, "exit_code": exit_code, "status": status})
        )
        if status == "declined":
            message = shorten(f"codex declined to run: {script}")
            parsed.events.append(
                ("permission_denied", {"tool": "shell", "path": None, "message": message})
            )
        if exit_code == 0:
            parsed.events += [("file_read", {"path": path}) for path in files_read(script)]
        output = item.get("aggregated_output")
        if is_test and isinstance(output, str):
            parsed.events += [("test_run_completed", data) for data in summaries_in(output)]

    @staticmethod
    def _file_change(item: dict[str, Any], parsed: Parsed) -> None:
        changes = item.get("changes")
        for change in changes if isinstance(changes, list) else ():
            path = str_or_none(change.get("path")) if isinstance(change, dict) else None
            if path:
                kind = "file_deleted" if _change_kind(change) == "delete" else "file_written"
                parsed.events.append((kind, {"path": path}))


def _failure(error: dict[str, Any], event: dict[str, Any]) -> AgentReport:
    """A ``turn.failed``: its structured fields first (a code, a reset), then its words.

    The message may itself be the API's JSON error body (``{"type": "usage_limit_reached",
    "resets_in_seconds": 3600, ...}``).
    """
    message = str_or_none(error.get("message")) or "turn failed"
    fields: dict[str, Any] = {**event, **error}
    body = load_object(message)
    if body is not None:
        inner = body.get("error")
        fields.update(inner if isinstance(inner, dict) else body)
        message = str_or_none(fields.get("message")) or message
    code = next(
        (str_or_none(fields.get(key)) for key in ("code", "type") if str_or_none(fields.get(key))),
        None,
    )
    if code in ("error", "turn.failed"):
        code = None
    reading = read_message(f"{code or ''} {message}")
    resets_at = _reset_of(fields, reading)
    outcome = reading.outcome if reading is not None else Outcome.ERROR
    return AgentReport(outcome, shorten(message), code or status_in(message), resets_at)


def _reset_of(fields: dict[str, Any], reading: Reading | None) -> float | None:
    seconds, at = fields.get("resets_in_seconds"), fields.get("resets_at")
    if isinstance(at, int | float) and not isinstance(at, bool) and at > 0:
        return float(at)
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        return time.time() + float(seconds)
    return reading.resets_at if reading is not None else None
