"""Human-readable and JSON renderings of snapshots, events, chunks and run tables."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

MISSING = "-"
_VALUE_WIDTH = 300
# The columns ``list`` and ``watch`` share; ``watch`` adds its own after them.
RUN_COLUMNS = (
    ("RUN ID", "run_id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("PHASE", "phase"),
    ("TURN", "current_turn"),
    ("AGENT", "agent"),
    ("LAST ACTIVITY", "last_activity"),
)
_ACTIVITY_COLUMN = [key for _, key in RUN_COLUMNS].index("last_activity")
_PHASE_COLUMN = [key for _, key in RUN_COLUMNS].index("phase")


def to_json(value: Any) -> str:
    """One line of JSON; bytes become UTF-8 text with replacement characters."""
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return _decoded(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return value


def local_time(ts: float | None) -> str:
    """Unix seconds as local ``YYYY-MM-DD HH:MM:SS``; ``-`` when absent."""
    if not isinstance(ts, int | float):
        return MISSING
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def clock(ts: float | None) -> str:
    """Unix seconds as local ``HH:MM:SS.mmm``."""
    if not isinstance(ts, int | float):
        return MISSING
    millis = int(ts * 1000) % 1000
    return f"{time.strftime('%H:%M:%S', time.localtime(ts))}.{millis:03d}"


def state_line(snapshot: Mapping[str, Any]) -> str:
    """``<run_id> <state>``, the summary of a control call or a wait."""
    return f"{snapshot.get('run_id', MISSING)} {snapshot.get('state', MISSING)}"


def state_text(snapshot: Mapping[str, Any]) -> str:
    """The state, with the phase while live and the reason once completed."""
    state = str(snapshot.get("state", MISSING))
    if state in ("completed", "failed", "cancelled"):
        reason = (snapshot.get("completion") or {}).get("reason")
        return f"{state} ({reason})" if state == "completed" and reason else state
    return f"{state} ({snapshot.get('phase', MISSING)})"


def snapshot_text(
    snapshot: Mapping[str, Any], extras: Sequence[tuple[str, str | None]] = ()
) -> str:
    """A run snapshot as aligned ``label: value`` lines; fields with no value are left out.

    ``extras`` are lines codyctl found in the run's events (what it watches, the last turn).
    """
    fields = [
        ("run", snapshot.get("run_id")),
        ("name", snapshot.get("name") or None),
        ("state", state_text(snapshot)),
        ("wait", wait_text(snapshot.get("wait")) if snapshot.get("phase") == "waiting" else None),
        ("attention", attention_text(snapshot.get("attention"))),
        ("workspace", snapshot.get("workspace")),
        ("agent", snapshot.get("agent")),
        ("turn", snapshot.get("current_turn")),
        ("pid", snapshot.get("pid")),
        ("session", snapshot.get("session_id")),
        *extras,
        *_stats_fields(snapshot.get("stats") or {}),
        ("completion", _completion(snapshot.get("completion") or {})),
        ("error", error_text(snapshot.get("error"))),
        ("labels", _pairs(snapshot.get("labels") or {})),
        ("created", local_time(snapshot.get("created_at"))),
        ("started", local_time(snapshot.get("started_at"))),
        ("finished", local_time(snapshot.get("finished_at"))),
        ("last activity", local_time(snapshot.get("last_activity"))),
        ("node", snapshot.get("node")),
        ("last seq", snapshot.get("last_seq")),
    ]
    return _aligned(
        [(label, str(value)) for label, value in fields if value not in (None, "", MISSING)]
    )


WAIT_REASONS = {
    "rate_limited": "rate limited",
    "account_limited": "another run of the account was rate limited",
    "unavailable": "service unavailable",
    "disk_full": "disk full",
}


def wait_text(wait: Any) -> str | None:
    """``waiting for claude until 15:42 (rate limited)``: what holds a waiting run back."""
    if not isinstance(wait, Mapping):
        return None
    reason = str(wait.get("reason") or "")
    account = wait.get("account")
    until = wait.get("until")
    text = "waiting" + (f" for {account}" if account else "")
    if isinstance(until, int | float):
        text += f" until {short_time(until)}"
    return f"{text} ({WAIT_REASONS.get(reason, reason)})" if reason else text


def short_time(ts: float) -> str:
    """Local ``HH:MM`` today, ``YYYY-MM-DD HH:MM`` on another day."""
    when = time.localtime(ts)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


def attention_text(attention: Any) -> str | None:
    """``needs_auth: <what to do>``: what the run asked a person for, while it stands."""
    if not isinstance(attention, Mapping) or not attention.get("reason"):
        return None
    message = attention.get("message")
    return f"{attention['reason']}: {message}" if message else str(attention["reason"])


def _stats_fields(stats: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Counters worth a line: none of them while they are all zero."""
    tokens = stats.get("tokens") or {}
    files = stats.get("files") or {}
    tests = stats.get("tests") or {}
    cost = stats.get("cost_usd")
    failed = stats.get("failed_turns", 0)
    return [
        ("turns", f"{stats.get('turns', 0)}" + (f" ({failed} failed)" if failed else "")),
        (
            "tokens",
            f"{tokens.get('total', 0)} total: {tokens.get('input', 0)} in "
            f"({tokens.get('cached', 0)} cached), {tokens.get('output', 0)} out"
            if tokens.get("total")
            else None,
        ),
        ("cost", f"${cost:.4f}" if isinstance(cost, int | float) and cost else None),
        (
            "files",
            f"{files.get('read', 0)} read, {files.get('written', 0)} written, "
            f"{files.get('deleted', 0)} deleted"
            if any(files.values())
            else None,
        ),
        (
            "tests",
            f"{tests.get('runs', 0)} runs: {tests.get('passed', 0)} passed, "
            f"{tests.get('failed', 0)} failed"
            if tests.get("runs")
            else None,
        ),
    ]


def _completion(completion: Mapping[str, Any]) -> str | None:
    # Only a pattern match says more than the state line's reason does.
    line = completion.get("line")
    return f"pattern matched: {line}" if completion.get("detected") and line else None


def error_text(error: Any) -> str | None:
    """``code: message``, without saying the code twice or a placeholder code at all."""
    if not isinstance(error, Mapping):
        return None
    code = str(error.get("code") or "")
    message = str(error.get("message") or "")
    retry = " (retryable)" if error.get("retryable") else ""
    if not code or code == "error" or message.startswith(f"{code}:"):
        return f"{message or code}{retry}"
    return f"{code}: {message}{retry}"


def _pairs(mapping: Mapping[str, Any]) -> str | None:
    return " ".join(f"{key}={value}" for key, value in mapping.items()) or None


def _aligned(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)


def duration(seconds: float | None) -> str:
    """``1h 02m 03s``, ``4m 05s``, ``6.2s``; ``-`` when absent."""
    if not isinstance(seconds, int | float):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def mapping_text(mapping: Mapping[str, Any], indent: int = 0) -> str:
    """A nested map as indented ``key: value`` lines (``daemon.info`` and the like).

    Numbers under keys ending ``_at`` are shown as local times, under ``_s`` as durations.
    """
    lines = []
    pad = "  " * indent
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            lines.append(mapping_text(value, indent + 1))
        elif key.endswith("_at") and isinstance(value, int | float):
            lines.append(f"{pad}{key.removesuffix('_at')}: {local_time(value)}")
        elif key.endswith("_s") and isinstance(value, int | float):
            lines.append(f"{pad}{key.removesuffix('_s')}: {duration(value)}")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(lines)


def event_line(event: Mapping[str, Any], all_runs: bool) -> str:
    """``<seq> <HH:MM:SS.mmm> <turn> <type> <data>``; over all runs ``<run_id> <gid> ...``."""
    turn = event.get("turn")
    cursor = event.get("gid") if all_runs else event.get("seq")
    head = f"{cursor} {clock(event.get('ts'))} {MISSING if turn is None else turn}"
    if all_runs:
        head = f"{event.get('run_id', MISSING)} {head}"
    kind = str(event.get("type", MISSING))
    data = event.get("data")
    body = _event_body(kind, data if isinstance(data, Mapping) else {})
    return f"{head} {kind} {body}".rstrip()


def _event_body(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "subprocess_output":
        prefix = "[stderr] " if data.get("stream") == "stderr" else ""
        dropped = data.get("dropped_bytes")
        suffix = f" [{dropped} bytes dropped]" if dropped else ""
        return f"{prefix}{_one_line(str(data.get('text', '')).rstrip(chr(10)))}{suffix}"
    if kind == "message":
        return f"{data.get('role', MISSING)}: {_one_line(str(data.get('text', '')))}"
    return " ".join(f"{key}={_scalar(value, _VALUE_WIDTH)}" for key, value in data.items())


def _one_line(text: str) -> str:
    """Text with its line breaks escaped, so that one event stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _scalar(value: Any, width: int | None = None) -> str:
    """Plain words as they are, anything else as compact JSON, cut to ``width``."""
    if isinstance(value, str) and value and not any(char.isspace() for char in value):
        text = value
    else:
        text = to_json(value)
    if width is not None and len(text) > width:
        return text[: width - 1] + "…"
    return text


def chunk_json(chunk: Mapping[str, Any]) -> str:
    """A log chunk as JSON, its bytes decoded as UTF-8 with replacement."""
    return to_json({**chunk, "data": _decoded(chunk.get("data", b""))})


def run_row(run: Mapping[str, Any]) -> list[str]:
    """The ``RUN_COLUMNS`` cells of one run summary."""
    cells = [_cell(key, run.get(key)) for _, key in RUN_COLUMNS]
    wait = run.get("wait")
    if run.get("phase") == "waiting" and isinstance(wait, Mapping):
        until = wait.get("until")
        if isinstance(until, int | float):
            cells[_PHASE_COLUMN] = f"waiting until {short_time(until)}"
    if run.get("last_activity") is None:
        # A run whose agent has printed nothing yet: its last change is its activity.
        cells[_ACTIVITY_COLUMN] = local_time(run.get("updated_at"))
    return cells


def run_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Run summaries as a table with a header row."""
    return table([[title for title, _ in RUN_COLUMNS], *(run_row(run) for run in runs)])


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells (the first one the header) in left-aligned columns two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _cell(key: str, value: Any) -> str:
    if key == "last_activity":
        return local_time(value)
    return MISSING if value in (None, "") else str(value)
