"""``codyctl start``: the run spec from its flags, checked in the user's terms before it is sent.

Relative paths follow one rule (docs/codyctl.md, "Paths"): a path that exists relative to the
current directory means that file; any other relative path is left relative to the workspace,
as the daemon reads it. The agent command is looked at before the run starts, so that a missing
script or a missing shebang interpreter is reported here, naming the path tried, instead of as
a failed first turn.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import click

from codyctl.follow import present

# run.start fields (``data.field`` of invalid_params) and the flag each one comes from.
FIELD_FLAGS = {
    "workspace": "WORKSPACE",
    "agent": "--agent",
    "command": "the agent command after --",
    "prompt": "--prompt",
    "prompt_file": "--prompt-file",
    "context_files": "--context-file",
    "max_turns": "--max-turns",
    "completion.stop_file": "--stop-file",
    "completion.pattern": "--complete-pattern",
    "model": "--model",
    "name": "--name",
    "run_id": "--run-id",
    "env": "--env",
    "labels": "--label",
    "watch_logs": "--watch-log",
    "stall_timeout_s": "--stall-timeout",
    "turn_timeout_s": "--turn-timeout",
    # run.update's fields besides those above (codyctl update).
    "sigkill_delay_s": "--sigkill-delay",
    "max_consecutive_failures": "--max-failures",
    "retry_backoff_s": "--retry-backoff",
    "stagnation_turns": "--stagnation-turns",
    "session_max_turns": "--session-max-turns",
    "budget": "--budget-usd, --budget-tokens or --budget-duration",
    "budget.max_cost_usd": "--budget-usd",
    "budget.max_tokens": "--budget-tokens",
    "budget.max_duration_s": "--budget-duration",
    "text": "TEXT",
    # The parameters of the other commands' requests.
    "reason": "--reason",
    "limit": "--limit",
    "states": "--state",
    "after": "--after",
    "types": "--type",
    "turn": "--turn",
}


def flag_for(field: str) -> str | None:
    """The flag behind a dotted run.start field (``context_files.0`` is ``--context-file``)."""
    if field in FIELD_FLAGS:
        return FIELD_FLAGS[field]
    head = field.split(".", 1)[0]
    if head in ("context_files", "watch_logs", "env", "labels", "command", "states", "types"):
        return FIELD_FLAGS[head]
    return None


def flag_message(field: str, message: str) -> str | None:
    """An invalid_params message re-worded with the flag, or None when no flag gave the field."""
    flag = flag_for(field)
    if flag is None:
        return None
    detail = message.removeprefix(f"{field}: ")
    if field == "command" or field.startswith("command."):
        return f"give the agent's command after `--` ({detail})"
    if field.startswith(("context_files.", "watch_logs.")):
        return f"{flag} #{int(field.rsplit('.', 1)[1]) + 1}: {detail}"
    if field.startswith(("env.", "labels.")):
        return f"{flag} {field.split('.', 1)[1]}: {detail}"
    return f"{flag}: {detail}"


def run_spec(workspace: str, argv: tuple[str, ...], options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``run.start`` params for ``codyctl start``; only what was given is sent."""
    root = os.path.abspath(workspace)
    agent = options["agent"] or ("command" if argv else None)
    prompt = prompt_fields(root, options["prompt"], options["prompt_file"])
    if agent in (None, "command") and not argv:
        raise click.UsageError("give the agent's command after `--`, e.g. -- ./agent.sh")
    command = checked_command(root, argv) if argv else []
    completion: dict[str, Any] = present({"pattern": options["complete_pattern"]})
    stop_file = options["stop_file"]
    if options["no_stop_file"] or stop_file == "":
        completion["stop_file"] = None
    elif stop_file is not None:
        completion["stop_file"] = stop_file
    spec = present(
        {
            "workspace": root,
            "agent": agent,
            "command": command,
            **prompt,
            "context_files": [local_path(path) for path in options["context_files"]],
            "max_turns": options["max_turns"],
            "model": options["model"],
            "name": options["name"],
            "run_id": options["run_id"],
            "env": options["env"],
            "labels": options["labels"],
            "watch_logs": [local_path(path) for path in options["watch_logs"]],
            "stall_timeout_s": options["stall_timeout"],
            "turn_timeout_s": options["turn_timeout"],
        }
    )
    if completion:
        spec["completion"] = completion
    return spec


def local_path(path: str) -> str:
    """A path as the user meant it: relative to the current directory when it exists there."""
    if os.path.isabs(path) or not os.path.exists(path):
        return path
    return os.path.abspath(path)


def prompt_fields(workspace: str, prompt: str | None, prompt_file: str | None) -> dict[str, str]:
    if prompt is not None and prompt_file is not None:
        raise click.UsageError("give --prompt or --prompt-file, not both")
    if prompt is not None and prompt != "-":
        return {"prompt": prompt}
    if prompt_file is not None:
        resolved = local_path(prompt_file)
        candidate = os.path.join(workspace, resolved)
        if os.path.isdir(workspace) and not os.path.isfile(candidate):
            tried = os.path.abspath(prompt_file)
            where = tried if os.path.isabs(prompt_file) else f"{tried} or {candidate}"
            raise click.BadParameter(f"no file at {where}", param_hint="--prompt-file")
        return {"prompt_file": resolved}
    # --prompt - and no prompt flag alike: the prompt is piped on stdin.
    if sys.stdin is None or sys.stdin.isatty():
        raise click.UsageError("give --prompt or --prompt-file, or pipe the prompt on stdin")
    text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError(
            "the prompt read from stdin is empty; give --prompt '' to start with an empty "
            "prompt on purpose"
        )
    return {"prompt": text}


def checked_command(workspace: str, argv: tuple[str, ...]) -> list[str]:
    """The agent argv with a relative program made absolute, refused when it cannot run."""
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program)
        if found is not None:
            check_interpreter(found)
        # Not on this PATH: codyd's PATH may differ, so the daemon has the last word.
        return list(argv)
    here = os.path.abspath(program)
    in_workspace = os.path.normpath(os.path.join(workspace, program))
    if os.path.exists(here):
        path = here
    elif not os.path.isabs(program) and os.path.exists(in_workspace):
        path = in_workspace
    else:
        where = here if os.path.isabs(program) else f"{here} or {in_workspace}"
        raise click.UsageError(f"agent command not found: no file at {where}")
    if not os.path.isfile(path):
        raise click.UsageError(f"agent command {path} is not a file")
    if not os.access(path, os.X_OK):
        raise click.UsageError(
            f"agent command {path} is not executable (chmod +x it, or name its interpreter: "
            f"-- python3 {program})"
        )
    check_interpreter(path)
    return [path, *argv[1:]]


def check_interpreter(path: str) -> None:
    """Refuse a script whose ``#!`` line names a program that does not exist here."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return
    if not first.startswith(b"#!"):
        return
    words = first[2:].decode(errors="replace").split()
    if not words:
        return
    interpreter = words[0]
    if os.path.basename(interpreter) == "env" and len(words) > 1:
        named = next((word for word in words[1:] if not word.startswith("-")), None)
        if named is not None and shutil.which(named) is None:
            raise click.UsageError(
                f"interpreter not found: {named} (named by the #! line of {path}, "
                "looked up on PATH)"
            )
        return
    if not os.access(interpreter, os.X_OK):
        raise click.UsageError(
            f"interpreter not found: {interpreter} (named by the #! line of {path})"
        )
