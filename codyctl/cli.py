"""The ``codyctl`` command line: one small function per command over shared helpers.

Exit status: 0 success, 1 the daemon answered with an error, 2 usage error,
3 the daemon cannot be reached, 4 a waited-for run ended failed or cancelled,
5 ``wait --timeout`` expired, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from codyctl import render
from codyctl.client import DEFAULT_TIMEOUT_S, ConnectError, DeadlineExceeded
from codyctl.follow import (
    EventCursor,
    Item,
    ItemHandler,
    LogCursor,
    Settings,
    present,
    run_stream,
)
from codyd.errors import CodydError
from codyd.protocol import AGENTS, MAX_LIST_LIMIT
from codyd.runs.state import TERMINAL, TERMINAL_EVENTS, State

EXIT_DAEMON_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_RUN_UNSUCCESSFUL = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

STATES = tuple(state.value for state in State)
RECENT_EVENTS = 20


class CodyctlGroup(click.Group):
    """Turns daemon errors and unreachable daemons into codyctl's exit statuses."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CodydError as exc:
            fail(EXIT_DAEMON_ERROR, f"{exc.code}: {exc.message}")
        except ConnectError as exc:
            fail(EXIT_UNREACHABLE, str(exc))
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def fail(status: int, message: str) -> NoReturn:
    click.echo(f"codyctl: {message}", err=True)
    raise click.exceptions.Exit(status)


def write_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def show(settings: Settings, value: Any, human: Callable[[Any], str]) -> None:
    """Print one result: as a JSON object with ``--json``, else as ``human`` renders it."""
    write_line(render.to_json(value) if settings.json else human(value))


def key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback turning repeated ``K=V`` options into a map."""
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {item!r}", ctx=ctx, param=param)
        pairs[key] = value
    return pairs


def event_printer(settings: Settings, all_runs: bool) -> ItemHandler:
    if settings.json:
        return lambda event: write_line(render.to_json(event))
    return lambda event: write_line(render.event_line(event, all_runs))


def chunk_writer(settings: Settings) -> ItemHandler:
    if settings.json:
        return lambda chunk: write_line(render.chunk_json(chunk))

    def write_raw(chunk: Item) -> None:
        sys.stdout.buffer.write(chunk.get("data", b""))
        sys.stdout.buffer.flush()

    return write_raw


def recent_start(settings: Settings, run_id: str | None) -> int | None:
    """The cursor that makes a tail begin with the last ``RECENT_EVENTS`` events."""
    with settings.open() as client:
        if run_id is not None:
            last_seq = client.call("run.status", {"run_id": run_id}).get("last_seq")
        else:
            # A non-following stream with no cursor ends at once at the newest gid.
            for _event in client.stream("run.events", {"follow": False}):
                pass
            last_seq = (client.last_stream_result or {}).get("last_seq")
    return max(0, last_seq - RECENT_EVENTS) if isinstance(last_seq, int) else None


def tail_events(
    settings: Settings, run_id: str | None, after: int | None, types: list[str], follow: bool
) -> None:
    if after is None:
        after = recent_start(settings, run_id)
    cursor = EventCursor(run_id, types, after)
    run_stream(settings, cursor, event_printer(settings, run_id is None), follow=follow)


def wait_for_end(settings: Settings, run_id: str, deadline: float | None) -> dict[str, Any]:
    """Block until the run is terminal; returns its final snapshot."""
    with settings.open(deadline=deadline) as client:
        snapshot: dict[str, Any] = client.call("run.status", {"run_id": run_id})
    if snapshot.get("state") in TERMINAL:
        return snapshot
    cursor = EventCursor(run_id, list(TERMINAL_EVENTS), snapshot.get("last_seq", 0))
    run_stream(settings, cursor, lambda _event: None, follow=True, deadline=deadline)
    with settings.open(deadline=deadline) as client:
        final: dict[str, Any] = client.call("run.status", {"run_id": run_id})
        return final


def report_end(settings: Settings, run_id: str, deadline: float | None = None) -> None:
    """Wait for the run, print its final state, and exit 4 unless it completed."""
    try:
        snapshot = wait_for_end(settings, run_id, deadline)
    except DeadlineExceeded:
        fail(EXIT_WAIT_TIMEOUT, f"timed out waiting for run {run_id} to end")
    show(settings, snapshot, render.state_line)
    if snapshot.get("state") != "completed":
        raise click.exceptions.Exit(EXIT_RUN_UNSUCCESSFUL)


def control(settings: Settings, method: str, params: dict[str, Any]) -> None:
    show(settings, settings.call(method, present(params)), render.state_line)


# --- commands ----------------------------------------------------------------------------------

positive_seconds = click.FloatRange(min=0, min_open=True)


@click.group(cls=CodyctlGroup)
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Daemon socket [default: $CODYD_SOCKET, else codyd's default path].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (streams: one per line).")
@click.option(
    "--timeout",
    type=positive_seconds,
    metavar="S",
    help=f"Seconds to wait for an answer [default: {DEFAULT_TIMEOUT_S:g}]; "
    "when following, how long to keep reconnecting [default: forever].",
)
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, as_json: bool, timeout: float | None) -> None:
    """Control codyd, the supervisor of autonomous coding agent runs."""
    ctx.obj = Settings(socket_path, as_json, timeout)


@cli.command()
@click.argument("workspace")
@click.argument("argv", nargs=-1, metavar="[-- ARGV...]")
@click.option("--agent", type=click.Choice(AGENTS), help="Agent runtime [default: command].")
@click.option("--prompt", metavar="T", help="Prompt text (else --prompt-file, else stdin).")
@click.option("--prompt-file", metavar="F", help="Workspace file re-read every turn.")
@click.option(
    "--context-file", "context_files", multiple=True, metavar="F", help="Appended every turn."
)
@click.option("--max-turns", type=int, metavar="N", help="Turns before the run completes.")
@click.option("--stop-file", metavar="F", help="Workspace file whose appearance completes the run.")
@click.option("--complete-pattern", metavar="RE", help="Output regex that completes the run.")
@click.option("--model", metavar="M", help="Model passed to the agent.")
@click.option("--name", metavar="N", help="Human label.")
@click.option("--run-id", metavar="ID", help="Client-chosen run id.")
@click.option("--env", multiple=True, callback=key_values, metavar="K=V", help="Agent env.")
@click.option("--label", "labels", multiple=True, callback=key_values, metavar="K=V")
@click.option(
    "--watch-log", "watch_logs", multiple=True, metavar="F", help="Log file watched for growth."
)
@click.option("--stall-timeout", type=positive_seconds, metavar="S", help="Max silent turn time.")
@click.option("--turn-timeout", type=positive_seconds, metavar="S", help="Max turn time.")
@click.option("--follow", is_flag=True, help="Then tail the run's events.")
@click.option("--wait", "wait_end", is_flag=True, help="Then wait for the run to end.")
@click.pass_obj
def start(
    settings: Settings,
    /,
    workspace: str,
    argv: tuple[str, ...],
    follow: bool,
    wait_end: bool,
    **options: Any,
) -> None:
    """Start a run in WORKSPACE and print its id.

    ARGV after -- is the command to run (implying --agent command).
    """
    if follow and wait_end:
        raise click.UsageError("give --follow or --wait, not both")
    snapshot = settings.call("run.start", run_spec(workspace, argv, options))
    show(settings, snapshot, lambda run: str(run["run_id"]))
    if follow:
        tail_events(settings, snapshot["run_id"], 0, [], follow=True)
    elif wait_end:
        report_end(settings, snapshot["run_id"])


def run_spec(workspace: str, argv: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    """The ``run.start`` params for ``codyctl start``; only what was given is sent."""
    completion = present(
        {"stop_file": options["stop_file"], "pattern": options["complete_pattern"]}
    )
    return present(
        {
            "workspace": os.path.abspath(workspace),
            "agent": options["agent"] or ("command" if argv else None),
            "command": list(argv),
            **prompt_fields(options["prompt"], options["prompt_file"]),
            "context_files": list(options["context_files"]),
            "max_turns": options["max_turns"],
            "completion": completion,
            "model": options["model"],
            "name": options["name"],
            "run_id": options["run_id"],
            "env": options["env"],
            "labels": options["labels"],
            "watch_logs": list(options["watch_logs"]),
            "stall_timeout_s": options["stall_timeout"],
            "turn_timeout_s": options["turn_timeout"],
        }
    )


def prompt_fields(prompt: str | None, prompt_file: str | None) -> dict[str, str]:
    if prompt is not None and prompt_file is not None:
        raise click.UsageError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        return {"prompt": prompt}
    if prompt_file is not None:
        return {"prompt_file": prompt_file}
    if sys.stdin is None or sys.stdin.isatty():
        raise click.UsageError("give --prompt or --prompt-file, or pipe the prompt on stdin")
    return {"prompt": sys.stdin.read()}


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.pass_obj
def status(settings: Settings, run_id: str) -> None:
    """Show a run's snapshot."""
    show(settings, settings.call("run.status", {"run_id": run_id}), render.snapshot_text)


@cli.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES))
@click.option("--label", "labels", multiple=True, callback=key_values, metavar="K=V")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_obj
def list_runs(
    settings: Settings, states: tuple[str, ...], labels: dict[str, str], limit: int
) -> None:
    """List runs, newest first."""
    filters = present({"states": list(states), "labels": labels})
    runs: list[dict[str, Any]] = []
    cursor = None
    with settings.open() as client:
        while len(runs) < limit:
            page_size = min(limit - len(runs), MAX_LIST_LIMIT)
            page = client.call(
                "run.list", {**filters, **present({"cursor": cursor}), "limit": page_size}
            )
            runs.extend(page.get("runs", []))
            cursor = page.get("cursor")
            if not cursor:
                break
    show(
        settings,
        {"runs": runs[:limit], "cursor": cursor},
        lambda page: render.run_table(page["runs"]),
    )


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--now", is_flag=True, help="Stop the turn in progress instead of letting it finish.")
@click.option("--reason", metavar="R")
@click.pass_obj
def pause(settings: Settings, run_id: str, now: bool, reason: str | None) -> None:
    """Pause a run."""
    control(settings, "run.pause", {"run_id": run_id, "now": now, "reason": reason})


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.pass_obj
def resume(settings: Settings, run_id: str) -> None:
    """Resume a paused run."""
    control(settings, "run.resume", {"run_id": run_id})


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--reason", metavar="R")
@click.pass_obj
def cancel(settings: Settings, run_id: str, reason: str | None) -> None:
    """Cancel a run."""
    control(settings, "run.cancel", {"run_id": run_id, "reason": reason})


@cli.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--after", type=click.IntRange(min=0), metavar="SEQ", help="Start after this seq.")
@click.option("--type", "types", multiple=True, metavar="T", help="Only events of this type.")
@click.pass_obj
def tail(
    settings: Settings, run_id: str | None, follow: bool, after: int | None, types: tuple[str, ...]
) -> None:
    """Print the events of RUN, or of all runs (then SEQ is a gid)."""
    tail_events(settings, run_id, after, list(types), follow)


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--turn", type=int, metavar="N", help="[default: the newest turn]")
@click.option("--stderr", "from_stderr", is_flag=True, help="Print stderr instead of stdout.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the turn ends.")
@click.pass_obj
def logs(
    settings: Settings, run_id: str, turn: int | None, from_stderr: bool, follow: bool
) -> None:
    """Print the raw output of a turn."""
    cursor = LogCursor(run_id, "stderr" if from_stderr else "stdout", turn)
    run_stream(settings, cursor, chunk_writer(settings), follow=follow)


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--timeout", "wait_timeout", type=positive_seconds, metavar="S", help="Exit 5 after S s."
)
@click.pass_obj
def wait(settings: Settings, run_id: str, wait_timeout: float | None) -> None:
    """Block until RUN ends; exit 0 if it completed, 4 if it failed or was cancelled."""
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    report_end(settings, run_id, deadline)


@cli.command()
@click.pass_obj
def info(settings: Settings) -> None:
    """Show the daemon's state."""
    show(settings, settings.call("daemon.info"), render.mapping_text)


@cli.command()
@click.pass_obj
def ping(settings: Settings) -> None:
    """Measure a round trip to the daemon."""
    with settings.open() as client:
        sent_at = time.perf_counter()
        result = client.call("daemon.ping")
        round_trip_ms = (time.perf_counter() - sent_at) * 1000
    show(
        settings,
        {**result, "round_trip_ms": round(round_trip_ms, 3)},
        lambda answer: f"pong in {answer['round_trip_ms']:.2f} ms",
    )


@cli.command()
@click.pass_obj
def shutdown(settings: Settings) -> None:
    """Ask the daemon to shut down gracefully."""
    show(settings, settings.call("daemon.shutdown"), lambda _result: "codyd is shutting down")


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--once", is_flag=True, help="Print one table and exit.")
@click.pass_obj
def watch(settings: Settings, interval: float, limit: int, once: bool) -> None:
    """A live, refreshing table of runs; Ctrl-C to leave."""
    from codyctl import watch as view

    try:
        with settings.open() as client:
            while True:
                runs = view.snapshot(client, limit)
                now = time.time()
                if settings.json:
                    write_line(view.frame_json(runs, now))
                else:
                    clear = "" if once else view.HOME_AND_CLEAR
                    sys.stdout.write(clear + view.screen(runs, now, client.socket_path))
                    sys.stdout.flush()
                if once:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        if not settings.json:
            sys.stdout.write("\n")
        sys.exit(0)


def main() -> None:
    cli(prog_name="codyctl")
